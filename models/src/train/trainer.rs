//! The training loop: AdamW with decay groups, warmup + decay, clipping,
//! gradient accumulation, evaluation, logging, checkpoints and resume —
//! what transformers' `Trainer` does, for GPT-2.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_autograd::Var;
use kiln_nn::optim::{clip_grad_norm, decay_groups, AdamConfig, AdamW, LrSchedule, Optimizer};
use kiln_nn::Module;
use kiln_tensor::Rng;

use super::checkpoint::{
    checkpoint_name, delete_folder, list_checkpoints, load_checkpoint, no_faults, publish_folder,
    repair_output_dir, rotate_checkpoints, save_checkpoint, FaultHook, LogPoint, TrainerState,
};
use super::config::{ScheduleKind, TrainConfig};
use super::data::{Batch, Batcher};
use super::eval::evaluate;
use super::hf_state::{train_summary_entry, HfTrainerState, RunFacts};
use super::output_lock::OutputLock;
use super::plot::plot_loss_curve;
use crate::gpt2::{save_model_dir, ForwardOptions, Gpt2};
use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// What one optimizer step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean loss over the step's predicted tokens.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Tokens processed (inputs).
    pub tokens: usize,
}

/// The outcome of [`Trainer::run`].
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Optimizer steps completed in total.
    pub steps: usize,
    /// Final validation loss, if there was validation data.
    pub eval_loss: Option<f64>,
    /// Training loss of the last step.
    pub last_loss: Option<f64>,
    /// Whether the run stopped early on a signal (a checkpoint was saved).
    pub interrupted: bool,
    /// The final model folder (when the run completed).
    pub final_dir: Option<PathBuf>,
    /// Wall time of this run (seconds).
    pub seconds: f64,
    /// Mean training throughput of this run (tokens/s).
    pub tokens_per_sec: f64,
}

/// Trains a GPT-2 model; see the module docs.
pub struct Trainer {
    /// The model being trained.
    pub model: Gpt2,
    cfg: TrainConfig,
    opt: AdamW,
    params: Vec<Var>,
    train: Batcher,
    val: Option<Vec<u32>>,
    step: usize,
    total_steps: usize,
    steps_per_epoch: usize,
    history: Vec<LogPoint>,
    tokens_seen: u64,
    pending_loss: (f64, usize),
    best: Option<(f64, usize)>,
    resume_attempted: bool,
    repairs: Vec<String>,
    _lock: OutputLock,
    tokenizer: Option<Tokenizer>,
    /// Runs at each [`super::checkpoint::FaultPoint`] of saving and
    /// rotating; tests return an error there to simulate a crash.
    pub fault_hook: Box<FaultHook>,
}

