//! Where a training run's memory goes (`kiln train --memory-report`): the
//! table printed before the first step (estimates) and after it (measured).

use std::fmt;

use crate::memory::ActivationEstimate;

/// Bytes of each part of a training step's memory. Estimates come from the
/// model's shapes ([`crate::memory`]); measured figures need the program
/// to count its heap ([`kiln_tensor::memory::CountingAlloc`], as the
/// `kiln` binary does) and are `None` otherwise or before the first step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryReport {
    /// A one-line description of the run (model size, batch, precision).
    pub title: String,
    /// The weights (counted from the model's tensors).
    pub parameters: u64,
    /// One gradient per weight, f32.
    pub gradients: u64,
    /// AdamW's two moments per weight (measured from its state once it
    /// exists, else 2 × 4 bytes per weight).
    pub optimizer_state: u64,
    /// Activations kept for backward, per micro-batch (estimate).
    pub activations: ActivationEstimate,
    /// Whether gradient checkpointing is on.
    pub checkpointing: bool,
    /// What a micro-batch's forward pass left on the heap for backward
    /// (measured: heap after the loss minus heap before the forward).
    pub activations_measured: Option<u64>,
    /// The heap at its highest during the first step (measured).
    pub peak_heap: Option<u64>,
    /// Heap held before the first step began (measured).
    pub before_step: Option<u64>,
    /// The process's peak resident set so far.
    pub peak_rss: Option<u64>,
    /// Memory the machine still had available when the run started.
    pub available: Option<u64>,
}

impl MemoryReport {
    /// The estimated total: weights, gradients, optimizer state and
    /// activations.
    pub fn estimate(&self) -> u128 {
        (self.parameters + self.gradients + self.optimizer_state) as u128
            + self.activations.total(self.checkpointing)
    }
}

fn size(bytes: impl Into<u128>) -> String {
    let bytes: u128 = bytes.into();
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

fn opt(bytes: Option<u64>) -> String {
    bytes.map(size).unwrap_or_else(|| "—".into())
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "memory: {}", self.title)?;
        let row = |f: &mut fmt::Formatter<'_>, what: &str, est: String, got: String| {
            writeln!(f, "  {what:<46}{est:>12}{got:>14}")
        };
        row(f, "", "estimate".into(), "measured".into())?;
        row(
            f,
            "parameters",
            size(self.parameters),
            size(self.parameters),
        )?;
        row(f, "gradients", size(self.gradients), "".into())?;
        row(
            f,
            "optimizer state (AdamW exp_avg, exp_avg_sq)",
            size(self.optimizer_state),
            "".into(),
        )?;
        let a = &self.activations;
        let l = a.n_layer;
        if self.checkpointing {
            row(
                f,
                &format!("activations: {l} block inputs × {}", size(a.block_input)),
                size(l as u128 * a.block_input),
                "".into(),
            )?;
            row(
                f,
                "one block recomputed in backward",
                size(a.block_internals),
                "".into(),
            )?;
        } else {
            row(
                f,
                &format!("activations: {l} blocks × {}", size(a.block_internals)),
                size(a.blocks(false)),
                "".into(),
            )?;
        }
        row(
            f,
            "activations: embeddings, ln_f, logits + grad",
            size(a.head),
            "".into(),
        )?;
        row(
            f,
            "activations kept by one micro-batch",
            size(a.total(self.checkpointing)),
            opt(self.activations_measured),
        )?;
        if let (Some(peak), Some(before), Some(acts)) =
            (self.peak_heap, self.before_step, self.activations_measured)
        {
            // What the step held above its steady state and its saved
            // activations: gradients as they form, backward's temporaries.
            let transient = peak.saturating_sub(before + acts);
            row(
                f,
                "gradients + temporaries during backward",
                "".into(),
                size(transient),
            )?;
        }
        row(
            f,
            "total (peak heap)",
            size(self.estimate()),
            opt(self.peak_heap),
        )?;
        row(
            f,
            "peak resident set (VmHWM)",
            "".into(),
            opt(self.peak_rss),
        )?;
        if let Some(avail) = self.available {
            writeln!(f, "  memory the machine has available now: {}", size(avail))?;
        }
        if !self.checkpointing && l > 1 {
            writeln!(
                f,
                "  --gradient-checkpointing would keep {} of block activations instead of {}",
                size(a.blocks(true)),
                size(a.blocks(false))
            )?;
        }
        Ok(())
    }
}
