//! Training checkpoints: `checkpoint-<step>/` folders that survive a crash,
//! a full disk and rotation.
//!
//! A checkpoint holds the model as [`super::TrainModel::save_pretrained`]
//! writes it (GPT-2: Hugging Face layout, `config.json` and
//! `model.safetensors`), the optimizer state (`optimizer.safetensors`),
//! transformers' `trainer_state.json` ([`super::HfTrainerState`]), Kiln's
//! resume state (`kiln_state.json`: step, data position, generator states,
//! log history), the tokenizer files when the trainer has a tokenizer and,
//! written last, `kiln_manifest.json`: every
//! file's size and CRC-32. The protocol, each step of which is safe to be
//! killed at:
//!
//! 1. **Write**: every file goes into `checkpoint-<step>.kiln-tmp/` and is
//!    synced; the manifest is written last. A folder whose name ends in
//!    `.kiln-tmp` is never read as a checkpoint.
//! 2. **Publish**: one rename turns `checkpoint-<step>.kiln-tmp` into
//!    `checkpoint-<step>`. Re-saving a step that exists first renames the
//!    old folder to `checkpoint-<step>.kiln-old`; a kill between the two
//!    renames leaves both leftovers, and [`repair_output_dir`] puts the
//!    complete one back under the real name.
//! 3. **Delete** (rotation): a folder is renamed out of the `checkpoint-*`
//!    namespace (`checkpoint-<step>.kiln-del`) before anything in it is
//!    removed, so a half-deleted checkpoint never keeps a real name.
//!
//! "Complete" means a manifest that parses and lists the model's weights and
//! the trainer's files ([`CHECKPOINT_FILES`]) with their sizes ([`check_folder`], cheap); loading for resume also checks
//! every CRC ([`verify_folder`]). The final model (`final/`) is published
//! the same way.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_nn::state_dict::{LoadOptions, StateDict};
use kiln_tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::data::BatcherState;
use super::model::{TrainModel, MODEL_WEIGHTS};
use crate::gpt2::{load_model_dir_with, Gpt2};
use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// The file, written last into a checkpoint, that says it is complete.
pub const MANIFEST: &str = "kiln_manifest.json";

/// Kiln's own resume state in a checkpoint ([`TrainerState`]), beside
/// transformers' `trainer_state.json`.
pub const KILN_STATE: &str = "kiln_state.json";

/// The files every checkpoint holds besides the manifest: the model's
/// weights (`model.safetensors` — or, for a LoRA run, the adapter's
/// [`ADAPTER_FILES`]) and the optimizer's and trainer's. The model may
/// write more (GPT-2 adds its `config.json`); those are checked too, as
/// every file the manifest lists is.
pub const CHECKPOINT_FILES: [&str; 3] =
    [MODEL_WEIGHTS, "optimizer.safetensors", "trainer_state.json"];

/// What a LoRA run's checkpoint holds instead of the model files: PEFT's
/// adapter folder.
pub const ADAPTER_FILES: [&str; 2] = [crate::gpt2::ADAPTER_CONFIG, crate::gpt2::ADAPTER_WEIGHTS];

/// Where in saving or rotating a fault hook runs; returning an error there
/// simulates a crash at that instant: nothing after it runs, nothing is
/// cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Every file and the manifest of `<name>.kiln-tmp` are written and
    /// synced; nothing is renamed yet.
    FilesWritten,
    /// Re-saving: the old folder was renamed to `<name>.kiln-old`, the new
    /// one is not yet published.
    OldMovedAside,
    /// Rotation: the victim was renamed to `<name>.kiln-del` and one file of
    /// it removed; the rest is not yet deleted.
    Deleting,
}

/// A fault-injection hook (tests); production code passes [`no_faults`].
pub type FaultHook = dyn Fn(FaultPoint) -> std::io::Result<()>;

/// The hook that injects nothing.
pub fn no_faults(_: FaultPoint) -> std::io::Result<()> {
    Ok(())
}

