//! Matrix product.

use kiln_tensor::{DType, Tensor};

use crate::tape::record;
use crate::{Result, Var};

/// Gradient products at least this big (multiply-adds each) are computed
/// side by side: 2²⁴ is about 0.1 ms of one core, far above the cost of
/// handing one of them to another thread.
const JOIN_MIN_FMAS: usize = 1 << 24;

impl Var {
    /// Matrix product with `torch.matmul` semantics: `[..., m, k] · [..., k, n]`
    /// with broadcast batch dims; a 1-D operand is treated as a row (lhs) or
    /// column (rhs) vector and that dim is dropped from the result.
    ///
    /// # Errors
    /// The tensor error for mismatched inner dims, batch dims or dtypes.
    pub fn matmul(&self, rhs: &Var) -> Result<Var> {
        // Vectors become matrices through recorded views, so their
        // gradients come for free from the matrix rule.
        if self.shape().len() == 1 {
            return self.unsqueeze(0)?.matmul(rhs)?.squeeze(-2);
        }
        if rhs.shape().len() == 1 {
            return self.matmul(&rhs.unsqueeze(1)?)?.squeeze(-1);
        }
        let (a, b) = (self.value(), rhs.value());
        // Under autocast the forward and both gradient products run on
        // bf16-rounded operands (decided now, kept for backward).
        let bf16 = crate::is_autocast_bf16()
            && [&a, &b]
                .iter()
                .all(|t| matches!(t.dtype(), DType::F32 | DType::BF16));
        let mm = move |x: &Tensor, y: &Tensor| -> kiln_tensor::Result<Tensor> {
            if bf16 {
                x.matmul_bf16(y)
            } else {
                x.matmul(y)
            }
        };
        let out = mm(&a, &b)?;
        let (need_a, need_b) = (self.requires_grad(), rhs.requires_grad());
        // y = a·b: da = g·bᵀ, db = aᵀ·g (batch dims summed by the engine)
        record(
            if bf16 { "matmul_bf16" } else { "matmul" },
            "da = g·bᵀ, db = aᵀ·g",
            &[self, rhs],
            out,
            Box::new(move |g| {
                let da = || -> Result<Option<Tensor>> {
                    if !need_a {
                        return Ok(None);
                    }
                    Ok(Some(mm(g, &b.t()?)?))
                };
                let db = || -> Result<Option<Tensor>> {
                    if !need_b {
                        Ok(None)
                    } else if b.rank() == 2 && a.rank() >= 2 {
                        // A shared weight under a batch: fold the batch into
                        // the rows, one big product instead of a batch of
                        // small ones followed by a sum.
                        let k = a.shape()[a.rank() - 1];
                        let n = g.shape()[g.rank() - 1];
                        let rows = a.numel() / k.max(1);
                        let (a2, g2) = (a.reshape(&[rows, k])?, g.reshape(&[rows, n])?);
                        if b.t()?.is_contiguous() && !b.is_contiguous() {
                            // b is wᵀ for a contiguous w (a tied LM head):
                            // build dw = gᵀ·a contiguous and hand back its
                            // transpose, so the transpose's own backward
                            // yields dw without a transposing copy of the
                            // whole weight gradient.
                            Ok(Some(mm(&g2.t()?, &a2)?.t()?))
                        } else {
                            Ok(Some(mm(&a2.t()?, &g2)?))
                        }
                    } else {
                        Ok(Some(mm(&a.t()?, g)?))
                    }
                };
                // da = g·bᵀ and db = aᵀ·g take the same number of
                // multiply-adds (m·k·n): big ones run side by side, one per
                // core (see `parallel::join`).
                let fmas = g.numel().saturating_mul(a.shape()[a.rank() - 1]);
                let (da, db) = if need_a && need_b && fmas >= JOIN_MIN_FMAS {
                    kiln_tensor::parallel::join(da, db)
                } else {
                    (da(), db())
                };
                let (da, db) = (da?, db?);
                Ok(vec![da, db])
            }),
        )
    }
}
