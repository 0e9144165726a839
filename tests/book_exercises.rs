//! Solutions to the exercises at the end of the book's chapters
//! (`docs/src/*.md`), one test per exercise, named `<chapter>_<n>_<what>`.
//! Each checks the answer the chapter asks for, so a change to the code
//! that changes an answer fails here and the chapter gets updated.

use kiln::autograd::Var;
use kiln::nn::{join, Forward, KvCache, Module};
use kiln::tensor::{DType, Tensor, TensorError};

// ---- Introduction (docs/src/introduction.md) ----

#[test]
fn introduction_1_square_then_sum() -> Result<(), Box<dyn std::error::Error>> {
    let w = Var::parameter(Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3])?);
    w.mul(&w)?.sum_all()?.backward()?;
    // d/dw Σ w² = 2w: the mul rule adds g·w once for each of its two inputs.
    assert_eq!(w.grad().unwrap().to_vec::<f32>()?, vec![2.0, 4.0, 6.0]);
    Ok(())
}

#[test]
fn introduction_2_error_names_op_and_shapes() {
    let a = Tensor::ones(&[2, 3], DType::F32);
    let b = Tensor::ones(&[4, 5], DType::F32);
    let msg = a.matmul(&b).unwrap_err().to_string();
    assert_eq!(msg, "matmul: lhs [2, 3] · rhs [4, 5]: inner dims 3 ≠ 4");
}

#[test]
fn introduction_3_negative_dims() -> Result<(), TensorError> {
    let x = Tensor::arange(0.0, 24.0, 1.0, DType::F32)?.reshape(&[2, 3, 4])?;
    assert_eq!(x.sum(&[-1], false)?.shape(), &[2, 3]);
    assert_eq!(x.sum(&[0, -1], true)?.shape(), &[1, 3, 1]);
    // softmax(-2) normalises along the dim of size 3: summing over it gives 1s.
    let s = x.softmax(-2)?.sum(&[1], false)?;
    assert_eq!(s.shape(), &[2, 4]);
    assert!(s.to_vec::<f32>()?.iter().all(|v| (v - 1.0).abs() < 1e-6));
    Ok(())
}

// ---- Rust for PyTorch readers (docs/src/rust_for_pytorch.md) ----

/// Exercise 1: `?` twice, once on each fallible call.
fn sigmoid_sum(x: &Tensor) -> Result<f32, TensorError> {
    let s = x.sigmoid()?.sum_all()?;
    s.item::<f32>()
}

#[test]
fn rust_for_pytorch_1_question_mark() -> Result<(), TensorError> {
    assert_eq!(sigmoid_sum(&Tensor::zeros(&[2], DType::F32))?, 1.0);
    // The error of an integer tensor comes out of the first `?`.
    let ids = Tensor::from_vec(vec![1i64, 2], &[2])?;
    assert!(sigmoid_sum(&ids).is_err());
    Ok(())
}

#[test]
fn rust_for_pytorch_2_wrong_element_type() {
    let x = Tensor::ones(&[2], DType::F32);
    let msg = x.to_vec::<f64>().unwrap_err().to_string();
    // The op, the tensor's dtype and the type asked for.
    assert!(msg.starts_with("to_vec"), "{msg}");
    assert!(msg.contains("f32") && msg.contains("f64"), "{msg}");
}

/// Exercise 3: the chapter's `Affine` with a scalar `scale`.
struct ScaledAffine {
    w: Var,
    b: Var,
    scale: Var,
}

impl Module for ScaledAffine {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        f(join(prefix, "w"), &self.w);
        f(join(prefix, "b"), &self.b);
        f(join(prefix, "scale"), &self.scale);
    }
}

impl Forward for ScaledAffine {
    fn forward(&self, x: &Var) -> kiln::nn::Result<Var> {
        Ok(x.matmul(&self.w)?.add(&self.b)?.mul(&self.scale)?)
    }
}