/// One entry of the log history: a training point (`loss` set: the mean
/// loss of the steps since the previous one, as transformers logs it) or
/// an evaluation point (`eval_loss` set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPoint {
    /// Optimizer step (1-based: after that many updates).
    pub step: usize,
    /// Epochs completed, fractional (`step / steps per epoch`).
    #[serde(default)]
    pub epoch: f64,
    /// Mean training loss since the previous training point.
    pub loss: Option<f64>,
    /// Gradient norm of this step, before clipping.
    #[serde(default)]
    pub grad_norm: Option<f64>,
    /// Learning rate of this step.
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// Validation loss at that step, for eval points.
    pub eval_loss: Option<f64>,
    /// Seconds the evaluation took.
    #[serde(default)]
    pub eval_runtime: Option<f64>,
    /// Rows (blocks) and batches the evaluation scored.
    #[serde(default)]
    pub eval_rows: Option<(usize, usize)>,
}

impl LogPoint {
    /// A training point.
    pub fn train(step: usize, epoch: f64, loss: f64, grad_norm: f64, lr: f64) -> LogPoint {
        LogPoint {
            step,
            epoch,
            loss: Some(loss),
            grad_norm: Some(grad_norm),
            learning_rate: Some(lr),
            eval_loss: None,
            eval_runtime: None,
            eval_rows: None,
        }
    }
}

/// What `kiln_state.json` holds: everything an exact resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Training data position.
    pub batcher: BatcherState,
    /// Dropout generator states of checkpoints before dropout was seeded
    /// per micro-batch (read and ignored; now always empty: each
    /// micro-batch's masks follow from the seed and its index).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropout_rngs: Vec<([u64; 4], Option<u64>)>,
    /// Loss history so far.
    pub history: Vec<LogPoint>,
    /// Input tokens trained on so far.
    #[serde(default)]
    pub tokens_seen: u64,
    /// Sum and count of the step losses since the last training point.
    #[serde(default)]
    pub pending_loss: (f64, usize),
    /// Best `metric_for_best_model` so far, and the step it was reached at.
    #[serde(default)]
    pub best: Option<(f64, usize)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    bytes: u64,
    crc32: u32,
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The folder name of the checkpoint at `step`.
pub fn checkpoint_name(step: usize) -> String {
    format!("checkpoint-{step}")
}

/// The step of a folder named exactly `checkpoint-<step>`.
pub fn checkpoint_step(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("checkpoint-")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn read_manifest(dir: &Path) -> std::result::Result<Manifest, String> {
    let text = std::fs::read(dir.join(MANIFEST)).map_err(|e| format!("{MANIFEST}: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("{MANIFEST} is corrupt: {e}"))
}

/// Cheap completeness check of a published folder: the manifest parses and
/// every file it lists (and, for a checkpoint, every file in
/// [`CHECKPOINT_FILES`]) exists with its recorded size.
///
/// # Errors
/// What is missing or wrong, naming the file.
pub fn check_folder(dir: &Path) -> std::result::Result<(), String> {
    let m = read_manifest(dir)?;
    let is_checkpoint = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| checkpoint_step(n).is_some());
    if is_checkpoint {
        let adapter = m.files.contains_key(ADAPTER_FILES[0]);
        let needed: Vec<&str> = if adapter {
            ADAPTER_FILES
                .iter()
                .chain(&CHECKPOINT_FILES[1..])
                .copied()
                .collect()
        } else {
            CHECKPOINT_FILES.to_vec()
        };
        if let Some(f) = needed.iter().find(|f| !m.files.contains_key(**f)) {
            return Err(format!("the manifest does not list {f}"));
        }
    }
    for (name, entry) in &m.files {
        let len = std::fs::metadata(dir.join(name))
            .map_err(|e| format!("{name}: {e}"))?
            .len();
        if len != entry.bytes {
            return Err(format!(
                "{name} is {len} bytes, the manifest says {}",
                entry.bytes
            ));
        }
    }
    Ok(())
}

fn crc_of(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize()))
}

/// Full check of a published folder: [`check_folder`], then every file's
/// CRC-32 against the manifest.
///
/// # Errors
/// [`ModelError::Config`] naming the folder and the first bad file.
pub fn verify_folder(dir: &Path) -> Result<()> {
    let bad = |msg: String| ModelError::Config {
        path: dir.to_path_buf(),
        msg: format!("incomplete or corrupt: {msg}"),
    };
    check_folder(dir).map_err(bad)?;
    let m = read_manifest(dir).map_err(bad)?;
    for (name, entry) in &m.files {
        let (_, crc) = crc_of(&dir.join(name)).map_err(io(&dir.join(name)))?;
        if crc != entry.crc32 {
            return Err(bad(format!(
                "{name} has CRC-32 {crc:08x}, the manifest says {:08x}",
                entry.crc32
            )));
        }
    }
    Ok(())
}

