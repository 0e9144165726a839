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
                DType::F32 => g
                    .as_slice::<f32>()?
                    .iter()
                    .map(|&x| (x as f64) * (x as f64))
                    .sum::<f64>(),
                _ => g
                    .to_dtype(DType::F64)
                    .as_slice::<f64>()?
                    .iter()
                    .map(|x| x * x)
                    .sum::<f64>(),
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