#[test]
fn rust_for_pytorch_3_scaled_affine() -> Result<(), Box<dyn std::error::Error>> {
    let m = ScaledAffine {
        w: Var::parameter(Tensor::ones(&[3, 2], DType::F32)),
        b: Var::parameter(Tensor::zeros(&[2], DType::F32)),
        scale: Var::parameter(Tensor::full(&[], 2.0, DType::F32)),
    };
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["w", "b", "scale"]);
    assert_eq!(m.num_parameters(), 6 + 2 + 1);
    let y = m.forward(&Var::constant(Tensor::ones(&[4, 3], DType::F32)))?;
    assert_eq!(y.value().to_vec::<f32>()?, vec![6.0; 8]);
    Ok(())
}

// ---- Attention explained (docs/src/attention.md) ----

#[test]
fn attention_1_other_query() -> Result<(), TensorError> {
    let q = Tensor::from_vec(vec![0.0f32, 1.0], &[1, 2])?;
    let k = Tensor::from_vec(vec![2.0f32, 0.0, 0.0, 2.0, -2.0, 0.0], &[3, 2])?;
    let v = Tensor::from_vec(vec![10.0f32, 0.0, 0.0, 10.0, 5.0, 5.0], &[3, 2])?;
    let w = q.matmul(&k.t()?)?.div_scalar(2f64.sqrt())?.softmax(-1)?;
    let out = w.matmul(&v)?.to_vec::<f32>()?;
    // Scores [0, √2, 0]: the second key (and value [0, 10]) dominates.
    let w = w.to_vec::<f32>()?;
    assert!(w[1] > w[0] && w[0] == w[2]);
    let e = std::f32::consts::SQRT_2.exp();
    let (w0, w1) = (1.0 / (2.0 + e), e / (2.0 + e));
    assert!((out[0] - (10.0 * w0 + 5.0 * w0)).abs() < 1e-5);
    assert!((out[1] - (10.0 * w1 + 5.0 * w0)).abs() < 1e-5);
    let r4: Vec<String> = out.iter().map(|x| format!("{x:.4}")).collect();
    assert_eq!(r4, ["2.4537", "7.5463"]);
    Ok(())
}

#[test]
fn attention_2_mask_with_two_cached() -> Result<(), TensorError> {
    let (p, t) = (2, 3);
    // Row i sees keys 0..=p+i.
    let seen = Tensor::tril_mask(t, p + t, p as i64).to_vec::<bool>()?;
    #[rustfmt::skip]
    assert_eq!(seen, [
        true, true, true, false, false,
        true, true, true, true,  false,
        true, true, true, true,  true,
    ]);
    let w = Tensor::zeros(&[t, p + t], DType::F64).causal_softmax(1.0, p)?;
    let third = 1.0 / 3.0;
    #[rustfmt::skip]
    let want = [
        third, third, third, 0.0, 0.0,
        0.25, 0.25, 0.25, 0.25, 0.0,
        0.2, 0.2, 0.2, 0.2, 0.2,
    ];
    for (got, want) in w.to_vec::<f64>()?.iter().zip(want) {
        assert!((got - want).abs() < 1e-15);
    }
    Ok(())
}

#[test]
fn attention_3_cache_growth() -> Result<(), Box<dyn std::error::Error>> {
    let mut cache = KvCache::default();
    let mut allocations = 0;
    let mut append = |cache: &mut KvCache, t: usize| -> Result<(), Box<dyn std::error::Error>> {
        let before = cache.capacity();
        let x = Tensor::ones(&[1, 1, t, 2], DType::F32);
        cache.append(&x, &x)?;
        if cache.capacity() != before {
            allocations += 1;
        }
        Ok(())
    };
    append(&mut cache, 10)?;
    for _ in 0..200 {
        append(&mut cache, 1)?;
    }
    // 64 at the prompt, then 128 at position 65 and 256 at position 129.
    assert_eq!((cache.len(), cache.capacity(), allocations), (210, 256, 3));
    Ok(())
}

// ---- Tensors (docs/src/tensors.md) ----

#[test]
fn tensors_1_permute_then_reshape() -> Result<(), TensorError> {
    let x = Tensor::arange(0.0, 24.0, 1.0, DType::F32)?.reshape(&[2, 3, 4])?;
    let y = x.permute(&[2, 0, 1])?;
    assert_eq!((y.shape(), y.strides()), (&[4, 2, 3][..], &[1, 12, 4][..]));
    // Runs: [4 @ 1] and [2·3 @ 4] (12 = 3·4), so [4, 6] splits no run.
    let view = y.layout().reshape_view(&[4, 6])?.expect("a view");
    assert_eq!(view.strides(), &[1, 4]);
    let r = y.reshape(&[4, 6])?;
    assert!(r.shares_storage(&x));
    Ok(())
}