/// Complete checkpoints in `output_dir` (see [`check_folder`]), oldest
/// first, as (step, path).
pub fn list_checkpoints(output_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(output_dir) else {
        return Vec::new();
    };
    let mut out: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step = checkpoint_step(e.file_name().to_str()?)?;
            check_folder(&e.path()).is_ok().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The newest folder named `checkpoint-<step>` in `output_dir`, checked
/// with [`check_folder`]; `None` if there is none.
///
/// # Errors
/// [`ModelError::Config`] naming the newest folder when it is incomplete
/// (a Kiln that wrote no manifest, or damage from outside), so a resume
/// never silently steps back to an older checkpoint.
pub fn newest_checkpoint(output_dir: &Path) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(output_dir) else {
        return Ok(None);
    };
    let newest = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((checkpoint_step(e.file_name().to_str()?)?, e.path())))
        .max();
    match newest {
        None => Ok(None),
        Some((_, dir)) => match check_folder(&dir) {
            Ok(()) => Ok(Some(dir)),
            Err(msg) => Err(ModelError::Config {
                path: dir,
                msg: format!(
                    "incomplete checkpoint ({msg}); move it away to resume from an earlier one"
                ),
            }),
        },
    }
}

fn sync_dir(dir: &Path) {
    // Persist renames; not every platform lets a folder be opened.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes `manifest` for the files in `dir` (every regular file but the
/// manifest itself), synced.
fn write_manifest(dir: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == MANIFEST || !e.file_type().map_err(io(dir))?.is_file() {
            continue;
        }
        let (bytes, crc32) = crc_of(&e.path()).map_err(io(&e.path()))?;
        files.insert(name, FileEntry { bytes, crc32 });
    }
    let json =
        serde_json::to_vec_pretty(&Manifest { format: 1, files }).expect("manifest serialises");
    crate::gpt2::write_atomic(&dir.join(MANIFEST), &json)
}

