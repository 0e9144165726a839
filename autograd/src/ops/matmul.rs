//! Matrix product.

use crate::tape::record;
use crate::{Result, Var};

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
        let out = a.matmul(&b)?;
        let (need_a, need_b) = (self.requires_grad(), rhs.requires_grad());
        // y = a·b: da = g·bᵀ, db = aᵀ·g (batch dims summed by the engine)
        record(
            "matmul",
            "da = g·bᵀ, db = aᵀ·g",
            &[self, rhs],
            out,
            Box::new(move |g| {
                let da = if need_a {
                    Some(g.matmul(&b.t()?)?)
                } else {
                    None
                };
                let db = if !need_b {
                    None
                } else if b.rank() == 2 && a.rank() >= 2 {
                    // A shared weight under a batch: fold the batch into the
                    // rows, one big product instead of a batch of small ones
                    // followed by a sum.
                    let k = a.shape()[a.rank() - 1];
                    let n = g.shape()[g.rank() - 1];
                    let rows = a.numel() / k.max(1);
                    let (a2, g2) = (a.reshape(&[rows, k])?, g.reshape(&[rows, n])?);
                    if b.t()?.is_contiguous() && !b.is_contiguous() {
                        // b is wᵀ for a contiguous w (a tied LM head): build
                        // dw = gᵀ·a contiguous and hand back its transpose,
                        // so the transpose's own backward yields dw without
                        // a transposing copy of the whole weight gradient.
                        Some(g2.t()?.matmul(&a2)?.t()?)
                    } else {
                        Some(a2.t()?.matmul(&g2)?)
                    }
                } else {
                    Some(a.t()?.matmul(g)?)
                };
                Ok(vec![da, db])
            }),
        )
    }
}