#[test]
fn tensors_2_broadcast_strides() -> Result<(), TensorError> {
    let small = Tensor::zeros(&[4, 1], DType::F32);
    let big = Tensor::zeros(&[5, 1, 3], DType::F32);
    assert_eq!(small.add(&big)?.shape(), &[5, 4, 3]);
    let l = small.layout().broadcast_to(&[5, 4, 3])?;
    assert_eq!(l.strides(), &[0, 1, 0]);
    Ok(())
}

#[test]
fn tensors_3_write_through_a_view() -> Result<(), TensorError> {
    let x = Tensor::arange(0.0, 12.0, 1.0, DType::F32)?.reshape(&[3, 4])?;
    let mut c = x.narrow(0, 1, 2)?;
    assert_eq!(c.layout().offset(), 4);
    c.data_mut::<f32>()?[0] = -1.0;
    // A partial view is copied into its own contiguous buffer first.
    assert!(c.is_contiguous() && !c.shares_storage(&x));
    assert_eq!(c.layout().offset(), 0);
    assert_eq!(c.to_vec::<f32>()?[..2], [-1.0, 5.0]);
    assert_eq!(x.to_vec::<f32>()?[4], 4.0);
    Ok(())
}

// ---- Matmul (docs/src/matmul.md) ----

#[test]
fn matmul_1_qkv_flops() {
    let flops = 2 * 512 * 768 * 2304u64;
    assert_eq!(flops, 1_811_939_328);
    let ms = flops as f64 / 148.9e9 * 1e3;
    assert_eq!(format!("{ms:.2}"), "12.17");
}

#[test]
fn matmul_2_gemv_intensity() {
    let (k, n) = (768u64, 50257u64);
    let flops = 2 * k * n;
    let bytes = 4 * k * n; // every f32 of B once; x and y are negligible
    assert_eq!((flops, bytes), (77_194_752, 154_389_504));
    // Half a FLOP per byte: each weight is used for one multiply-add only,
    // so the time is the time to stream B, whatever the tiling.
    assert_eq!(flops as f64 / bytes as f64, 0.5);
}

#[test]
fn matmul_3_backward_shapes() -> Result<(), Box<dyn std::error::Error>> {
    let a = Var::parameter(Tensor::ones(&[2, 3], DType::F32));
    let b = Var::parameter(Tensor::ones(&[3, 4], DType::F32));
    a.matmul(&b)?.sum_all()?.backward()?;
    // dA = G·Bᵀ reads B transposed; dB = Aᵀ·G reads A transposed.
    assert_eq!(a.grad().unwrap().shape(), &[2, 3]);
    assert_eq!(b.grad().unwrap().shape(), &[3, 4]);
    assert_eq!(a.grad().unwrap().to_vec::<f32>()?, vec![4.0; 6]); // row sums of Bᵀ
    assert_eq!(b.grad().unwrap().to_vec::<f32>()?, vec![2.0; 12]); // column sums of Aᵀ
    let gbt = Tensor::ones(&[2, 4], DType::F32).matmul(&b.value().t()?)?;
    assert_eq!(gbt.to_vec::<f32>()?, a.grad().unwrap().to_vec::<f32>()?);
    Ok(())
}

// ---- Autodiff (docs/src/autodiff.md) ----

fn silu(x: &Var) -> kiln::autograd::Result<Var> {
    let xv = x.value();
    let out = xv.map(|v: f64| v / (1.0 + (-v).exp()))?;
    kiln::autograd::custom_op("silu", &[x], out, move |g| {
        let dx = xv.zip_map(g, |x: f64, g: f64| {
            let s = 1.0 / (1.0 + (-x).exp());
            g * s * (1.0 + x * (1.0 - s))
        })?;
        Ok(vec![Some(dx)])
    })
}

