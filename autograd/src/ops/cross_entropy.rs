//! Fused cross-entropy over logits, with an ignore index: the op record
//! and its backward rule. The row kernels live in the tensor crate
//! (`Tensor::cross_entropy_forward` / `cross_entropy_backward`).
//!
//! `ℓ = mean_n (logsumexp(x[n]) − x[n, t_n])` over rows whose target is not
//! the ignore index; `dx = g/N_valid · (softmax(x) − onehot(t))`.

use kiln_tensor::Tensor;

use crate::tape::record;
use crate::{Result, Var};

impl Var {
    /// Mean cross-entropy between logits `self: [..., V]` and i64 class
    /// `targets: [...]`, skipping rows whose target equals `ignore_index`
    /// (`F.cross_entropy(logits.view(-1, V), targets.view(-1),
    /// ignore_index=…)`; transformers uses −100). If every row is ignored
    /// the mean is 0/0 = NaN, as in PyTorch.
    ///
    /// # Errors
    /// The tensor error of [`Tensor::cross_entropy_forward`]: the shapes do
    /// not fit, a target is outside `0..V`, or the dtypes are not f32/f64
    /// logits and i64 targets.
    pub fn cross_entropy(&self, targets: &Tensor, ignore_index: i64) -> Result<Var> {
        // Contiguous once, here: the backward reads the same rows again.
        let xc = self.value().contiguous();
        let (out, stats) = xc.cross_entropy_forward(targets, ignore_index)?;
        // ℓ = mean_n (lse_n − x[n, t_n]): dx = g/N·(softmax(x) − onehot(t))
        record(
            "cross_entropy",
            "dx = g/N·(softmax(x) − onehot(t))",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(Tensor::cross_entropy_backward(&xc, &stats, g)?)])),
        )
    }
}
