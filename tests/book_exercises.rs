//! Solutions to the exercises at the end of the book's chapters
//! (`docs/src/*.md`), one test per exercise, named `<chapter>_<n>_<what>`.
//! Each checks the answer the chapter asks for, so a change to the code
//! that changes an answer fails here and the chapter gets updated.

use kiln::autograd::Var;
use kiln::nn::{join, Forward, KvCache, Module};
use kiln::tensor::{DType, Tensor, TensorError};

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