#[test]
fn autodiff_1_silu_custom_op() -> Result<(), Box<dyn std::error::Error>> {
    use kiln::autograd::{clear_tape, gradcheck, tape_len, GradcheckOptions};
    use kiln::tensor::Rng;
    let x = Tensor::randn(&[3, 5], 0.0, 2.0, DType::F64, &mut Rng::new(11))?;
    let report = gradcheck(
        |v| silu(&v[0]),
        std::slice::from_ref(&x),
        &GradcheckOptions::default(),
    )?;
    assert!(report.passed(), "{report}");

    clear_tape();
    let p = Var::parameter(x);
    let custom = silu(&p)?;
    assert_eq!(tape_len(), 1);
    let composite = p.mul(&p.sigmoid()?)?;
    assert_eq!(tape_len(), 1 + 2); // sigmoid, mul
    let diff = custom
        .value()
        .sub(&composite.value())?
        .map(|v: f64| v.abs())?;
    assert!(diff.max(&[0, 1], false)?.item::<f64>()? < 1e-12);
    clear_tape();
    Ok(())
}

fn rms_norm(x: &Var, w: &Var, eps: f64) -> kiln::autograd::Result<Var> {
    let rms = x.powf(2.0)?.mean(&[-1], true)?.add_scalar(eps)?.sqrt()?;
    x.div(&rms)?.mul(w)
}

#[test]
fn autodiff_2_rms_norm() -> Result<(), Box<dyn std::error::Error>> {
    use kiln::autograd::{gradcheck, GradcheckOptions};
    use kiln::tensor::Rng;
    let mut rng = Rng::new(5);
    let x = Tensor::randn(&[4, 6], 0.0, 1.0, DType::F64, &mut rng)?;
    let w = Tensor::randn(&[6], 1.0, 0.1, DType::F64, &mut rng)?;
    let report = gradcheck(
        |v| rms_norm(&v[0], &v[1], 1e-5),
        &[x, w],
        &GradcheckOptions::default(),
    )?;
    assert!(report.passed(), "{report}");
    assert_eq!(report.checked, 24 + 6);

    let row = Var::constant(Tensor::from_vec(vec![3.0f64, 4.0], &[1, 2])?);
    let ones = Var::constant(Tensor::ones(&[2], DType::F64));
    let y = rms_norm(&row, &ones, 0.0)?.value().to_vec::<f64>()?;
    // rms = √((9 + 16) / 2) = √12.5
    let r: Vec<String> = y.iter().map(|v| format!("{v:.4}")).collect();
    assert_eq!(r, ["0.8485", "1.1314"]);
    Ok(())
}

#[test]
fn autodiff_3_broadcast_gradient() -> Result<(), Box<dyn std::error::Error>> {
    let w = Var::parameter(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])?);
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    w.mul(&Var::constant(x.clone()))?.sum_all()?.backward()?;
    // The mul rule returns g·x, shaped [2, 3]; unbroadcast sums it to [3].
    assert_eq!(w.grad().unwrap().to_vec::<f64>()?, vec![5.0, 7.0, 9.0]);
    let by_hand = kiln::autograd::unbroadcast(x, &[3])?;
    assert_eq!(by_hand.to_vec::<f64>()?, vec![5.0, 7.0, 9.0]);
    Ok(())
}

// ---- Modules and optimizers (docs/src/modules.md) ----

#[test]
fn modules_1_first_adamw_step() -> Result<(), Box<dyn std::error::Error>> {
    use kiln::nn::optim::{AdamConfig, AdamW, Optimizer, ParamGroup};
    let p = Var::parameter(Tensor::from_vec(vec![1.0f64], &[1])?);
    let mut opt = AdamW::new(
        vec![ParamGroup::new(vec![("p".into(), p.clone())], 0.1, 0.01)],
        AdamConfig::default(),
    );
    p.set_grad(Some(Tensor::from_vec(vec![0.5f64], &[1])?))?;
    opt.step()?;
    // Decay: 1 − 0.1·0.01 = 0.999. Then m̂ = g, v̂ = g², so the step is
    // lr·g/(|g| + ε) ≈ lr whatever the size of g: 0.999 − 0.1 = 0.899.
    let got = p.value().item::<f64>()?;
    let m = 0.1 * 0.5; // (1 − β₁)·g
    let v: f64 = 0.001 * 0.25; // (1 − β₂)·g²
    let want = 0.999 - (0.1 / 0.1) * m / (v.sqrt() / 0.001f64.sqrt() + 1e-8);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    assert!((got - 0.899).abs() < 1e-7);
    Ok(())
}

