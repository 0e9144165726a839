//! `TrainConfig`: the trainer's hyper-parameters, named after transformers'
//! `TrainingArguments`, and their validation.
//!
//! With the `clap` feature, `TrainConfig` is also `kiln train`'s flags
//! (`clap::Args`, flattened into the command's arguments), with
//! [`TrainConfig::default`]'s values as the flags' defaults, so the library
//! and the command line share one definition of each setting.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use kiln_nn::optim::ScheduleKind;

use super::data::BatchSampling;
use crate::{ModelError, Result};

/// When to evaluate or save during training: transformers'
/// `IntervalStrategy` (`--eval-strategy`, `--save-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum IntervalStrategy {
    /// Never during training.
    No,
    /// Every `eval_steps` / `save_steps` optimizer steps, and at the last step.
    Steps,
    /// At the end of every epoch (the last step ends the last epoch).
    Epoch,
}

impl IntervalStrategy {
    /// Whether an event of this strategy falls after optimizer step `step`
    /// (1-based) of `total`, with `every` steps between events and
    /// `per_epoch` steps in an epoch — transformers' `DefaultFlowCallback`
    /// rules: step events at multiples of `every` and at the last step,
    /// epoch events at each epoch's last step.
    pub fn fires(self, step: usize, total: usize, every: usize, per_epoch: usize) -> bool {
        match self {
            IntervalStrategy::No => false,
            IntervalStrategy::Steps => step.is_multiple_of(every.max(1)) || step == total,
            IntervalStrategy::Epoch => step.is_multiple_of(per_epoch.max(1)) || step == total,
        }
    }
}

