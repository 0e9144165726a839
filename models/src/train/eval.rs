//! Evaluation: mean negative log-likelihood over a token stream.

use kiln_autograd::no_grad;
use kiln_tensor::Tensor;

use crate::gpt2::Gpt2;
use crate::Result;

/// Mean negative log-likelihood over every predicted token of `ids`, cut
/// into consecutive, non-overlapping windows of `block` tokens (the last may
/// be shorter; a window of L tokens predicts L − 1). Returns (sum of NLL,
/// predicted tokens). Runs without recording gradients; the model's mode is
/// the caller's business (use eval mode for deterministic results).
///
/// # Errors
/// Model input errors (ids outside the vocabulary, block longer than the
/// context).
pub fn evaluate(model: &Gpt2, ids: &[u32], block: usize, batch: usize) -> Result<(f64, usize)> {
    let windows: Vec<&[u32]> = ids.chunks(block.max(2)).filter(|w| w.len() >= 2).collect();
    let (full, short): (Vec<&[u32]>, Vec<&[u32]>) = windows.iter().partition(|w| w.len() == block);
    let mut total = 0f64;
    let mut count = 0usize;
    no_grad(|| -> Result<()> {
        // Full windows go in batches; a shorter last window goes alone.
        for group in full.chunks(batch.max(1)).chain(short.chunks(1)) {
            let len = group[0].len();
            let flat: Vec<i64> = group
                .iter()
                .flat_map(|w| w.iter().map(|&i| i as i64))
                .collect();
            let x = Tensor::from_vec(flat, &[group.len(), len])?;
            let (_, loss) = model.forward_with_loss(&x, &x)?;
            let predicted = group.len() * (len - 1);
            total += loss.value().item::<f32>()? as f64 * predicted as f64;
            count += predicted;
        }
        Ok(())
    })?;
    Ok((total, count))
}
