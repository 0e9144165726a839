//! The trainer's persistent side: its resume state, transformers'
//! `trainer_state.json`, saving, resuming, and the best checkpoint.

use std::path::{Path, PathBuf};

use kiln_nn::optim::Optimizer;

use super::super::checkpoint::{
    checkpoint_name, delete_folder, list_checkpoints, load_trainer_files, rotate_checkpoints,
    save_checkpoint, verify_folder, TrainerState,
};
use super::super::hf_state::{HfTrainerState, RunFacts};
use super::super::model::TrainModel;
use super::{all_finite, Trainer};
use crate::{ModelError, Result};

impl<M: TrainModel> Trainer<M> {
    pub(super) fn state(&self) -> TrainerState {
        TrainerState {
            step: self.step,
            batcher: self.train.state(),
            dropout_rngs: Vec::new(),
            history: self.history.clone(),
            tokens_seen: self.tokens_seen,
            pending_loss: self.pending_loss,
            best: self.best,
        }
    }

    /// Fractional epochs completed.
    pub fn epoch(&self) -> f64 {
        self.step as f64 / self.steps_per_epoch as f64
    }

    /// The best `metric_for_best_model` value so far and its step.
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best
    }

    /// transformers' `trainer_state.json` for the run so far.
    pub fn hf_state(&self) -> HfTrainerState {
        let embeddings: usize = self
            .model
            .named_parameters()
            .iter()
            .filter(|(n, _)| n.ends_with("wte.weight") || n.ends_with("wpe.weight"))
            .map(|(_, p)| p.value().numel())
            .sum();
        // transformers counts every weight, trained or frozen.
        let all: usize = self
            .model
            .parameters()
            .iter()
            .map(|p| p.value().numel())
            .sum();
        let facts = RunFacts {
            global_step: self.step,
            max_steps: self.total_steps,
            steps_per_epoch: self.steps_per_epoch,
            eval_steps: self.cfg.eval_every(),
            logging_steps: self.cfg.logging_steps,
            save_steps: self.cfg.save_steps,
            batch_size: self.cfg.batch_size,
            tokens_seen: self.tokens_seen,
            non_embedding_params: all.saturating_sub(embeddings) as u64,
            best: self.best,
            output_dir: self.cfg.output_dir.to_string_lossy().into_owned(),
            finished: self.step >= self.total_steps,
        };
        HfTrainerState::new(&facts, &self.history)
    }

    /// Saves `checkpoint-<step>/` by the crash-safe protocol of
    /// [`crate::train::checkpoint`] and rotates old ones. A checkpoint is only
    /// written when every weight, every optimizer moment and the last
    /// logged loss are finite, so each one on disk is a good place to
    /// resume from.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the first non-finite tensor;
    /// [`ModelError::Io`] naming the folder. Earlier checkpoints stay
    /// intact either way.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let opt_state = self.opt.state_tensors();
        let weights = self
            .model
            .named_parameters()
            .into_iter()
            .map(|(n, p)| (n, p.value()));
        for (name, t) in weights.chain(opt_state.iter().map(|(n, t)| (n.clone(), t.clone()))) {
            if !all_finite(&t)? {
                return Err(ModelError::Input(format!(
                    "not saving {}: {name} holds NaN or infinite values after step {} (training diverged); try a lower --learning-rate",
                    crate::train::checkpoint::checkpoint_name(self.step),
                    self.step
                )));
            }
        }
        if let Some(bad) = self
            .history
            .iter()
            .rev()
            .find_map(|p| p.loss)
            .filter(|l| !l.is_finite())
        {
            return Err(ModelError::Input(format!(
                "not saving {}: the last loss is {bad}",
                crate::train::checkpoint::checkpoint_name(self.step)
            )));
        }
        let dir = save_checkpoint(
            &self.cfg.output_dir,
            &self.model,
            self.tokenizer_files(),
            &opt_state,
            &self.state(),
            &self.hf_state(),
            &*self.fault_hook,
        )?;
        if let Some(keep) = self.cfg.save_total_limit {
            let protect = self.best.map(|(_, s)| s);
            rotate_checkpoints(&self.cfg.output_dir, keep, protect, &*self.fault_hook)?;
        }
        Ok(dir)
    }

    /// Before a fresh start: an output folder holding another run's
    /// checkpoints is an error, or is cleared with `overwrite_output_dir`.
    pub(super) fn claim_output_dir(&self) -> Result<()> {
        if self.resume_attempted || self.step > 0 {
            return Ok(());
        }
        let out = &self.cfg.output_dir;
        let old = list_checkpoints(out);
        let final_dir = out.join("final");
        if old.is_empty() && !final_dir.exists() {
            return Ok(());
        }
        if !self.cfg.overwrite_output_dir {
            let what = old
                .last()
                .map(|(_, p)| p.display().to_string())
                .unwrap_or_else(|| final_dir.display().to_string());
            return Err(ModelError::Input(format!(
                "{} already holds an earlier run ({what}); pass --resume to continue it, --overwrite-output-dir to delete it and start afresh, or choose another --output-dir",
                out.display()
            )));
        }
        for (_, p) in &old {
            delete_folder(p, &*self.fault_hook)?;
        }
        if final_dir.exists() {
            delete_folder(&final_dir, &*self.fault_hook)?;
        }
        for f in ["log.jsonl", "loss.svg"] {
            let path = out.join(f);
            if path.exists() {
                std::fs::remove_file(&path).map_err(crate::train::checkpoint::io(&path))?;
            }
        }
        Ok(())
    }

    /// Continues from the newest checkpoint in the output folder (an
    /// incomplete or corrupt newest one is an error naming it, never a
    /// silent step back to an older one),
    /// restoring weights, optimizer moments and data position (dropout masks
    /// follow from the seed and the step),
    /// so the run reproduces the uninterrupted one exactly. Returns the
    /// checkpoint used, or `None` if there is none.
    ///
    /// # Errors
    /// A corrupt or mismatched checkpoint (naming the file and tensor).
    pub fn resume(&mut self) -> Result<Option<PathBuf>> {
        self.resume_attempted = true;
        let Some(dir) = crate::train::checkpoint::newest_checkpoint(&self.cfg.output_dir)? else {
            return Ok(None);
        };
        self.resume_from(&dir)?;
        Ok(Some(dir))
    }

    /// Continues from the checkpoint folder `dir` (transformers'
    /// `resume_from_checkpoint=PATH`), as [`Trainer::resume`] does from the
    /// newest one; the run goes on writing into this trainer's output
    /// folder.
    ///
    /// # Errors
    /// [`ModelError::Config`] when `dir` is not a complete checkpoint;
    /// otherwise as [`Trainer::resume`].
    pub fn resume_from(&mut self, dir: &Path) -> Result<()> {
        self.resume_attempted = true;
        verify_folder(dir)?;
        let (optimizer, state) = load_trainer_files(dir)?;
        self.model.load_weights(dir)?;
        self.opt.load_state_tensors(&optimizer)?;
        self.train.set_state(&state.batcher);
        self.step = state.step;
        self.history = state.history;
        self.tokens_seen = state.tokens_seen;
        self.pending_loss = state.pending_loss;
        self.best = state.best;
        Ok(())
    }

    /// Records `eval_loss` at this step as the best when it beats the best
    /// so far (lower is better), when a best model is tracked.
    pub(super) fn track_best(&mut self, eval_loss: f64) {
        if !(self.cfg.load_best_model_at_end || self.cfg.metric_for_best_model.is_some()) {
            return;
        }
        if self.best.is_none_or(|(b, _)| eval_loss < b) {
            self.best = Some((eval_loss, self.step));
        }
    }

    /// Puts the best checkpoint's weights into the model (transformers'
    /// `_load_best_model`); returns its folder, or `None` when the model
    /// already is the best one or no checkpoint was scored.
    pub(super) fn load_best(&mut self) -> Result<Option<PathBuf>> {
        let Some((_, step)) = self.best else {
            return Ok(None);
        };
        if step == self.step {
            return Ok(None);
        }
        let dir = self.cfg.output_dir.join(checkpoint_name(step));
        verify_folder(&dir)?;
        self.model.load_weights(&dir)?;
        Ok(Some(dir))
    }
}