/// Training hyper-parameters, named after transformers' `TrainingArguments`.
///
/// With the `clap` feature each field is also a `kiln train` flag
/// (`--learning-rate`, `--lr-scheduler`, …) defaulting to
/// [`TrainConfig::default`]'s value; `block_size` is set by the program
/// (it defaults to the model's context).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TrainConfig {
    /// Where checkpoints, logs, the final model and the loss curve go.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub output_dir: PathBuf,
    /// Peak learning rate.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().learning_rate))]
    pub learning_rate: f64,
    /// Decoupled weight decay on matrices (none on biases / LayerNorm).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().weight_decay))]
    pub weight_decay: f64,
    /// AdamW β₁ (`torch.optim.AdamW(betas=(β₁, β₂))`).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().adam_beta1))]
    pub adam_beta1: f64,
    /// AdamW β₂.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().adam_beta2))]
    pub adam_beta2: f64,
    /// AdamW ε, added to the root of the second moment.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().adam_epsilon))]
    pub adam_epsilon: f64,
    /// Linear warmup steps.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().warmup_steps))]
    pub warmup_steps: usize,
    /// Schedule after warmup.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "lr-scheduler",
            visible_alias = "lr-scheduler-type",
            value_enum,
            default_value_t = defaults().schedule
        )
    )]
    pub schedule: ScheduleKind,
    /// Stop after this many optimizer steps (overrides `epochs`).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Stop after this many optimizer steps (overrides --epochs)"
        )
    )]
    pub max_steps: Option<usize>,
    /// Passes over the training data.
    #[cfg_attr(
        feature = "clap",
        arg(long, visible_alias = "num-train-epochs", default_value_t = defaults().epochs)
    )]
    pub epochs: f64,
    /// Rows per micro-batch.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            visible_alias = "per-device-train-batch-size",
            default_value_t = defaults().batch_size
        )
    )]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[cfg_attr(
        feature = "clap",
        arg(long, default_value_t = defaults().gradient_accumulation_steps)
    )]
    pub gradient_accumulation_steps: usize,
    /// Global-norm clipping threshold (0 disables).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().max_grad_norm))]
    pub max_grad_norm: f64,
    /// Tokens per row.
    #[cfg_attr(feature = "clap", arg(skip = defaults().block_size))]
    pub block_size: usize,
    /// Random windows (nanoGPT) or consecutive blocks (transformers).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, default_value_t = defaults().sampling)
    )]
    pub sampling: BatchSampling,
    /// When to evaluate on the validation data during training
    /// (transformers' `eval_strategy`, default `no`). The trainer also
    /// evaluates once after the last step whenever there is validation
    /// data, as `run_clm.py --do_eval` does.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            value_enum,
            default_value_t = defaults().eval_strategy,
            // As the command has always done: --eval-steps alone means
            // evaluating every that many steps.
            default_value_if("eval_steps", clap::builder::ArgPredicate::IsPresent, "steps"),
            help = "When to evaluate during training: no, steps or epoch (default: steps when --eval-steps is given, else no). With validation data the model is always evaluated once at the end",
            long_help = None
        )
    )]
    #[serde(default = "no_strategy")]
    pub eval_strategy: IntervalStrategy,
    /// Steps between evaluations under [`IntervalStrategy::Steps`]
    /// (default: `logging_steps`, as transformers).
    #[cfg_attr(
        feature = "clap",
        arg(long, help = "Evaluate every N steps (default: --logging-steps)")
    )]
    pub eval_steps: Option<usize>,
    /// Log every N steps.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().logging_steps))]
    pub logging_steps: usize,
    /// When to save checkpoints (transformers' `save_strategy`, default
    /// `steps`). A run stopped by a signal saves one whatever this says.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, default_value_t = defaults().save_strategy)
    )]
    #[serde(default = "steps_strategy")]
    pub save_strategy: IntervalStrategy,
    /// Save a checkpoint every N steps (and at the last step) under
    /// [`IntervalStrategy::Steps`].
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            default_value_t = defaults().save_steps,
            help = "Save a checkpoint every N steps, and at the last step"
        )
    )]
    pub save_steps: usize,
    /// Keep at most this many checkpoints (the newest, and the best one
    /// under `load_best_model_at_end`, always survive).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Keep at most this many checkpoints (the newest and, with --load-best-model-at-end, the best always survive)"
        )
    )]
    pub save_total_limit: Option<usize>,
    /// Track the best checkpoint by `metric_for_best_model`, keep it
    /// through rotation, and make it the final model (transformers'
    /// `load_best_model_at_end`). Needs validation data and the same
    /// `eval_strategy` as `save_strategy` (with `save_steps` a multiple of
    /// `eval_steps`), so every checkpoint has a score.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Keep the checkpoint with the best --metric-for-best-model through rotation and make it the final model (needs the same --eval-strategy as --save-strategy)",
            long_help = None
        )
    )]
    #[serde(default)]
    pub load_best_model_at_end: bool,
    /// The metric that ranks checkpoints: `eval_loss` (or `loss`, its
    /// transformers alias), lower is better — the one metric the trainer
    /// computes. Default `eval_loss`.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            value_name = "NAME",
            help = "The metric that ranks checkpoints (lower is better): eval_loss"
        )
    )]
    #[serde(default)]
    pub metric_for_best_model: Option<String>,
    /// Seed of data sampling and dropout.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            default_value_t = defaults().seed,
            help = "Seed of initialisation, data order and dropout"
        )
    )]
    pub seed: u64,
    /// Draw a progress bar on stderr.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "no-progress",
            action = clap::ArgAction::SetFalse,
            help = "Hide the progress bar"
        )
    )]
    pub progress: bool,
    /// Start afresh in an output folder that holds an earlier run's
    /// checkpoints, deleting them (transformers' `overwrite_output_dir`).
    /// Without it (and without [`super::Trainer::resume`]) such a folder is an
    /// error, so two runs never mix.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Start afresh in an --output-dir that holds an earlier run, deleting its checkpoints, final model and logs (the cached tokens stay)",
            long_help = None
        )
    )]
    pub overwrite_output_dir: bool,
    /// Mixed precision (transformers' `bf16=True`): every matrix product
    /// of the forward pass and both of its gradient products on
    /// bf16-rounded operands with f32 accumulation, as under
    /// `torch.autocast("cpu", dtype=torch.bfloat16)`; weights, AdamW state,
    /// layer norms, softmax and the loss stay f32
    /// ([`kiln_autograd::autocast_bf16`]).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Mixed precision: matrix products (forward and backward) on bf16 operands with f32 accumulation, as torch.autocast(bfloat16); f32 weights and optimizer state, so checkpoints stay f32",
            long_help = None
        )
    )]
    pub bf16: bool,
    /// Gradient checkpointing (transformers' `gradient_checkpointing=True`,
    /// [`crate::gpt2::Gpt2::gradient_checkpointing_enable`]): each block is
    /// recomputed during backward instead of keeping its internals — much
    /// less activation memory for one more forward pass, with bit-identical
    /// gradients.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Recompute each block during backward instead of keeping its activations: far less memory for about a third more compute, with bit-identical gradients (transformers' gradient_checkpointing)",
            long_help = None
        )
    )]
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Print where the memory goes before the first step and after it
    /// ([`super::Trainer::memory_report`]).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Print where the memory goes (weights, gradients, optimizer state, activations per block, the measured peak) before and after the first step",
            long_help = None
        )
    )]
    #[serde(default)]
    pub memory_report: bool,
    /// Data-parallel runs: gradient bucket size in MiB (transformers'
    /// `ddp_bucket_cap_mb`; DDP's default 25).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            default_value_t = defaults().ddp_bucket_cap_mb,
            value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
            help = "Under mpirun: the gradient bucket size in MiB (DDP's default 25)"
        )
    )]
    #[serde(default = "default_bucket_mb")]
    pub ddp_bucket_cap_mb: usize,
    /// Data-parallel runs: reduce each bucket while backward computes the
    /// layers below it (as DDP does) rather than after backward. The
    /// weights are the same bits either way.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "no-ddp-overlap",
            action = clap::ArgAction::SetFalse,
            help = "Under mpirun: reduce gradients after backward instead of bucket by bucket during it (same weights; for measuring what overlap buys)",
            long_help = None
        )
    )]
    #[serde(default = "default_true")]
    pub ddp_overlap: bool,
}