fn tiny_a() -> kiln::models::gpt2::Gpt2 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/gpt2/tiny-a");
    kiln::models::gpt2::load_model_dir(dir).expect("the committed fixture loads")
}

/// Block 0's parameters, names relative to the block.
fn block0(model: &kiln::models::gpt2::Gpt2) -> Vec<(String, Var)> {
    model
        .named_parameters()
        .into_iter()
        .filter_map(|(n, p)| n.strip_prefix("h.0.").map(|s| (s.to_string(), p)))
        .collect()
}

#[test]
fn modules_2_block_names() {
    let model = tiny_a();
    let params = block0(&model);
    let mut names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    #[rustfmt::skip]
    assert_eq!(names, [
        "attn.c_attn.bias", "attn.c_attn.weight", "attn.c_proj.bias", "attn.c_proj.weight",
        "ln_1.bias", "ln_1.weight", "ln_2.bias", "ln_2.weight",
        "mlp.c_fc.bias", "mlp.c_fc.weight", "mlp.c_proj.bias", "mlp.c_proj.weight",
    ]);
    let c = 32;
    let total: usize = params.iter().map(|(_, p)| p.value().numel()).sum();
    assert_eq!(total, 12 * c * c + 13 * c);
}

// ---- GPT-2 (docs/src/gpt2.md) ----

#[test]
fn gpt2_1_block_flops() {
    // From the fixture's weights: every rank-2 parameter of a block is a
    // product's weight.
    let model = tiny_a();
    let c = 32;
    let weight_flops: usize = block0(&model)
        .iter()
        .filter(|(_, p)| p.value().rank() == 2)
        .map(|(_, p)| 2 * p.value().numel())
        .sum();
    assert_eq!(weight_flops, 24 * c * c);
    // GPT-2 small at T = 1024.
    let (c, t) = (768, 1024);
    assert_eq!(24 * c * c, 14_155_776);
    assert_eq!(24 * c * c + 4 * t * c, 17_301_504);
}

#[test]
fn gpt2_2_tied_share() {
    let small = 50257.0 * 768.0 / 124_439_808.0;
    assert_eq!(format!("{small:.3}"), "0.310");
    let model = tiny_a();
    let wte = model.wte.weight.value().numel();
    assert_eq!((wte, model.num_parameters()), (32_000, 59_520));
    assert_eq!(format!("{:.3}", wte as f64 / 59_520.0), "0.538");
}

#[test]
fn gpt2_3_training_is_three_forwards() {
    // C = A·B, [m, k]·[k, n]: forward 2mkn; backward G·Bᵀ and Aᵀ·G, 2mkn each.
    let (m, k, n) = (512u64, 768, 2304);
    let forward = 2 * m * k * n;
    let backward = 2 * m * n * k + 2 * k * m * n;
    assert_eq!(forward + backward, 3 * forward);
}

// ---- Backward through GPT-2 (docs/src/backward_gpt2.md) ----

/// dx of a mean cross-entropy over one row, target 1.
fn ce_grad(row: Vec<f64>) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let x = Var::parameter(Tensor::from_vec(row, &[1, 3])?);
    x.cross_entropy(&Tensor::from_vec(vec![1i64], &[1])?, -100)?
        .backward()?;
    Ok(x.grad().expect("a gradient").to_vec::<f64>()?)
}

#[test]
fn backward_gpt2_1_cross_entropy_by_hand() -> Result<(), Box<dyn std::error::Error>> {
    // softmax([0, 0, 0]) = 1/3 each; minus the one-hot at 1.
    let dx = ce_grad(vec![0.0, 0.0, 0.0])?;
    let want = [1.0 / 3.0, -2.0 / 3.0, 1.0 / 3.0];
    for (d, w) in dx.iter().zip(want) {
        assert!((d - w).abs() < 1e-15, "{dx:?}");
    }
    assert_eq!(
        format!("{:.3} {:.3} {:.3}", dx[0], dx[1], dx[2]),
        "0.333 -0.667 0.333"
    );
    // exp([0, 0, ln 2]) = [1, 1, 2]: softmax [1/4, 1/4, 1/2].
    let dx = ce_grad(vec![0.0, 0.0, 2f64.ln()])?;
    let want = [0.25, -0.75, 0.5];
    for (d, w) in dx.iter().zip(want) {
        assert!((d - w).abs() < 1e-15, "{dx:?}");
    }
    Ok(())
}

