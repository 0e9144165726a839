//! Training checkpoints: `checkpoint-<step>/` folders that survive a crash.
//!
//! A checkpoint holds the model in Hugging Face layout (`config.json`,
//! `model.safetensors`), the optimizer state (`optimizer.safetensors`) and
//! the trainer state (`trainer_state.json`: step, data position, generator
//! states, log history). It is written into `checkpoint-<step>.kiln-tmp/`,
//! every file synced, and only then renamed to `checkpoint-<step>/` — a
//! rename is atomic, so a kill at any moment leaves either the old set of
//! checkpoints or the new one, never a half-written folder under a final
//! name. Leftover `.kiln-tmp` folders are ignored and cleaned up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_nn::state_dict::StateDict;
use kiln_tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::data::BatcherState;
use crate::gpt2::{load_model_dir, save_model_dir, Gpt2};
use crate::{ModelError, Result};

/// One logged point of the loss curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPoint {
    /// Optimizer step (1-based: after that many updates).
    pub step: usize,
    /// Training loss of that step, or `None` for an eval point.
    pub loss: Option<f64>,
    /// Validation loss at that step, for eval points.
    pub eval_loss: Option<f64>,
}

/// What `trainer_state.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Training data position.
    pub batcher: BatcherState,
    /// Dropout generator states, in `Gpt2::dropouts` order.
    pub dropout_rngs: Vec<([u64; 4], Option<u64>)>,
    /// Loss history so far.
    pub history: Vec<LogPoint>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The folder name of the checkpoint at `step`.
pub fn checkpoint_name(step: usize) -> String {
    format!("checkpoint-{step}")
}

/// Complete checkpoints in `output_dir`, oldest first, as (step, path).
pub fn list_checkpoints(output_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(output_dir) else {
        return Vec::new();
    };
    let mut out: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse::<usize>().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn sync_dir(dir: &Path) {
    // Persist the rename itself; not every platform lets a folder be opened.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes a checkpoint atomically and returns its path. `before_commit`
/// runs after every file is written and synced but before the rename; tests
/// use it to simulate a crash at the worst moment.
///
/// # Errors
/// [`ModelError::Io`] naming the folder if anything cannot be written; the
/// existing checkpoints are untouched in that case.
pub fn save_checkpoint(
    output_dir: &Path,
    model: &Gpt2,
    optimizer_state: &BTreeMap<String, Tensor>,
    state: &TrainerState,
    before_commit: &dyn Fn() -> std::io::Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(output_dir).map_err(io(output_dir))?;
    let final_dir = output_dir.join(checkpoint_name(state.step));
    let tmp = output_dir.join(format!("{}.kiln-tmp", checkpoint_name(state.step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    save_model_dir(model, &tmp)?;
    let mut opt = StateDict::new();
    for (k, v) in optimizer_state {
        opt.insert(k.clone(), v.clone());
    }
    opt.save(tmp.join("optimizer.safetensors"))
        .map_err(kiln_nn::NnError::from)?;
    let json = serde_json::to_vec_pretty(state).expect("trainer state serialises");
    crate::gpt2::write_atomic(&tmp.join("trainer_state.json"), &json)?;
    sync_dir(&tmp);
    before_commit().map_err(io(&tmp))?;
    if final_dir.exists() {
        // Re-saving a step (after a resume): move the old one aside first.
        let old = output_dir.join(format!("{}.kiln-old", checkpoint_name(state.step)));
        std::fs::rename(&final_dir, &old).map_err(io(&final_dir))?;
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    }
    sync_dir(output_dir);
    Ok(final_dir)
}

/// Deletes the oldest checkpoints so at most `keep` remain (never the
/// newest), and removes leftover temporary folders.
///
/// # Errors
/// [`ModelError::Io`] if a folder cannot be removed.
pub fn rotate_checkpoints(output_dir: &Path, keep: usize) -> Result<()> {
    let all = list_checkpoints(output_dir);
    let excess = all.len().saturating_sub(keep.max(1));
    for (_, path) in all.into_iter().take(excess) {
        std::fs::remove_dir_all(&path).map_err(io(&path))?;
    }
    Ok(())
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// The model weights.
    pub model: Gpt2,
    /// The optimizer state.
    pub optimizer: BTreeMap<String, Tensor>,
    /// The trainer state.
    pub state: TrainerState,
}

/// Loads the checkpoint in `dir`.
///
/// # Errors
/// [`ModelError::Io`] / [`ModelError::Config`] naming the file for a
/// missing or corrupt part.
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let model = load_model_dir(dir)?;
    let opt_path = dir.join("optimizer.safetensors");
    let dict = StateDict::load(&opt_path).map_err(kiln_nn::NnError::from)?;
    let optimizer = dict
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read(&state_path).map_err(io(&state_path))?;
    let state: TrainerState = serde_json::from_slice(&text).map_err(|e| ModelError::Config {
        path: state_path.clone(),
        msg: format!("corrupt trainer state: {e}"),
    })?;
    Ok(Checkpoint {
        model,
        optimizer,
        state,
    })
}