/// Publishes the folder `output_dir/name` by the protocol above: `write`
/// fills a fresh `name.kiln-tmp/`, the manifest is added, and renames make
/// it visible. A failed write removes the temporary folder; a hook error
/// simulates a crash (see [`FaultPoint`]).
///
/// # Errors
/// [`ModelError::Io`] naming the path that failed; the folder previously
/// published under `name`, if any, is untouched.
pub fn publish_folder(
    output_dir: &Path,
    name: &str,
    write: &dyn Fn(&Path) -> Result<()>,
    hook: &FaultHook,
) -> Result<PathBuf> {
    std::fs::create_dir_all(output_dir).map_err(io(output_dir))?;
    let final_dir = output_dir.join(name);
    let tmp = output_dir.join(format!("{name}.kiln-tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let written = std::fs::create_dir_all(&tmp)
        .map_err(io(&tmp))
        .and_then(|()| write(&tmp))
        .and_then(|()| write_manifest(&tmp));
    if let Err(e) = written {
        // Disk full or unwritable: leave nothing behind.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sync_dir(&tmp);
    hook(FaultPoint::FilesWritten).map_err(io(&tmp))?;
    if final_dir.exists() {
        let old = output_dir.join(format!("{name}.kiln-old"));
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(&final_dir, &old).map_err(io(&final_dir))?;
        hook(FaultPoint::OldMovedAside).map_err(io(&old))?;
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        sync_dir(output_dir);
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    }
    sync_dir(output_dir);
    Ok(final_dir)
}

/// Writes a checkpoint by the protocol above and returns its path: the
/// model by [`TrainModel::save_pretrained`] and, with a tokenizer, its
/// files ([`Tokenizer::save_pretrained`] with the given
/// `model_max_length`), so a GPT-2 folder opens with
/// `AutoTokenizer.from_pretrained` and `pipeline`.
///
/// # Errors
/// [`ModelError::Io`] naming the folder if anything cannot be written; the
/// existing checkpoints are untouched in that case.
pub fn save_checkpoint<M: TrainModel + ?Sized>(
    output_dir: &Path,
    model: &M,
    tokenizer: Option<(&Tokenizer, usize)>,
    optimizer_state: &BTreeMap<String, Tensor>,
    state: &TrainerState,
    hf_state: &super::HfTrainerState,
    hook: &FaultHook,
) -> Result<PathBuf> {
    let write = |dir: &Path| -> Result<()> {
        model.save_pretrained(dir)?;
        if let Some((tok, max_len)) = tokenizer {
            tok.save_pretrained(dir, max_len)?;
        }
        let mut opt = StateDict::new();
        for (k, v) in optimizer_state {
            opt.insert(k.clone(), v.clone());
        }
        opt.save(dir.join("optimizer.safetensors"))
            .map_err(kiln_nn::NnError::from)?;
        let json = serde_json::to_vec_pretty(state).expect("trainer state serialises");
        crate::gpt2::write_atomic(&dir.join(KILN_STATE), &json)?;
        hf_state.save(&dir.join("trainer_state.json"))
    };
    publish_folder(output_dir, &checkpoint_name(state.step), &write, hook)
}

/// Removes a folder by first renaming it out of its namespace to
/// `<name>.kiln-del`, so a crash midway never leaves a half-deleted folder
/// under its real name.
///
/// # Errors
/// [`ModelError::Io`] naming the folder.
pub fn delete_folder(path: &Path, hook: &FaultHook) -> Result<()> {
    let mut doomed = path.as_os_str().to_owned();
    doomed.push(".kiln-del");
    let doomed = PathBuf::from(doomed);
    std::fs::rename(path, &doomed).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    let _ = std::fs::remove_file(doomed.join(MANIFEST));
    hook(FaultPoint::Deleting).map_err(io(&doomed))?;
    std::fs::remove_dir_all(&doomed).map_err(io(&doomed))
}

/// Deletes the oldest complete checkpoints so at most `keep` remain, each
/// by [`delete_folder`] — transformers' `rotate_checkpoints`: the newest
/// always survives (to resume from), and so does `protect` (the best
/// checkpoint's step under `load_best_model_at_end`), even when that
/// leaves more than `keep`.
///
/// # Errors
/// [`ModelError::Io`] if a folder cannot be removed.
pub fn rotate_checkpoints(
    output_dir: &Path,
    keep: usize,
    protect: Option<usize>,
    hook: &FaultHook,
) -> Result<()> {
    let all = list_checkpoints(output_dir);
    for step in checkpoints_to_delete(
        &all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        keep,
        protect,
    ) {
        if let Some((_, path)) = all.iter().find(|(s, _)| *s == step) {
            delete_folder(path, hook)?;
        }
    }
    Ok(())
}

/// The steps [`rotate_checkpoints`] deletes from `steps` (ascending),
/// oldest first.
pub fn checkpoints_to_delete(steps: &[usize], keep: usize, protect: Option<usize>) -> Vec<usize> {
    let Some(&newest) = steps.last() else {
        return Vec::new();
    };
    let protected = |s: usize| s == newest || Some(s) == protect;
    let n_protected = steps.iter().filter(|&&s| protected(s)).count();
    let keep = keep.max(1).max(n_protected);
    let mut remaining = steps.len();
    let mut doomed = Vec::new();
    for &s in steps {
        if remaining <= keep {
            break;
        }
        if !protected(s) {
            doomed.push(s);
            remaining -= 1;
        }
    }
    doomed
}

/// Puts `output_dir` back into a clean state after a crash, and returns a
/// line for each thing it did:
///
/// - `X.kiln-old` without `X` (a kill between the two renames of a
///   re-save): the complete `X.kiln-tmp` becomes `X` if there is one, else
///   `X.kiln-old` goes back;
/// - then every other `*.kiln-tmp`, `*.kiln-old` and `*.kiln-del` folder or
///   file in `output_dir`, `output_dir/cache` and `output_dir/final` is
///   removed.
///
/// Only call it while holding the folder's lock
/// ([`super::OutputLock`]): it assumes no one else is writing there.
///
/// # Errors
/// [`ModelError::Io`] naming the path that could not be renamed or removed.
pub fn repair_output_dir(output_dir: &Path) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in names(output_dir) {
        let Some(base) = name.strip_suffix(".kiln-old") else {
            continue;
        };
        let real = output_dir.join(base);
        if real.exists() {
            continue;
        }
        let tmp = output_dir.join(format!("{base}.kiln-tmp"));
        let from = if check_folder(&tmp).is_ok() {
            tmp
        } else {
            output_dir.join(&name)
        };
        std::fs::rename(&from, &real).map_err(io(&from))?;
        notes.push(format!(
            "restored {} from {}",
            real.display(),
            from.display()
        ));
    }
    for dir in [
        output_dir.to_path_buf(),
        output_dir.join("cache"),
        output_dir.join("final"),
    ] {
        for name in names(&dir) {
            if !name.ends_with(".kiln-tmp")
                && !name.ends_with(".kiln-old")
                && !name.ends_with(".kiln-del")
            {
                continue;
            }
            let path = dir.join(&name);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io(&path))?;
            notes.push(format!("removed the leftover {}", path.display()));
        }
    }
    sync_dir(output_dir);
    Ok(notes)
}

/// A loaded checkpoint of a GPT-2 run.
pub struct Checkpoint {
    /// The model, for a full fine-tune's checkpoint.
    pub model: Option<Gpt2>,
    /// The adapter weights by parameter name (`h.0.attn.c_attn.lora_A.weight`),
    /// for a LoRA run's checkpoint.
    pub adapter: Option<BTreeMap<String, Tensor>>,
    /// The optimizer state.
    pub optimizer: BTreeMap<String, Tensor>,
    /// The trainer state.
    pub state: TrainerState,
}

/// Loads the checkpoint of a GPT-2 run in `dir` after checking every file
/// against its manifest ([`verify_folder`]). (The trainer resumes any
/// [`TrainModel`] with [`TrainModel::load_weights`] and
/// [`load_trainer_files`].) Tensors are copied into memory, not
/// mapped: the folder may be rotated away or rewritten while training goes
/// on.
///
/// # Errors
/// [`ModelError::Config`] naming the folder for an incomplete or corrupt
/// checkpoint; [`ModelError::Io`] / [`ModelError::Config`] naming the file
/// for a part that cannot be read or parsed.
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint> {
    verify_folder(dir)?;
    let copy = LoadOptions {
        copy: true,
        ..Default::default()
    };
    let (model, adapter) = if dir.join(ADAPTER_FILES[0]).exists() {
        let path = dir.join(ADAPTER_FILES[1]);
        let dict = StateDict::load_with(&path, copy).map_err(kiln_nn::NnError::from)?;
        let weights = dict
            .iter()
            .map(|(k, v)| {
                let name = k.strip_prefix(crate::gpt2::PEFT_PREFIX).unwrap_or(k);
                (name.to_string(), v.clone())
            })
            .collect();
        (None, Some(weights))
    } else {
        (
            Some(load_model_dir_with(dir, copy, kiln_tensor::DType::F32)?),
            None,
        )
    };
    let (optimizer, state) = load_trainer_files(dir)?;
    Ok(Checkpoint {
        model,
        adapter,
        optimizer,
        state,
    })
}

/// The optimizer state and Kiln's trainer state of the checkpoint in `dir`
/// (copied into memory). The caller verifies the folder first
/// ([`verify_folder`]).
///
/// # Errors
/// [`ModelError::Io`] / [`ModelError::Config`] naming the file for a part
/// that cannot be read or parsed.
pub fn load_trainer_files(dir: &Path) -> Result<(BTreeMap<String, Tensor>, TrainerState)> {
    let copy = LoadOptions {
        copy: true,
        ..Default::default()
    };
    let opt_path = dir.join("optimizer.safetensors");
    let dict = StateDict::load_with(&opt_path, copy).map_err(kiln_nn::NnError::from)?;
    let optimizer = dict
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    // Checkpoints written before transformers' trainer_state.json kept
    // Kiln's state under that name.
    let mut state_path = dir.join(KILN_STATE);
    if !state_path.exists() {
        state_path = dir.join("trainer_state.json");
    }
    let text = std::fs::read(&state_path).map_err(io(&state_path))?;
    let state: TrainerState = serde_json::from_slice(&text).map_err(|e| ModelError::Config {
        path: state_path.clone(),
        msg: format!("corrupt trainer state: {e}"),
    })?;
    Ok((optimizer, state))
}
