//! Fine-tuning and training GPT-2 — or any language model that implements
//! [`TrainModel`]: data, the loop, checkpoints.

pub mod checkpoint;
mod config;
pub mod data;
mod eval;
mod hf_state;
mod memory_report;
mod model;
mod output_lock;
mod plot;
pub mod sources;
mod trainer;

pub use config::{IntervalStrategy, ScheduleKind, TrainConfig};
pub use data::{collect_files, load_tokens, load_tokens_with, Batch, BatchSampling, Batcher};
pub use eval::{evaluate, evaluate_strided, EvalLoss};
pub use hf_state::{hf_log_entry, train_summary_entry, HfTrainerState, RunFacts};
pub use memory_report::MemoryReport;
pub use model::{TrainModel, MODEL_WEIGHTS};
pub use output_lock::{OutputLock, LOCK_FILE};
pub use plot::{plot_loss_curve, read_log};
pub use trainer::{has_checkpoint, StepStats, TrainSummary, Trainer};
