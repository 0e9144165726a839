//! `TrainConfig`: the trainer's hyper-parameters, named after transformers'
//! `TrainingArguments`, and their validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::data::Sampling;
use crate::{ModelError, Result};

/// Which learning-rate schedule to use after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleKind {
    /// Linear decay to 0 at the last step (transformers' default).
    Linear,
    /// Cosine decay to a tenth of the peak (nanoGPT).
    Cosine,
    /// No decay.
    Constant,
}

/// Training hyper-parameters, named after transformers' `TrainingArguments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Where checkpoints, logs, the final model and the loss curve go.
    pub output_dir: PathBuf,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Decoupled weight decay on matrices (none on biases / LayerNorm).
    pub weight_decay: f64,
    /// AdamW β₁, β₂, ε.
    pub adam: (f64, f64, f64),
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Schedule after warmup.
    pub schedule: ScheduleKind,
    /// Stop after this many optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Passes over the training data.
    pub epochs: f64,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Global-norm clipping threshold (0 disables).
    pub max_grad_norm: f64,
    /// Tokens per row.
    pub block_size: usize,
    /// Random windows (nanoGPT) or consecutive blocks (transformers).
    pub sampling: Sampling,
    /// Evaluate every N steps (and always at the end).
    pub eval_steps: Option<usize>,
    /// Log every N steps.
    pub logging_steps: usize,
    /// Save a checkpoint every N steps.
    pub save_steps: usize,
    /// Keep at most this many checkpoints.
    pub save_total_limit: Option<usize>,
    /// Seed of data sampling and dropout.
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Start afresh in an output folder that holds an earlier run's
    /// checkpoints, deleting them (transformers' `overwrite_output_dir`).
    /// Without it (and without [`super::Trainer::resume`]) such a folder is an
    /// error, so two runs never mix.
    pub overwrite_output_dir: bool,
    /// Mixed precision (transformers' `bf16=True`): every matrix product
    /// of the forward pass and both of its gradient products on
    /// bf16-rounded operands with f32 accumulation, as under
    /// `torch.autocast("cpu", dtype=torch.bfloat16)`; weights, AdamW state,
    /// layer norms, softmax and the loss stay f32
    /// ([`kiln_autograd::autocast_bf16`]).
    pub bf16: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            output_dir: "runs/train".into(),
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam: (0.9, 0.999, 1e-8),
            warmup_steps: 0,
            schedule: ScheduleKind::Linear,
            max_steps: None,
            epochs: 3.0,
            batch_size: 8,
            gradient_accumulation_steps: 1,
            max_grad_norm: 1.0,
            block_size: 1024,
            sampling: Sampling::Sequential,
            eval_steps: None,
            logging_steps: 10,
            save_steps: 500,
            save_total_limit: None,
            seed: 42,
            progress: true,
            overwrite_output_dir: false,
            bf16: false,
        }
    }
}

fn bad_arg(field: &str, flag: &str, rule: &str, got: impl std::fmt::Display) -> ModelError {
    ModelError::Input(format!("{field} (--{flag}) must be {rule}, got {got}"))
}

impl TrainConfig {
    /// Checks every hyper-parameter before anything is trained or saved:
    /// a NaN or infinite learning rate would turn every weight into NaN at
    /// the first update, a zero batch size would silently mean one.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the field, its command-line flag, the
    /// rule and the value.
    pub fn validate(&self) -> Result<()> {
        // f32 weights: a learning rate past f32's range overflows at once.
        let f32_max = f32::MAX as f64;
        let lr = self.learning_rate;
        if !(lr.is_finite() && (0.0..=f32_max).contains(&lr)) {
            return Err(bad_arg(
                "learning_rate",
                "learning-rate",
                "a finite number ≥ 0",
                lr,
            ));
        }
        let wd = self.weight_decay;
        if !(wd.is_finite() && (0.0..=f32_max).contains(&wd)) {
            return Err(bad_arg(
                "weight_decay",
                "weight-decay",
                "a finite number ≥ 0",
                wd,
            ));
        }
        let (b1, b2, eps) = self.adam;
        for (name, flag, b) in [("adam.0", "adam-beta1", b1), ("adam.1", "adam-beta2", b2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad_arg(name, flag, "in [0, 1)", b));
            }
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(bad_arg(
                "adam.2",
                "adam-epsilon",
                "a finite number ≥ 0",
                eps,
            ));
        }
        let g = self.max_grad_norm;
        if g.is_nan() || g < 0.0 {
            return Err(bad_arg(
                "max_grad_norm",
                "max-grad-norm",
                "a number ≥ 0 (0 disables clipping)",
                g,
            ));
        }
        if !(self.epochs.is_finite() && self.epochs > 0.0) {
            return Err(bad_arg(
                "epochs",
                "epochs",
                "a finite number > 0",
                self.epochs,
            ));
        }
        let at_least_one = "at least 1";
        for (field, flag, v) in [
            ("batch_size", "batch-size", self.batch_size),
            (
                "gradient_accumulation_steps",
                "gradient-accumulation-steps",
                self.gradient_accumulation_steps,
            ),
            ("logging_steps", "logging-steps", self.logging_steps),
            ("save_steps", "save-steps", self.save_steps),
        ] {
            if v == 0 {
                return Err(bad_arg(field, flag, at_least_one, v));
            }
        }
        for (field, flag, v, omit) in [
            (
                "max_steps",
                "max-steps",
                self.max_steps,
                "to train for --epochs",
            ),
            (
                "eval_steps",
                "eval-steps",
                self.eval_steps,
                "to evaluate only at the end",
            ),
            (
                "save_total_limit",
                "save-total-limit",
                self.save_total_limit,
                "to keep every checkpoint",
            ),
        ] {
            if v == Some(0) {
                return Err(bad_arg(
                    field,
                    flag,
                    &format!("at least 1 (omit it {omit})"),
                    0,
                ));
            }
        }
        Ok(())
    }
}
