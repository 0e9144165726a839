//! How many bytes a GPT-2 model and a training run need, and whether the
//! machine has them — checked before allocating, so an absurd config is a
//! clear error rather than an abort ("memory allocation of … bytes failed")
//! or a machine that swaps itself to a standstill.
//!
//! The estimates count f32 elements (4 bytes): the parameters; for training
//! also their gradients and AdamW's two moments; and the activations one
//! forward pass saves for backward. They are deliberately simple formulas a
//! reader can check by hand, not measurements.

use crate::gpt2::Gpt2Config;
use crate::{ModelError, Result};

/// Parameters of a GPT-2 with `cfg`, or `None` when the count overflows.
///
/// Per block: two layer norms (4C), attention (C·3C + 3C + C·C + C) and the
/// MLP (C·I + I + I·C + C); plus the token and position embeddings (V·C +
/// P·C) and the final layer norm (2C). The LM head is tied to `wte`.
pub fn gpt2_parameters(cfg: &Gpt2Config) -> Option<u128> {
    let (v, p, c, l) = (
        cfg.vocab_size as u128,
        cfg.n_positions as u128,
        cfg.n_embd as u128,
        cfg.n_layer as u128,
    );
    let i = cfg.n_inner.unwrap_or(cfg.n_embd.checked_mul(4)?) as u128;
    let block = 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * i + i) + (i * c + c);
    let total = v.checked_mul(c)? + p.checked_mul(c)? + l.checked_mul(block)? + 2 * c;
    Some(total)
}

/// Bytes of activations a training forward pass over a `(batch, block)`
/// batch keeps for backward, in f32.
///
/// Per block and token, about 10·C + 2·I (layer-norm outputs, q/k/v,
/// attention output, residuals, the MLP's I-wide hidden layer before and
/// after GELU) plus NH·T for the attention probabilities — 3·NH·T with
/// attention dropout, which keeps its mask and output too, and 4·C more
/// for the residual dropouts; after the last block, the logits and their
/// gradient, 2·V per token. Measured with `kiln train --memory-report` on
/// gpt2 at T = 512 and 1024, this is 15–25 % above what the tape really
/// holds, erring on the side that refuses a run rather than letting it
/// swap. With `checkpointing` (gradient checkpointing) only each block's
/// input (C per token) stays, plus one block's internals while it is
/// recomputed.
pub fn gpt2_activation_bytes(
    cfg: &Gpt2Config,
    batch: usize,
    block: usize,
    checkpointing: bool,
) -> u128 {
    ActivationEstimate::gpt2(cfg, batch, block).total(checkpointing)
}

/// The parts of [`gpt2_activation_bytes`], in bytes per micro-batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivationEstimate {
    /// What one block's internals keep for backward.
    pub block_internals: u128,
    /// One block's input: all a block keeps under gradient checkpointing.
    pub block_input: u128,
    /// The rest of the network: the logits and their gradient.
    pub head: u128,
    /// Blocks in the model.
    pub n_layer: usize,
}

impl ActivationEstimate {
    /// The estimate for GPT-2 `cfg` at `batch` rows of `block` tokens.
    pub fn gpt2(cfg: &Gpt2Config, batch: usize, block: usize) -> ActivationEstimate {
        let (c, i, nh, v) = (
            cfg.n_embd as u128,
            cfg.n_inner.unwrap_or(4 * cfg.n_embd) as u128,
            cfg.n_head as u128,
            cfg.vocab_size as u128,
        );
        let tokens = batch as u128 * block as u128;
        let attention = if cfg.attn_pdrop > 0.0 { 3 } else { 1 } * nh * block as u128;
        let residual_dropout = if cfg.resid_pdrop > 0.0 { 4 * c } else { 0 };
        ActivationEstimate {
            block_internals: 4 * tokens * (10 * c + 2 * i + attention + residual_dropout),
            block_input: 4 * tokens * c,
            head: 4 * tokens * 2 * v,
            n_layer: cfg.n_layer,
        }
    }

    /// What the blocks keep: every block's internals, or with gradient
    /// checkpointing every block's input plus one block's internals (while
    /// it is recomputed).
    pub fn blocks(&self, checkpointing: bool) -> u128 {
        let l = self.n_layer as u128;
        if checkpointing {
            l * self.block_input + self.block_internals
        } else {
            l * self.block_internals
        }
    }

    /// The blocks and the head.
    pub fn total(&self, checkpointing: bool) -> u128 {
        self.blocks(checkpointing) + self.head
    }
}

/// Bytes of memory this process can still allocate without swapping: the
/// kernel's `MemAvailable`, lowered to the cgroup's limit where one is set.
/// `None` where the platform does not say (not Linux).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    let mut avail = kib.saturating_mul(1024);
    // cgroup v2: a container's limit minus what it already uses.
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    if let (Some(max), Some(cur)) = (read("memory.max"), read("memory.current")) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

/// Formats a byte count for people: `1.50 GB`, `312.0 MB`.
pub fn human_bytes(bytes: u128) -> String {
    let b = bytes as f64;
    if b >= 1e12 {
        format!("{:.2} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

/// Fails with the estimate when `need` bytes (for `what`) exceed the memory
/// still available; passes where the platform does not report it.
///
/// # Errors
/// [`ModelError::Input`] naming `what`, the estimate, what is available and
/// `hint` (what to change).
pub fn ensure_fits(need: u128, what: &str, hint: &str) -> Result<()> {
    match available_memory() {
        Some(avail) if need > avail as u128 => Err(ModelError::Input(format!(
            "{what} needs about {} but only {} of memory is available; {hint}",
            human_bytes(need),
            human_bytes(avail as u128)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_its_published_parameter_count() {
        // transformers: GPT2LMHeadModel(GPT2Config()).num_parameters() = 124,439,808
        assert_eq!(gpt2_parameters(&Gpt2Config::gpt2()), Some(124_439_808));
    }

    #[test]
    fn absurd_sizes_overflow_to_none_or_refuse() {
        let mut c = Gpt2Config::tiny();
        c.n_embd = 1 << 62;
        assert_eq!(gpt2_parameters(&c), None);
        let mut c = Gpt2Config::tiny();
        c.n_layer = 1_000_000_000;
        let bytes = 4 * gpt2_parameters(&c).unwrap();
        if available_memory().is_some() {
            let e = ensure_fits(bytes, "this model", "use a smaller config")
                .unwrap_err()
                .to_string();
            assert!(e.contains("needs about") && e.contains("TB"), "{e}");
        }
    }
}
