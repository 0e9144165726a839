//! A differentiable op defined outside Kiln, with its own backward rule:
//! Kiln's `torch.autograd.Function`.
//!
//! Softplus, `ln(1 + eˣ)`, composed from existing ops records three nodes
//! (`exp`, `add_scalar`, `log`) and keeps three tensors for backward. As a
//! custom op it is one node that keeps only `x`, with the rule
//!
//! ```text
//!   y = ln(1 + eˣ)        dy/dx = eˣ / (1 + eˣ) = σ(x)        dx = g·σ(x)
//! ```
//!
//! and a forward that is also stable for large `x` (the composite overflows
//! `eˣ` past x ≈ 88 in f32 and returns inf). The example checks the rule
//! with `gradcheck`, compares it with the composite, and uses it in a
//! tiny fit.
//!
//! Run:  cargo run --release --example custom_op
//! Book: docs/src/autodiff.md ("Adding an op with its gradient").

use kiln::autograd::{custom_op, gradcheck, trace, GradcheckOptions, Var};
use kiln::tensor::{DType, Rng, Tensor};

// ANCHOR: softplus
/// `ln(1 + eˣ)`, elementwise, for f32 or f64 `x`
/// (`torch.nn.functional.softplus`).
fn softplus(x: &Var) -> kiln::autograd::Result<Var> {
    let xv = x.value();
    let out = match xv.dtype() {
        DType::F32 => xv.map(|v: f32| v.max(0.0) + (-v.abs()).exp().ln_1p())?,
        _ => xv.map(|v: f64| v.max(0.0) + (-v.abs()).exp().ln_1p())?,
    };
    custom_op("softplus", &[x], out, move |g| {
        // dx = g·σ(x); σ from the saved input, not the output.
        let dx = match xv.dtype() {
            DType::F32 => xv.zip_map(g, |x: f32, g: f32| g / (1.0 + (-x).exp()))?,
            _ => xv.zip_map(g, |x: f64, g: f64| g / (1.0 + (-x).exp()))?,
        };
        Ok(vec![Some(dx)])
    })
}
// ANCHOR_END: softplus

fn main() -> anyhow::Result<()> {
    // 1. The rule against finite differences (f64, as gradcheck runs).
    let mut rng = Rng::new(7);
    let x = Tensor::randn(&[4, 5], 0.0, 3.0, DType::F64, &mut rng)?;
    let report = gradcheck(|v| softplus(&v[0]), &[x], &GradcheckOptions::default())?;
    println!("{report}");
    anyhow::ensure!(report.passed(), "softplus's rule is wrong");

    // 2. The same values and gradients as the composite, on one node.
    let x = Var::parameter(Tensor::from_vec(vec![-2f32, 0.0, 1.5, 100.0], &[4])?);
    let y = softplus(&x)?;
    println!("tape of the custom op:\n{}", trace::tape());
    y.sum_all()?.backward()?;
    let custom = (
        y.value().to_vec::<f32>()?,
        x.grad().unwrap().to_vec::<f32>()?,
    );
    x.zero_grad();
    let z = x.exp()?.add_scalar(1.0)?.log()?;
    z.sum_all()?.backward()?;
    let composite = (
        z.value().to_vec::<f32>()?,
        x.grad().unwrap().to_vec::<f32>()?,
    );
    println!("custom    y = {:?}  dy/dx = {:?}", custom.0, custom.1);
    println!("composite y = {:?}  dy/dx = {:?}", composite.0, composite.1);
    for i in 0..3 {
        anyhow::ensure!((custom.0[i] - composite.0[i]).abs() < 1e-6);
        anyhow::ensure!((custom.1[i] - composite.1[i]).abs() < 1e-6);
    }
    anyhow::ensure!(custom.0[3] == 100.0 && composite.0[3].is_infinite());

    // 3. In a model: fit y = softplus(w·x + b) to points of ln(1 + e^(2x − 1)).
    let xs = Tensor::from_vec((0..16).map(|i| i as f32 / 4.0 - 2.0).collect(), &[16])?;
    let target = xs.map(|v: f32| (2.0 * v - 1.0).exp().ln_1p())?;
    let (w, b) = (
        Var::parameter(Tensor::from_vec(vec![0.5f32], &[1])?),
        Var::parameter(Tensor::zeros(&[1], DType::F32)),
    );
    let (xs, target) = (Var::constant(xs), Var::constant(target));
    let mut loss = f32::INFINITY;
    for _ in 0..300 {
        let pred = softplus(&w.mul(&xs)?.add(&b)?)?;
        let l = pred.sub(&target)?.powf(2.0)?.mean_all()?;
        loss = l.value().item::<f32>()?;
        l.backward()?;
        for p in [&w, &b] {
            let step = p.grad().unwrap().mul_scalar(0.5)?;
            p.set_value(p.value().sub(&step)?)?;
            p.zero_grad();
        }
    }
    let (w, b) = (w.value().item::<f32>()?, b.value().item::<f32>()?);
    println!("fit: w = {w:.3} (2), b = {b:.3} (−1), loss {loss:.2e}");
    anyhow::ensure!((w - 2.0).abs() < 0.05 && (b + 1.0).abs() < 0.05);
    Ok(())
}
