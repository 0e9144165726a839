//! Evaluation: mean negative log-likelihood over a token stream.

use kiln_autograd::no_grad;
use kiln_tensor::Tensor;

use super::model::{window_loss, TrainModel};
use crate::gpt2::Gpt2;
use crate::Result;

/// What an evaluation measured: the summed negative log-likelihood and the
/// number of tokens it was summed over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalLoss {
    /// Σ −log p(token) over the predicted tokens (nats).
    pub nll_sum: f64,
    /// Tokens predicted.
    pub tokens: usize,
}

impl EvalLoss {
    /// The mean loss per predicted token (transformers' `eval_loss`);
    /// NaN when nothing was predicted.
    pub fn mean(&self) -> f64 {
        self.nll_sum / self.tokens as f64
    }

    /// `exp(mean)`, the perplexity.
    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }
}

/// Mean negative log-likelihood over every predicted token of `ids`, cut
/// into consecutive, non-overlapping windows of `block` tokens (the last may
/// be shorter; a window of L tokens predicts L − 1): [`EvalLoss::mean`]
/// of the result. Runs without recording gradients; the model's mode is
/// the caller's business (use eval mode for deterministic results).
///
/// # Errors
/// Model input errors (ids outside the vocabulary, block longer than the
/// context).
pub fn evaluate<M: TrainModel + ?Sized>(
    model: &M,
    ids: &[u32],
    block: usize,
    batch: usize,
) -> Result<EvalLoss> {
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
            let loss = window_loss(model, &x)?;
            let predicted = group.len() * (len - 1);
            total += loss.value().item::<f32>()? as f64 * predicted as f64;
            count += predicted;
        }
        Ok(())
    })?;
    Ok(EvalLoss {
        nll_sum: total,
        tokens: count,
    })
}

/// The sliding-window perplexity of the transformers documentation
/// ("Perplexity of fixed-length models"): windows of `max_length` tokens
/// that start every `stride` tokens, each scoring only the tokens past the
/// previous window's end (the others are labelled −100 and serve as
/// context), so every token is scored once and, with `stride <
/// max_length`, with more context than disjoint windows give.
///
/// Returns (sum of NLL, token count) counted exactly as that page does:
/// each window adds `loss × (valid labels − 1)`, where `loss` is the mean
/// over the labels left after the model's internal shift. (For a window
/// past the first, that mean covers all of its `trg_len` labels while the
/// count is `trg_len − 1`; the page accepts this and so does Kiln, so the
/// two agree to rounding.) A last window of one token, which the page
/// turns into NaN (a mean over no labels), adds nothing here. Equivalent:
///
/// ```python
/// for begin_loc in range(0, seq_len, stride):
///     end_loc = min(begin_loc + max_length, seq_len)
///     trg_len = end_loc - prev_end_loc
///     input_ids = ids[:, begin_loc:end_loc]; target_ids = input_ids.clone()
///     target_ids[:, :-trg_len] = -100
///     loss = model(input_ids, labels=target_ids).loss
///     n = (target_ids != -100).sum().item() - 1
///     nll_sum += loss * n; n_tokens += n; prev_end_loc = end_loc
///     if end_loc == seq_len: break
/// ```
///
/// # Errors
/// [`crate::ModelError::Input`] for `stride` 0 or `max_length` < 2; model
/// input errors.
pub fn evaluate_strided(
    model: &Gpt2,
    ids: &[u32],
    max_length: usize,
    stride: usize,
) -> Result<EvalLoss> {
    if stride == 0 {
        return Err(crate::ModelError::Input(
            "--stride must be at least 1".into(),
        ));
    }
    if max_length < 2 {
        return Err(crate::ModelError::Input(
            "the window (--block-size) must be at least 2 tokens".into(),
        ));
    }
    let seq_len = ids.len();
    let (mut nll_sum, mut n_tokens) = (0f64, 0usize);
    let mut prev_end = 0;
    let mut begin = 0;
    no_grad(|| -> Result<()> {
        while begin < seq_len {
            let end = (begin + max_length).min(seq_len);
            let len = end - begin;
            let trg_len = end - prev_end;
            // Labels before the last trg_len positions are −100 (Python's
            // `[:-trg_len]` is empty when trg_len ≥ len).
            let masked = len.saturating_sub(trg_len);
            let valid = len - masked;
            // After the shift, positions max(1, masked).. are scored.
            let scored = len - masked.max(1);
            if scored > 0 {
                let x: Vec<i64> = ids[begin..end].iter().map(|&i| i as i64).collect();
                let labels: Vec<i64> = x
                    .iter()
                    .enumerate()
                    .map(|(t, &id)| if t < masked { -100 } else { id })
                    .collect();
                let x = Tensor::from_vec(x, &[1, len])?;
                let labels = Tensor::from_vec(labels, &[1, len])?;
                let (_, loss) = model.forward_with_loss(&x, &labels)?;
                let loss = loss.value().item::<f32>()? as f64;
                nll_sum += loss * (valid - 1) as f64;
                n_tokens += valid - 1;
            }
            prev_end = end;
            if end == seq_len {
                break;
            }
            begin += stride;
        }
        Ok(())
    })?;
    Ok(EvalLoss {
        nll_sum,
        tokens: n_tokens,
    })
}