impl Trainer {
    /// A trainer for `model` on `train` ids, validating on `val` ids.
    ///
    /// It takes the output folder's lock ([`OutputLock`]) for its lifetime
    /// and repairs what a crashed run left there
    /// ([`super::checkpoint::repair_output_dir`]; [`Trainer::repairs`]
    /// says what was done).
    ///
    /// # Errors
    /// [`ModelError::Input`] for an invalid hyper-parameter
    /// ([`TrainConfig::validate`]), a block size beyond the model's
    /// context, data too short for one block, a run that would not fit in
    /// memory (with the estimate), or an output folder another process is
    /// training in.
    pub fn new(
        mut model: Gpt2,
        cfg: TrainConfig,
        train: Vec<u32>,
        val: Option<Vec<u32>>,
    ) -> Result<Trainer> {
        cfg.validate()?;
        if cfg.block_size > model.config.n_positions {
            return Err(ModelError::Input(format!(
                "block size {} exceeds the model's context of {} positions",
                cfg.block_size, model.config.n_positions
            )));
        }
        if cfg.block_size < 2 {
            return Err(ModelError::Input("block size must be at least 2".into()));
        }
        if cfg.load_best_model_at_end && val.is_none() {
            return Err(ModelError::Input(
                "load_best_model_at_end (--load-best-model-at-end) needs validation data to rank checkpoints by".into(),
            ));
        }
        if let Some(v) = &val {
            if v.len() < 2 {
                return Err(ModelError::Input(format!(
                    "the validation text has {} token(s); at least 2 are needed",
                    v.len()
                )));
            }
        }
        let vocab = model.config.vocab_size as u32;
        if let Some(bad) = train
            .iter()
            .chain(val.iter().flatten())
            .find(|&&i| i >= vocab)
        {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the model's vocabulary of {vocab}; was the text tokenised with another tokenizer?"
            )));
        }
        let batcher = Batcher::new(
            train,
            cfg.batch_size,
            cfg.block_size,
            cfg.sampling,
            cfg.seed,
        )?;
        // Dropout masks come from generators seeded from the run's seed.
        let mut seeder = Rng::new(cfg.seed ^ 0xD80_9C0D);
        for d in model.dropouts() {
            d.set_rng_state(Rng::new(seeder.next_u64()));
        }
        model.train();
        if cfg.gradient_checkpointing {
            model.gradient_checkpointing_enable();
        }
        let (b1, b2, eps) = cfg.adam;
        let opt = AdamW::new(
            decay_groups(
                model.named_parameters(),
                cfg.learning_rate,
                cfg.weight_decay,
            ),
            AdamConfig {
                beta1: b1,
                beta2: b2,
                eps,
            },
        );
        let per_epoch = batcher
            .batches_per_epoch()
            .div_ceil(cfg.gradient_accumulation_steps.max(1));
        let total_steps = cfg
            .max_steps
            .unwrap_or(((per_epoch as f64) * cfg.epochs).ceil() as usize)
            .max(1);
        let params = model.parameters();
        // Weights exist already; gradients and AdamW's two moments add three
        // copies, and the forward pass its activations.
        let n_params: u128 = params.iter().map(|p| p.value().numel() as u128).sum();
        crate::memory::ensure_fits(
            12 * n_params
                + if cfg.gradient_checkpointing {
                    crate::memory::gpt2_activation_bytes_checkpointed
                } else {
                    crate::memory::gpt2_activation_bytes
                }(&model.config, cfg.batch_size, cfg.block_size),
            &format!(
                "training this model at batch size {} × block size {}",
                cfg.batch_size, cfg.block_size
            ),
            if cfg.gradient_checkpointing {
                "lower --batch-size or --block-size, or train a smaller model"
            } else {
                "pass --gradient-checkpointing, lower --batch-size or --block-size, or train a smaller model"
            },
        )?;
        let lock = OutputLock::acquire(&cfg.output_dir)?;
        let repairs = repair_output_dir(&cfg.output_dir)?;
        Ok(Trainer {
            model,
            cfg,
            opt,
            params,
            train: batcher,
            val,
            step: 0,
            total_steps,
            steps_per_epoch: per_epoch.max(1),
            history: Vec::new(),
            tokens_seen: 0,
            pending_loss: (0.0, 0),
            best: None,
            resume_attempted: false,
            repairs,
            _lock: lock,
            tokenizer: None,
            fault_hook: Box::new(no_faults),
        })
    }

    /// The tokenizer the training text was encoded with: its files
    /// (`tokenizer.json`, `vocab.json`, `merges.txt`,
    /// `tokenizer_config.json`, `special_tokens_map.json`) are written into
    /// every checkpoint and `final/`, so `AutoTokenizer.from_pretrained`
    /// and `pipeline("text-generation", model=dir)` open them unchanged.
    /// Without one, only the model files are written.
    pub fn with_tokenizer(mut self, tokenizer: Tokenizer) -> Trainer {
        self.tokenizer = Some(tokenizer);
        self
    }

    /// The tokenizer set by [`Trainer::with_tokenizer`].
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// What opening the output folder repaired or removed after an earlier
    /// crash, one line each.
    pub fn repairs(&self) -> &[String] {
        &self.repairs
    }

    /// Optimizer steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Optimizer steps the run will take.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// The loss history (train and eval points).
    pub fn history(&self) -> &[LogPoint] {
        &self.history
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    fn schedule(&self) -> LrSchedule {
        match self.cfg.schedule {
            ScheduleKind::Linear => LrSchedule::LinearWarmupDecay {
                warmup: self.cfg.warmup_steps,
                total: self.total_steps,
            },
            ScheduleKind::Cosine => LrSchedule::WarmupCosine {
                warmup: self.cfg.warmup_steps,
                total: self.total_steps,
                min_lr: self.cfg.learning_rate / 10.0,
            },
            ScheduleKind::Constant => LrSchedule::Constant,
        }
    }

    /// The micro-batches of the next optimizer step, from the training data
    /// (as [`Trainer::run`] draws them).
    ///
    /// # Errors
    /// Tensor construction errors (not expected).
    pub fn next_batches(&mut self) -> Result<Vec<Batch>> {
        (0..self.cfg.gradient_accumulation_steps.max(1))
            .map(|_| self.train.next_batch())
            .collect()
    }

    /// One optimizer step over `batches` (gradient accumulation): the loss
    /// is the mean over all their predicted tokens, as transformers computes
    /// it. Stops with an error, without updating, if the loss or gradient
    /// norm is not finite.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the step when training diverges; model
    /// errors otherwise.
    pub fn train_step(&mut self, batches: &[Batch]) -> Result<StepStats> {
        let lr = self.schedule().lr_at(self.step, self.cfg.learning_rate);
        self.opt.set_lr(lr);
        let total: usize = batches.iter().map(|b| b.predicted()).sum();
        let mut loss_sum = 0f64;
        let mut tokens = 0;
        for b in batches {
            let n = b.predicted();
            if n == 0 {
                continue;
            }
            let forward = || self.model.forward(&b.input, ForwardOptions::default());
            let logits = if self.cfg.bf16 {
                kiln_autograd::autocast_bf16(forward)?
            } else {
                forward()?
            };
            let loss = logits.cross_entropy(&b.targets, kiln_nn::loss::IGNORE_INDEX)?;
            let l = loss.value().item::<f32>()? as f64;
            loss_sum += l * n as f64;
            tokens += b.input.numel();
            // Weight each micro-batch by its share of the step's tokens.
            loss.mul_scalar(n as f64 / total as f64)?.backward()?;
        }
        let loss = loss_sum / total.max(1) as f64;
        let grad_norm = if self.cfg.max_grad_norm > 0.0 {
            clip_grad_norm(&self.params, self.cfg.max_grad_norm)?
        } else {
            clip_grad_norm(&self.params, f64::INFINITY)?
        };
        if !loss.is_finite() || !grad_norm.is_finite() {
            self.opt.zero_grad();
            let last = list_checkpoints(&self.cfg.output_dir)
                .pop()
                .map(|(_, p)| p.display().to_string());
            return Err(ModelError::Input(format!(
                "training diverged at step {}: loss {loss}, gradient norm {grad_norm}; no update was applied. Last good checkpoint: {}. Try a lower --learning-rate.",
                self.step + 1,
                last.unwrap_or_else(|| "none".into())
            )));
        }
        self.opt.step()?;
        self.opt.zero_grad();
        self.step += 1;
        self.tokens_seen += tokens as u64;
        Ok(StepStats {
            loss,
            grad_norm,
            lr,
            tokens,
        })
    }

    /// Validation loss (mean NLL per predicted token) in eval mode, or
    /// `None` without validation data.
    ///
    /// # Errors
    /// Model errors.
    pub fn evaluate(&mut self) -> Result<Option<f64>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        self.model.eval();
        let r = evaluate(&self.model, val, self.cfg.block_size, self.eval_batch());
        self.model.train();
        let (sum, n) = r?;
        Ok(Some(sum / n.max(1) as f64))
    }

    fn state(&self) -> TrainerState {
        TrainerState {
            step: self.step,
            batcher: self.train.state(),
            dropout_rngs: self
                .model
                .dropouts()
                .iter()
                .map(|d| d.rng_state().state())
                .collect(),
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
        let all: usize = self.params.iter().map(|p| p.value().numel()).sum();
        let facts = RunFacts {
            global_step: self.step,
            max_steps: self.total_steps,
            steps_per_epoch: self.steps_per_epoch,
            eval_steps: self.cfg.eval_every(),
            logging_steps: self.cfg.logging_steps,
            save_steps: self.cfg.save_steps,
            batch_size: self.cfg.batch_size,
            tokens_seen: self.tokens_seen,
            non_embedding_params: (all - embeddings) as u64,
            best: self.best,
            output_dir: self.cfg.output_dir.to_string_lossy().into_owned(),
            finished: self.step >= self.total_steps,
        };
        HfTrainerState::new(&facts, &self.history)
    }

    /// Saves `checkpoint-<step>/` by the crash-safe protocol of
    /// [`super::checkpoint`] and rotates old ones. A checkpoint is only
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
                    super::checkpoint::checkpoint_name(self.step),
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
                super::checkpoint::checkpoint_name(self.step)
            )));
        }
        let dir = save_checkpoint(
            &self.cfg.output_dir,
            &self.model,
            self.tokenizer.as_ref(),
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
    fn claim_output_dir(&self) -> Result<()> {
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
                std::fs::remove_file(&path).map_err(super::checkpoint::io(&path))?;
            }
        }
        Ok(())
    }

    /// Continues from the newest checkpoint in the output folder (an
    /// incomplete or corrupt newest one is an error naming it, never a
    /// silent step back to an older one),
    /// restoring weights, optimizer moments, data position and generators,
    /// so the run reproduces the uninterrupted one exactly. Returns the
    /// checkpoint used, or `None` if there is none.
    ///
    /// # Errors
    /// A corrupt or mismatched checkpoint (naming the file and tensor).
    pub fn resume(&mut self) -> Result<Option<PathBuf>> {
        self.resume_attempted = true;
        let Some(dir) = super::checkpoint::newest_checkpoint(&self.cfg.output_dir)? else {
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
        let ck = load_checkpoint(dir)?;
        self.copy_weights(&ck.model, dir)?;
        self.opt.load_state_tensors(&ck.optimizer)?;
        self.train.set_state(&ck.state.batcher);
        let drops = self.model.dropouts();
        if drops.len() != ck.state.dropout_rngs.len() {
            return Err(ModelError::Config {
                path: dir.join(super::checkpoint::KILN_STATE),
                msg: format!(
                    "{} dropout states for a model with {}",
                    ck.state.dropout_rngs.len(),
                    drops.len()
                ),
            });
        }
        for (d, (s, spare)) in drops.iter().zip(&ck.state.dropout_rngs) {
            d.set_rng_state(Rng::from_state(*s, *spare));
        }
        self.step = ck.state.step;
        self.history = ck.state.history;
        self.tokens_seen = ck.state.tokens_seen;
        self.pending_loss = ck.state.pending_loss;
        self.best = ck.state.best;
        Ok(())
    }

    fn log_line(&self, value: serde_json::Value) -> Result<()> {
        let path = self.cfg.output_dir.join("log.jsonl");
        let io = |error| ModelError::Io {
            path: path.clone(),
            error,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        writeln!(f, "{value}").map_err(io)
    }

    /// Runs the loop to the last step (or until `stop` is set, e.g. by
    /// Ctrl-C, which saves a checkpoint first), evaluating, logging and
    /// checkpointing as configured; then evaluates, writes the final model
    /// to `<output_dir>/final/` and the loss curve to `loss.svg`.
    ///
    /// # Errors
    /// Divergence (naming the step and the last good checkpoint), I/O
    /// errors naming the path, model errors.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<TrainSummary> {
        let out = self.cfg.output_dir.clone();
        self.claim_output_dir()?;
        let bar = if self.cfg.progress {
            ProgressBar::new(self.total_steps as u64)
        } else {
            ProgressBar::hidden()
        };
        if self.cfg.progress {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}  eta {eta}",
            )
            .expect("valid template"),
        );
        bar.set_position(self.step as u64);
        let start = Instant::now();
        let start_step = self.step;
        let mut tokens_seen = 0usize;
        let mut last = None;
        let mut last_eval = None;
        let mut loss_total = 0f64;
        let mut interrupted = false;
        while self.step < self.total_steps {
            let batches = self.next_batches()?;
            let s = self.train_step(&batches)?;
            tokens_seen += s.tokens;
            loss_total += s.loss;
            last = Some(s.loss);
            let elapsed = start.elapsed().as_secs_f64();
            let tps = tokens_seen as f64 / elapsed.max(1e-9);
            let done = self.step - start_step;
            let eta = elapsed / done as f64 * (self.total_steps - self.step) as f64;
            bar.set_position(self.step as u64);
            bar.set_message(format!(
                "loss {:.4}  lr {:.2e}  |g| {:.2}  {:.0} tok/s",
                s.loss, s.lr, s.grad_norm, tps
            ));
            self.pending_loss.0 += s.loss;
            self.pending_loss.1 += 1;
            if self.step.is_multiple_of(self.cfg.logging_steps.max(1))
                || self.step == self.total_steps
            {
                // As transformers: the mean loss since the previous log.
                let (sum, n) = std::mem::take(&mut self.pending_loss);
                let loss = sum / n.max(1) as f64;
                self.history.push(LogPoint::train(
                    self.step,
                    self.epoch(),
                    loss,
                    s.grad_norm,
                    s.lr,
                ));
                self.log_line(serde_json::json!({
                    "step": self.step, "epoch": self.epoch(), "loss": loss, "lr": s.lr, "grad_norm": s.grad_norm,
                    "tokens_per_sec": tps, "elapsed_s": elapsed, "eta_s": eta,
                }))?;
            }
            let (total, per_epoch) = (self.total_steps, self.steps_per_epoch);
            if self
                .cfg
                .eval_strategy
                .fires(self.step, total, self.cfg.eval_every(), per_epoch)
            {
                if let Some(l) = self.eval_point(&bar)? {
                    last_eval = Some((self.step, l));
                    self.track_best(l);
                }
            }
            // transformers' DefaultFlowCallback: every save_steps and at
            // the last step (or at each epoch's end).
            let saved =
                self.cfg
                    .save_strategy
                    .fires(self.step, total, self.cfg.save_steps, per_epoch);
            if saved {
                self.save_checkpoint()?;
            }
            if stop.load(Ordering::SeqCst) {
                let dir = if saved {
                    super::checkpoint::list_checkpoints(&out)
                        .pop()
                        .map(|(_, d)| d)
                        .unwrap_or_default()
                } else {
                    self.save_checkpoint()?
                };
                bar.abandon_with_message(format!("interrupted: saved {}", dir.display()));
                interrupted = true;
                break;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let tokens_per_sec = tokens_seen as f64 / seconds.max(1e-9);
        if interrupted {
            return Ok(TrainSummary {
                steps: self.step,
                eval_loss: None,
                last_loss: last,
                interrupted,
                final_dir: None,
                seconds,
                tokens_per_sec,
            });
        }
        let best_dir = if self.cfg.load_best_model_at_end {
            self.load_best()?
        } else {
            None
        };
        // transformers: with save_total_limit=1 and a best checkpoint, the
        // best is the one left at the end.
        if let (Some((_, best)), Some(1)) = (self.best, self.cfg.save_total_limit) {
            for (step, dir) in list_checkpoints(&out) {
                if step != best {
                    delete_folder(&dir, &*self.fault_hook)?;
                }
            }
        }
        // The closing evaluation (run_clm.py's --do_eval): the one at the
        // last step when there was one and the model is still that one.
        let eval_loss = match (last_eval, &best_dir) {
            (Some((step, l)), None) if step == self.step => Some(l),
            (_, None) => self.eval_point(&bar)?,
            (_, Some(dir)) => {
                let l = self.evaluate()?;
                if let Some(l) = l {
                    bar.println(format!(
                        "best model: {} (validation loss {l:.4})",
                        dir.display()
                    ));
                }
                l
            }
        };
        bar.finish();
        let mut hf = self.hf_state();
        let rows = (self.step - start_step)
            * self.cfg.batch_size
            * self.cfg.gradient_accumulation_steps.max(1);
        hf.log_history.push(train_summary_entry(
            self.step,
            self.epoch(),
            seconds,
            rows,
            loss_total / (self.step - start_step).max(1) as f64,
            hf.total_flos,
        ));
        hf.save(&out.join("trainer_state.json"))?;
        self.model.eval();
        let model = &self.model;
        let tokenizer = self.tokenizer.as_ref();
        let final_dir = publish_folder(
            &out,
            "final",
            &|dir: &Path| {
                save_model_dir(model, dir)?;
                if let Some(tok) = tokenizer {
                    tok.save_pretrained(dir, model.config.n_positions)?;
                }
                Ok(())
            },
            &*self.fault_hook,
        );
        self.model.train();
        let final_dir = final_dir?;
        plot_loss_curve(&self.history, &out.join("loss.svg"))?;
        Ok(TrainSummary {
            steps: self.step,
            eval_loss,
            last_loss: last,
            interrupted,
            final_dir: Some(final_dir),
            seconds,
            tokens_per_sec,
        })
    }

    fn eval_point(&mut self, bar: &ProgressBar) -> Result<Option<f64>> {
        let started = Instant::now();
        let Some(l) = self.evaluate()? else {
            return Ok(None);
        };
        let runtime = started.elapsed().as_secs_f64();
        let rows = self.val.as_ref().map_or((0, 0), |v| {
            let (block, batch) = (self.cfg.block_size, self.eval_batch());
            let full = v.len() / block;
            let short = usize::from(v.len() % block >= 2);
            (full + short, full.div_ceil(batch) + short)
        });
        self.history.push(LogPoint {
            step: self.step,
            epoch: self.epoch(),
            loss: None,
            grad_norm: None,
            learning_rate: None,
            eval_loss: Some(l),
            eval_runtime: Some(runtime),
            eval_rows: Some(rows),
        });
        self.log_line(
            serde_json::json!({"step": self.step, "epoch": self.epoch(), "eval_loss": l, "eval_perplexity": l.exp()}),
        )?;
        bar.println(format!(
            "step {:>6}  validation loss {l:.4}  perplexity {:.2}",
            self.step,
            l.exp()
        ));
        Ok(Some(l))
    }

    fn eval_batch(&self) -> usize {
        self.cfg.batch_size.max(8)
    }

    /// Records `eval_loss` at this step as the best when it beats the best
    /// so far (lower is better), when a best model is tracked.
    fn track_best(&mut self, eval_loss: f64) {
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
    fn load_best(&mut self) -> Result<Option<PathBuf>> {
        let Some((_, step)) = self.best else {
            return Ok(None);
        };
        if step == self.step {
            return Ok(None);
        }
        let dir = self.cfg.output_dir.join(checkpoint_name(step));
        super::checkpoint::verify_folder(&dir)?;
        let best = crate::gpt2::load_model_dir_with(
            &dir,
            kiln_nn::state_dict::LoadOptions {
                copy: true,
                ..Default::default()
            },
            kiln_tensor::DType::F32,
        )?;
        self.copy_weights(&best, &dir)?;
        Ok(Some(dir))
    }

    fn copy_weights(&self, from: &Gpt2, dir: &Path) -> Result<()> {
        if from.config != self.model.config {
            return Err(ModelError::Config {
                path: dir.join("config.json"),
                msg: "the checkpoint's model config differs from this run's model".into(),
            });
        }
        for ((name, p), (_, q)) in self
            .model
            .named_parameters()
            .into_iter()
            .zip(from.named_parameters())
        {
            p.set_value(q.value()).map_err(|e| ModelError::Weights {
                file: dir.join("model.safetensors"),
                tensor: name.clone(),
                msg: e.to_string(),
            })?;
        }
        Ok(())
    }
}

fn all_finite(t: &kiln_tensor::Tensor) -> Result<bool> {
    Ok(match t.dtype() {
        kiln_tensor::DType::F32 => t
            .contiguous()
            .as_slice::<f32>()?
            .iter()
            .all(|v| v.is_finite()),
        kiln_tensor::DType::F64 => t
            .contiguous()
            .as_slice::<f64>()?
            .iter()
            .all(|v| v.is_finite()),
        _ => true,
    })
}

/// Whether a folder holds at least one complete checkpoint.
pub fn has_checkpoint(output_dir: &Path) -> bool {
    !list_checkpoints(output_dir).is_empty()
}
