//! Losses.

use kiln_autograd::Var;
use kiln_tensor::Tensor;

use crate::Result;

/// The label PyTorch and transformers use for "no target here" (padding,
/// prompt tokens): rows with this target do not count in the mean.
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits: [..., V]` against i64 `targets: [...]`,
/// skipping `ignore_index` (`F.cross_entropy(logits.view(-1, V),
/// targets.view(-1), ignore_index=ignore_index)`).
///
/// # Errors
/// Shape, dtype or out-of-range target errors, naming the row.
pub fn cross_entropy(logits: &Var, targets: &Tensor, ignore_index: i64) -> Result<Var> {
    Ok(logits.cross_entropy(targets, ignore_index)?)
}

/// Mean squared error, `mean((pred − target)²)` (`F.mse_loss`).
///
/// # Errors
/// Shape or dtype errors.
pub fn mse_loss(pred: &Var, target: &Var) -> Result<Var> {
    Ok(pred.sub(target)?.powf(2.0)?.mean_all()?)
}