#[test]
fn backward_gpt2_2_layer_norm_projections() -> Result<(), Box<dyn std::error::Error>> {
    // dx = rstd·(ĝ − mean ĝ − x̂·mean(ĝx̂)): Σ x̂ = 0 and Σ x̂² = C (up to ε),
    // so Σ dx = rstd·(Σĝ − Σĝ − 0) = 0 and Σ dx·x̂ = rstd·(Σĝx̂ − 0 − C·mean(ĝx̂)) = 0.
    let mut rng = kiln::tensor::Rng::new(7);
    let (rows, c) = (4, 8);
    let x = Var::parameter(Tensor::randn(&[rows, c], 0.0, 2.0, DType::F64, &mut rng)?);
    let w = Var::parameter(Tensor::randn(&[c], 1.0, 0.5, DType::F64, &mut rng)?);
    let g = Var::constant(Tensor::randn(&[rows, c], 0.0, 1.0, DType::F64, &mut rng)?);
    x.layer_norm(Some(&w), None, 0.0)?
        .mul(&g)?
        .sum_all()?
        .backward()?;
    let dx = x.grad().expect("a gradient").to_vec::<f64>()?;
    for (xr, dr) in x.value().to_vec::<f64>()?.chunks(c).zip(dx.chunks(c)) {
        let mu = xr.iter().sum::<f64>() / c as f64;
        let var = xr.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / c as f64;
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mu) / var.sqrt()).collect();
        assert!(dr.iter().sum::<f64>().abs() < 1e-12, "{dr:?}");
        let dot: f64 = dr.iter().zip(&xhat).map(|(d, h)| d * h).sum();
        assert!(dot.abs() < 1e-12, "{dot}");
    }
    Ok(())
}

#[test]
fn backward_gpt2_3_leaves_read_twice() -> Result<(), Box<dyn std::error::Error>> {
    use kiln::autograd::trace::{self, TraceInput};
    use std::collections::BTreeMap;
    let mut model = tiny_a();
    model.h.truncate(1);
    model.set_dropout(0.0)?;
    let ids = Tensor::from_vec(vec![464i64, 290, 318, 257, 290, 13, 464, 797], &[1, 8])?;
    kiln::autograd::clear_tape();
    let (_, loss) = model.forward_with_loss(&ids, &ids)?;
    let mut readers: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (node, e) in trace::tape().entries.iter().enumerate() {
        for input in &e.inputs {
            if let TraceInput::Leaf(leaf) = input {
                readers.entry(*leaf).or_default().push(node);
            }
        }
    }
    let shared: Vec<&Vec<usize>> = readers.values().filter(|r| r.len() > 1).collect();
    // Only wte: the lookup (node 0) and the head's transpose (node 34).
    assert_eq!(shared, [&vec![0, 34]]);
    // 16 leaves in all: wte, wpe, the block's 12, ln_f's 2.
    assert_eq!(readers.len(), 16);
    loss.backward()?;
    Ok(())
}

// ---- Training (docs/src/training.md) ----

#[test]
fn training_1_small_vocabulary() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = kiln::models::gpt2::Gpt2Config::baby();
    cfg.vocab_size = 65;
    let model = kiln::models::gpt2::Gpt2::new(cfg, 0)?;
    let (n, wte) = (model.num_parameters(), model.wte.weight.value().numel());
    // 65·128 + 64·128 + 4·(12·128² + 13·128) + 2·128
    assert_eq!((n, wte), (809_856, 8_320));
    assert_eq!(format!("{:.2} %", 100.0 * wte as f64 / n as f64), "1.03 %");
    Ok(())
}

