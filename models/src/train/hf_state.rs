//! `trainer_state.json` in the shape of transformers' `TrainerState`, so
//! `TrainerState.load_from_json(path)` reads what Kiln writes and tools
//! that plot a transformers run's `log_history` plot a Kiln run too.
//!
//! transformers builds the dataclass with `cls(**json)`, so the file must
//! hold exactly its fields — no more: Kiln's own resume data lives beside
//! it in `kiln_state.json` ([`super::checkpoint::TrainerState`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::checkpoint::LogPoint;
use crate::Result;

/// transformers' `TrainerState` fields, in the sorted order
/// `save_to_json` writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfTrainerState {
    /// Step of the best checkpoint by `metric_for_best_model`.
    pub best_global_step: Option<usize>,
    /// Best `metric_for_best_model` value so far.
    pub best_metric: Option<f64>,
    /// `<output_dir>/checkpoint-<best_global_step>`.
    pub best_model_checkpoint: Option<String>,
    /// Fractional epochs completed.
    pub epoch: f64,
    /// Steps between evaluations.
    pub eval_steps: usize,
    /// Optimizer steps completed.
    pub global_step: usize,
    /// Always false (no hyper-parameter search).
    pub is_hyper_param_search: bool,
    /// Always true (one process).
    pub is_local_process_zero: bool,
    /// Always true (one process).
    pub is_world_process_zero: bool,
    /// Training and evaluation entries, as transformers logs them.
    pub log_history: Vec<Map<String, Value>>,
    /// Steps between training log entries.
    pub logging_steps: usize,
    /// Optimizer steps of the whole run.
    pub max_steps: usize,
    /// Input tokens trained on.
    pub num_input_tokens_seen: u64,
    /// Epochs of the whole run, rounded up.
    pub num_train_epochs: usize,
    /// Steps between checkpoints.
    pub save_steps: usize,
    /// The `TrainerControl` flags transformers restores on resume.
    pub stateful_callbacks: Value,
    /// Floating-point operations so far (transformers' estimate:
    /// 6 × non-embedding parameters × tokens).
    pub total_flos: f64,
    /// Rows per device per micro-batch.
    pub train_batch_size: Option<usize>,
    /// Always null.
    pub trial_name: Option<String>,
    /// Always null.
    pub trial_params: Option<Value>,
}

/// The scalar facts of a run that [`HfTrainerState`] reports besides the
/// log history.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Optimizer steps completed.
    pub global_step: usize,
    /// Optimizer steps of the whole run.
    pub max_steps: usize,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// Steps between evaluations, training logs and checkpoints.
    pub eval_steps: usize,
    /// See [`HfTrainerState::logging_steps`].
    pub logging_steps: usize,
    /// See [`HfTrainerState::save_steps`].
    pub save_steps: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Input tokens trained on.
    pub tokens_seen: u64,
    /// Parameters outside the embeddings, for the FLOP estimate.
    pub non_embedding_params: u64,
    /// Best metric and its step.
    pub best: Option<(f64, usize)>,
    /// `<output_dir>`, as the user gave it.
    pub output_dir: String,
    /// Whether the run has reached its last step (the control flags say
    /// training stops).
    pub finished: bool,
}

/// One log entry in transformers' keys.
pub fn hf_log_entry(p: &LogPoint) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("epoch".into(), json!(p.epoch));
    m.insert("step".into(), json!(p.step));
    if let Some(loss) = p.loss {
        m.insert("loss".into(), json!(loss));
        if let Some(g) = p.grad_norm {
            m.insert("grad_norm".into(), json!(g));
        }
        if let Some(lr) = p.learning_rate {
            m.insert("learning_rate".into(), json!(lr));
        }
    }
    if let Some(l) = p.eval_loss {
        m.insert("eval_loss".into(), json!(l));
        if let Some(t) = p.eval_runtime {
            m.insert("eval_runtime".into(), json!(round4(t)));
            if let Some((rows, batches)) = p.eval_rows {
                let per_s = |n: usize| round3(n as f64 / t.max(1e-9));
                m.insert("eval_samples_per_second".into(), json!(per_s(rows)));
                m.insert("eval_steps_per_second".into(), json!(per_s(batches)));
            }
        }
    }
    m
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

impl HfTrainerState {
    /// The state after `facts.global_step` steps with `history` logged.
    pub fn new(facts: &RunFacts, history: &[LogPoint]) -> HfTrainerState {
        let per_epoch = facts.steps_per_epoch.max(1);
        let (best_metric, best_global_step) = match facts.best {
            Some((m, s)) => (Some(m), Some(s)),
            None => (None, None),
        };
        HfTrainerState {
            best_global_step,
            best_metric,
            best_model_checkpoint: best_global_step.map(|s| {
                Path::new(&facts.output_dir)
                    .join(super::checkpoint::checkpoint_name(s))
                    .to_string_lossy()
                    .into_owned()
            }),
            epoch: facts.global_step as f64 / per_epoch as f64,
            eval_steps: facts.eval_steps,
            global_step: facts.global_step,
            is_hyper_param_search: false,
            is_local_process_zero: true,
            is_world_process_zero: true,
            log_history: history.iter().map(hf_log_entry).collect(),
            logging_steps: facts.logging_steps,
            max_steps: facts.max_steps,
            num_input_tokens_seen: facts.tokens_seen,
            num_train_epochs: facts.max_steps.div_ceil(per_epoch),
            save_steps: facts.save_steps,
            stateful_callbacks: json!({
                "TrainerControl": {
                    "args": {
                        "should_epoch_stop": false,
                        "should_evaluate": false,
                        "should_log": false,
                        "should_save": true,
                        "should_training_stop": facts.finished,
                    },
                    "attributes": {}
                }
            }),
            total_flos: 6.0 * facts.non_embedding_params as f64 * facts.tokens_seen as f64,
            train_batch_size: Some(facts.batch_size),
            trial_name: None,
            trial_params: None,
        }
    }

    /// Writes the state as transformers' `save_to_json` does (sorted keys,
    /// two-space indent, a final newline), atomically.
    ///
    /// # Errors
    /// [`crate::ModelError::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).expect("trainer state serialises");
        text.push(b'\n');
        crate::gpt2::write_atomic(path, &text)
    }

    /// Reads a `trainer_state.json` written by Kiln or by transformers.
    ///
    /// # Errors
    /// [`crate::ModelError::Io`] / [`crate::ModelError::Config`] naming the
    /// file.
    pub fn load(path: &Path) -> Result<HfTrainerState> {
        let text = std::fs::read(path).map_err(super::checkpoint::io(path))?;
        serde_json::from_slice(&text).map_err(|e| crate::ModelError::Config {
            path: path.to_path_buf(),
            msg: format!("not a transformers trainer_state.json: {e}"),
        })
    }
}

/// The entry transformers appends to `log_history` when training ends
/// (`train_runtime`, `train_loss`, …).
pub fn train_summary_entry(
    step: usize,
    epoch: f64,
    seconds: f64,
    rows: usize,
    mean_loss: f64,
    total_flos: f64,
) -> Map<String, Value> {
    let per_s = |n: f64| round3(n / seconds.max(1e-9));
    let mut m = Map::new();
    m.insert("epoch".into(), json!(epoch));
    m.insert("step".into(), json!(step));
    m.insert("total_flos".into(), json!(total_flos));
    m.insert("train_loss".into(), json!(mean_loss));
    m.insert("train_runtime".into(), json!(round4(seconds)));
    m.insert("train_samples_per_second".into(), json!(per_s(rows as f64)));
    m.insert("train_steps_per_second".into(), json!(per_s(step as f64)));
    m
}
