//! Global-norm gradient clipping (`torch.nn.utils.clip_grad_norm_`).

use kiln_autograd::Var;
use kiln_tensor::DType;

use crate::Result;

/// Scales all gradients so their global 2-norm is at most `max_norm`, and
/// returns the norm before clipping.
///
/// The norm is `√(Σ_params ‖g‖²)`, accumulated in f64. As in PyTorch the
/// scale is `max_norm / (norm + 1e-6)`, applied only when below 1.
/// Parameters without gradients are skipped. A non-finite norm is returned
/// as is (callers decide what to do; the trainer stops with a message).
///
/// # Errors
/// Dtype errors for integer gradients.
pub fn clip_grad_norm(params: &[Var], max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for p in params {
        if let Some(g) = p.grad() {
            let g = g.contiguous();
            total += match g.dtype() {
                // f32 squares summed in f64 without converting the tensor.
                DType::F32 => sum_squares(g.as_slice::<f32>()?, |x| x as f64),
                _ => sum_squares(g.to_dtype(DType::F64).as_slice::<f64>()?, |x| x),
            };
        }
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for p in params {
            if let Some(g) = p.grad() {
                p.set_grad(Some(g.mul_scalar(coef)?))?;
            }
        }
    }
    Ok(norm)
}

/// `Σ x²` in f64, over 8 interleaved accumulators added at the end: a fixed
/// order (so the same bits every run), and one the compiler can vectorise,
/// unlike a single running sum.
fn sum_squares<T: Copy>(xs: &[T], wide: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let (chunks, tail) = xs.as_chunks::<8>();
    for c in chunks {
        for i in 0..8 {
            let v = wide(c[i]);
            acc[i] += v * v;
        }
    }
    for (i, &x) in tail.iter().enumerate() {
        let v = wide(x);
        acc[i] += v * v;
    }
    acc.iter().sum()
}