#[test]
fn training_2_gpt2_small_flops() {
    let (v, c, l, t) = (50_257u64, 768, 12, 1024);
    let n = v * c + l * 12 * c * c;
    assert_eq!(n, 123_532_032);
    let per_token = 6 * n + 12 * l * c * t;
    assert_eq!(per_token, 854_438_400);
    let tokens_per_s = 151e9 / per_token as f64;
    assert_eq!(format!("{tokens_per_s:.0}"), "177");
}

// ---- The tokenizer (docs/src/tokenizer.md) ----

#[test]
fn tokenizer_1_leading_space() {
    let tok = kiln::models::tokenizer::Tokenizer::gpt2();
    assert_eq!(tok.encode("Hello"), [15496]);
    assert_eq!(tok.encode(" Hello"), [18435]);
    assert_eq!(tok.encode("hello"), [31373]);
}

#[test]
fn tokenizer_2_round_trip() -> Result<(), Box<dyn std::error::Error>> {
    let tok = kiln::models::tokenizer::Tokenizer::gpt2();
    let s = "naïve café 🦀";
    let ids = tok.encode(s);
    // "na" "ïve" " café" and the crab's four bytes (after its space) split
    // over three tokens: " \xF0\x9F", "\xA6", "\x80".
    assert_eq!(ids, [2616, 38776, 40304, 12520, 99, 222]);
    // Half a character is not valid UTF-8: the lossy decode shows U+FFFD.
    assert_eq!(tok.decode_lossy(&ids[..4])?, "naïve café \u{FFFD}");
    assert_eq!(tok.decode(&ids)?, s);
    Ok(())
}

// ---- Performance (docs/src/performance.md) ----

#[test]
fn performance_1_generation_bandwidth() {
    // Every generated token reads all the weights once.
    let (tokens_per_s, weight_bytes) = (56.0, 498e6);
    let gb_per_s = tokens_per_s * weight_bytes / 1e9;
    assert_eq!(format!("{gb_per_s:.1}"), "27.9");
    // If streaming the weights were all a step did, 100 GB/s would allow:
    let bound = 100e9 / weight_bytes;
    assert_eq!(format!("{bound:.0}"), "201");
}

#[test]
fn performance_2_same_bits_at_any_thread_count() -> Result<(), TensorError> {
    use kiln::tensor::parallel::{num_threads, set_num_threads};
    use kiln::tensor::Rng;
    let mut rng = Rng::new(4);
    let a = Tensor::randn(&[96, 320], 0.0, 1.0, DType::F32, &mut rng)?;
    let b = Tensor::randn(&[320, 200], 0.0, 1.0, DType::F32, &mut rng)?;
    // 96·320·200 = 6,144,000 multiply-adds: far above the 64³ = 262,144
    // below which the product stays on the calling thread.
    let before = num_threads();
    let mut bits = Vec::new();
    for threads in [1, 2] {
        set_num_threads(threads);
        let c = a.matmul(&b)?.to_vec::<f32>()?;
        bits.push(c.iter().map(|v| v.to_bits()).collect::<Vec<u32>>());
    }
    set_num_threads(before);
    // Threads split C, never k: each element is the same sequence of FMAs.
    // Split k, and partial sums would be added in an order that depends on
    // the split; f32 addition is not associative, so the bits would too.
    assert!(bits[0] == bits[1]);
    Ok(())
}

#[test]
fn performance_3_bytes_per_op() -> Result<(), Box<dyn std::error::Error>> {
    use kiln::autograd::{clear_tape, trace};
    clear_tape();
    let x = Var::parameter(Tensor::ones(&[32, 64], DType::F32));
    let w = Var::parameter(Tensor::ones(&[128, 64], DType::F32));
    let loss = x.matmul(&w.t()?)?.relu()?.sum_all()?;
    let ops: Vec<(&str, usize, bool)> = trace::tape()
        .entries
        .iter()
        .map(|e| (e.op, e.bytes, e.is_view))
        .collect();
    // The transpose is a view; [32, 128] f32 is 16 KiB; the sum one f32.
    assert_eq!(
        ops,
        [
            ("transpose", 0, true),
            ("matmul", 16_384, false),
            ("relu", 16_384, false),
            ("sum", 4, false),
        ]
    );
    assert_eq!(ops.iter().map(|o| o.1).sum::<usize>(), 32_772);
    loss.backward()?;
    Ok(())
}