/// The defaults of the command-line flags.
#[cfg(feature = "clap")]
fn defaults() -> TrainConfig {
    TrainConfig::default()
}

fn default_bucket_mb() -> usize {
    25
}

fn default_true() -> bool {
    true
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            output_dir: "runs/train".into(),
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            warmup_steps: 0,
            schedule: ScheduleKind::Linear,
            max_steps: None,
            epochs: 3.0,
            batch_size: 8,
            gradient_accumulation_steps: 1,
            max_grad_norm: 1.0,
            block_size: 1024,
            sampling: BatchSampling::Sequential,
            eval_strategy: IntervalStrategy::No,
            eval_steps: None,
            logging_steps: 10,
            save_strategy: IntervalStrategy::Steps,
            save_steps: 500,
            save_total_limit: None,
            load_best_model_at_end: false,
            metric_for_best_model: None,
            seed: 42,
            progress: true,
            overwrite_output_dir: false,
            bf16: false,
            gradient_checkpointing: false,
            memory_report: false,
            ddp_bucket_cap_mb: default_bucket_mb(),
            ddp_overlap: true,
        }
    }
}

fn no_strategy() -> IntervalStrategy {
    IntervalStrategy::No
}

fn steps_strategy() -> IntervalStrategy {
    IntervalStrategy::Steps
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
        let (b1, b2, eps) = (self.adam_beta1, self.adam_beta2, self.adam_epsilon);
        for (name, flag, b) in [
            ("adam_beta1", "adam-beta1", b1),
            ("adam_beta2", "adam-beta2", b2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad_arg(name, flag, "in [0, 1)", b));
            }
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(bad_arg(
                "adam_epsilon",
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
                "to evaluate every --logging-steps",
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
        if self.eval_steps.is_some() && self.eval_strategy != IntervalStrategy::Steps {
            return Err(ModelError::Input(format!(
                "eval_steps (--eval-steps) is set but eval_strategy (--eval-strategy) is {:?}, so it would be ignored; use eval_strategy Steps",
                self.eval_strategy
            )));
        }
        self.metric_name()?;
        if self.load_best_model_at_end {
            if self.eval_strategy != self.save_strategy
                || self.save_strategy == IntervalStrategy::No
            {
                return Err(ModelError::Input(format!(
                    "load_best_model_at_end (--load-best-model-at-end) needs the same evaluation and save strategy, and not `no`, so every checkpoint has a score; got --eval-strategy {:?} and --save-strategy {:?}",
                    self.eval_strategy, self.save_strategy
                )));
            }
            let every = self.eval_every();
            if self.save_strategy == IntervalStrategy::Steps
                && !self.save_steps.is_multiple_of(every)
            {
                return Err(ModelError::Input(format!(
                    "load_best_model_at_end (--load-best-model-at-end) needs --save-steps to be a multiple of --eval-steps, got {} and {every}",
                    self.save_steps
                )));
            }
        }
        Ok(())
    }

    /// Steps between evaluations under [`IntervalStrategy::Steps`]:
    /// `eval_steps`, else `logging_steps` (transformers' fallback).
    pub fn eval_every(&self) -> usize {
        self.eval_steps.unwrap_or(self.logging_steps).max(1)
    }

    /// The log-history key of `metric_for_best_model`: transformers
    /// prefixes `eval_` to a bare name, so `loss` and `eval_loss` are one.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a metric the trainer does not compute.
    pub fn metric_name(&self) -> Result<String> {
        let name = self.metric_for_best_model.as_deref().unwrap_or("eval_loss");
        let key = if name.starts_with("eval_") {
            name.to_string()
        } else {
            format!("eval_{name}")
        };
        if key != "eval_loss" {
            return Err(ModelError::Input(format!(
                "metric_for_best_model (--metric-for-best-model) {name:?} is not a metric the trainer computes; the evaluation metrics are: eval_loss"
            )));
        }
        Ok(key)
    }
}
