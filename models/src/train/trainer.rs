//! The training loop: AdamW with decay groups, warmup + decay, clipping,
//! gradient accumulation, evaluation, logging, checkpoints and resume —
//! what transformers' `Trainer` does, for GPT-2 or any language model that
//! implements [`TrainModel`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_autograd::Var;
use kiln_distributed::{GradReducer, World};
use kiln_nn::optim::{decay_groups, AdamConfig, AdamW, LrSchedule};

use super::checkpoint::{
    delete_folder, list_checkpoints, no_faults, publish_folder, repair_output_dir, FaultHook,
    LogPoint,
};
use super::config::TrainConfig;
use super::data::Batcher;
use super::eval::evaluate;
use super::hf_state::train_summary_entry;
use super::model::TrainModel;
use super::output_lock::OutputLock;
use super::plot::plot_loss_curve;
use crate::gpt2::Gpt2;
use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

mod report;
mod state;
mod step;

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
    /// Final validation loss, if there was validation data (rank 0 only:
    /// the other ranks do not evaluate).
    pub eval_loss: Option<f64>,
    /// Training loss of the last step.
    pub last_loss: Option<f64>,
    /// Whether the run stopped early on a signal (a checkpoint was saved).
    pub interrupted: bool,
    /// The final model folder (when the run completed; rank 0 only, the
    /// one that writes it).
    pub final_dir: Option<PathBuf>,
    /// Wall time of this run (seconds).
    pub seconds: f64,
    /// Mean training throughput of this run (tokens/s).
    pub tokens_per_sec: f64,
}

/// Trains a language model — GPT-2 by default, or any [`TrainModel`] — with
/// checkpoints, rotation, exact resume and logging; see the module docs.
pub struct Trainer<M: TrainModel = Gpt2> {
    /// The model being trained.
    pub model: M,
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
    measured: Option<report::StepMemory>,
    resume_attempted: bool,
    repairs: Vec<String>,
    world: World,
    reducer: GradReducer,
    logged_comm: kiln_distributed::ReduceStats,
    _lock: Option<OutputLock>,
    tokenizer: Option<Tokenizer>,
    /// Runs at each [`super::checkpoint::FaultPoint`] of saving and
    /// rotating; tests return an error there to simulate a crash.
    pub fault_hook: Box<FaultHook>,
}

impl<M: TrainModel> Trainer<M> {
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
    pub fn new(model: M, cfg: TrainConfig, train: Vec<u32>, val: Option<Vec<u32>>) -> Result<Self> {
        Trainer::new_in(World::single(), model, cfg, train, val)
    }

    /// A trainer for one rank of `world` (data-parallel training,
    /// `mpirun -np N kiln train …`): every rank builds one with the same
    /// model, configuration and data. Each step, rank `r` trains on its
    /// share of the step's micro-batches and the gradients are summed
    /// across ranks in rank order ([`kiln_distributed::GradReducer`]), so
    /// N ranks produce exactly the weights, losses and checkpoints of one
    /// process with `gradient_accumulation_steps × N`. Rank 0 alone takes
    /// the output folder's lock, logs, evaluates, shows progress and writes
    /// checkpoints and the final model; the others meet it at a barrier
    /// after each save. As DDP does, rank 0's weights are broadcast to
    /// every rank here.
    ///
    /// # Errors
    /// As [`Trainer::new`]; ranks that disagree on the model are an error
    /// ([`kiln_distributed::DistributedError::Mismatch`]).
    pub fn new_in(
        world: World,
        mut model: M,
        cfg: TrainConfig,
        train: Vec<u32>,
        val: Option<Vec<u32>>,
    ) -> Result<Self> {
        cfg.validate()?;
        if let Some(context) = model.max_context().filter(|&c| cfg.block_size > c) {
            return Err(ModelError::Input(format!(
                "block size {} exceeds the model's context of {context} positions",
                cfg.block_size
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
        let vocab = model.vocab_size() as u32;
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
        model.train();
        if cfg.gradient_checkpointing {
            model.gradient_checkpointing_enable()?;
        }
        let (b1, b2, eps) = (cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon);
        let opt = AdamW::new(
            decay_groups(
                // Only what is trained: with LoRA the frozen base is left out.
                model
                    .named_parameters()
                    .into_iter()
                    .filter(|(_, p)| p.requires_grad())
                    .collect(),
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
            .div_ceil(cfg.gradient_accumulation_steps.max(1) * world.size());
        let total_steps = cfg
            .max_steps
            .unwrap_or(((per_epoch as f64) * cfg.epochs).ceil() as usize)
            .max(1);
        let params: Vec<Var> = model
            .parameters()
            .into_iter()
            .filter(|p| p.requires_grad())
            .collect();
        if params.is_empty() {
            return Err(ModelError::Input(
                "the model has no trainable parameters (every weight is frozen)".into(),
            ));
        }
        // Weights exist already; gradients and AdamW's two moments add three
        // copies of the trained ones, and the forward pass its activations.
        let n_params: u128 = params.iter().map(|p| p.value().numel() as u128).sum();
        let activations = model
            .activation_estimate(cfg.batch_size, cfg.block_size)
            .map_or(0, |a| a.total(cfg.gradient_checkpointing));
        crate::memory::ensure_fits(
            12 * n_params + activations,
            &format!(
                "training this model at batch size {} × block size {}",
                cfg.batch_size, cfg.block_size
            ),
            model.memory_hint(cfg.gradient_checkpointing),
        )?;
        let (lock, repairs) = if world.is_main() {
            let lock = OutputLock::acquire(&cfg.output_dir)?;
            (Some(lock), repair_output_dir(&cfg.output_dir)?)
        } else {
            (None, Vec::new())
        };
        // Every rank may read the folder (to resume) once it is repaired.
        world.barrier();
        kiln_distributed::broadcast_parameters(&world, &params)?;
        let bucket = cfg.ddp_bucket_cap_mb.max(1) << 20;
        let reducer = if cfg.ddp_overlap {
            GradReducer::overlapped(&world, &params, bucket)?
        } else {
            GradReducer::with_bucket_bytes(bucket)
        };
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
            measured: None,
            pending_loss: (0.0, 0),
            best: None,
            resume_attempted: false,
            repairs,
            world,
            reducer,
            logged_comm: Default::default(),
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
    pub fn with_tokenizer(mut self, tokenizer: Tokenizer) -> Self {
        self.tokenizer = Some(tokenizer);
        self
    }

    /// The tokenizer set by [`Trainer::with_tokenizer`].
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The tokenizer to save beside the model, with its
    /// `model_max_length`: the model's context, or the block size for a
    /// model without one.
    fn tokenizer_files(&self) -> Option<(&Tokenizer, usize)> {
        let max_len = self.model.max_context().unwrap_or(self.cfg.block_size);
        self.tokenizer.as_ref().map(|t| (t, max_len))
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
        self.cfg.schedule.schedule(
            self.cfg.warmup_steps,
            self.total_steps,
            self.cfg.learning_rate,
        )
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
        Ok(Some(r?.mean()))
    }

    fn log_line(&self, value: serde_json::Value) -> Result<()> {
        if !self.world.is_main() {
            return Ok(());
        }
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

    /// Runs the loop to the last step, evaluating, logging and
    /// checkpointing as configured; then evaluates, writes the final model
    /// to `<output_dir>/final/` and the loss curve to `loss.svg`
    /// (transformers' `trainer.train()`). [`Trainer::run_until`] also stops
    /// early, with a checkpoint, when a flag is set.
    ///
    /// # Errors
    /// As [`Trainer::run_until`].
    pub fn run(&mut self) -> Result<TrainSummary> {
        self.run_until(&AtomicBool::new(false))
    }

    /// [`Trainer::run`] that also stops when `stop` is set (by a Ctrl-C
    /// handler, say): the step under way finishes, a checkpoint is saved
    /// and the summary says `interrupted`. Under several ranks every rank
    /// stops at the same step, whichever saw the flag.
    ///
    /// # Errors
    /// Divergence (naming the step and the last good checkpoint), I/O
    /// errors naming the path, model errors.
    pub fn run_until(&mut self, stop: &AtomicBool) -> Result<TrainSummary> {
        let out = self.cfg.output_dir.clone();
        let main = self.world.is_main();
        self.agree_on_start()?;
        if main {
            self.claim_output_dir()?;
        }
        let show = self.cfg.progress && main;
        let bar = if show {
            ProgressBar::new(self.total_steps as u64)
        } else {
            ProgressBar::hidden()
        };
        if show {
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
        let memory_report = self.cfg.memory_report && main;
        if memory_report {
            bar.suspend(|| eprint!("{}", self.memory_report()));
        }
        while self.step < self.total_steps {
            let batches = self.next_batches()?;
            let first = self.step == start_step;
            let s = self.train_step(&batches)?;
            if first && memory_report {
                bar.suspend(|| eprint!("after the first step:\n{}", self.memory_report()));
            }
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
                let mut line = serde_json::json!({
                    "step": self.step, "epoch": self.epoch(), "loss": loss, "lr": s.lr, "grad_norm": s.grad_norm,
                    "tokens_per_sec": tps, "elapsed_s": elapsed, "eta_s": eta,
                });
                if self.world.size() > 1 {
                    // Since the previous line: time in the gradient
                    // all-reduce (waiting for slower ranks included) and
                    // bytes this rank sent.
                    let (now, then) = (self.reducer.stats(), self.logged_comm);
                    line["allreduce_s"] = (now.seconds - then.seconds).into();
                    line["allreduce_bytes"] = (now.bytes_sent - then.bytes_sent).into();
                    self.logged_comm = now;
                }
                self.log_line(line)?;
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
                self.save_on_main()?;
            }
            // Every rank stops at the same step, whichever got the signal.
            if self.world.any(stop.load(Ordering::SeqCst)) {
                if !saved {
                    self.save_on_main()?;
                }
                let dir = super::checkpoint::list_checkpoints(&out)
                    .pop()
                    .map(|(_, d)| d)
                    .unwrap_or_default();
                bar.abandon_with_message(format!("interrupted: saved {}", dir.display()));
                interrupted = true;
                break;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let tokens_per_sec = tokens_seen as f64 / seconds.max(1e-9);
        if interrupted || !main {
            // The other ranks end here; rank 0 writes the final files.
            if !interrupted {
                self.world.barrier();
            }
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
        let summary = self.finish(&bar, start_step, seconds, last_eval, loss_total);
        // Rank 0 is done writing (or failed, and aborts the others).
        if summary.is_ok() {
            self.world.barrier();
        }
        let (eval_loss, final_dir) = summary?;
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

    /// Rank 0's end of a completed run: the best model, the closing
    /// evaluation, `trainer_state.json`, `final/` and the loss curve.
    fn finish(
        &mut self,
        bar: &ProgressBar,
        start_step: usize,
        seconds: f64,
        last_eval: Option<(usize, f64)>,
        loss_total: f64,
    ) -> Result<(Option<f64>, PathBuf)> {
        let out = self.cfg.output_dir.clone();
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
            (_, None) => self.eval_point(bar)?,
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
        let rows = (self.step - start_step) * self.cfg.batch_size * self.micro_batches_per_step();
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
        let tokenizer = self.tokenizer_files();
        let final_dir = publish_folder(
            &out,
            "final",
            &|dir: &Path| {
                model.save_pretrained(dir)?;
                if let Some((tok, max_len)) = tokenizer {
                    tok.save_pretrained(dir, max_len)?;
                }
                Ok(())
            },
            &*self.fault_hook,
        );
        self.model.train();
        let final_dir = final_dir?;
        plot_loss_curve(&self.history, &out.join("loss.svg"))?;
        Ok((eval_loss, final_dir))
    }

    /// Rank 0 saves a checkpoint; every rank waits until it is complete.
    fn save_on_main(&mut self) -> Result<()> {
        if self.world.is_main() {
            self.save_checkpoint()?;
        }
        self.world.barrier();
        Ok(())
    }

    /// Every rank must start from the same step: a rank that found no
    /// checkpoint (an output folder not shared with rank 0) would train
    /// other data with other weights.
    fn agree_on_start(&self) -> Result<()> {
        let steps = self.world.all_gather_f64(&[self.step as f64])?;
        match steps.iter().position(|&s| s != steps[0]) {
            None => Ok(()),
            Some(rank) => Err(ModelError::Input(format!(
                "rank {rank} starts at step {} but rank 0 at step {}: every rank must see the same --output-dir (a shared filesystem) to resume",
                steps[rank], steps[0]
            ))),
        }
    }

    fn eval_point(&mut self, bar: &ProgressBar) -> Result<Option<f64>> {
        // Rank 0 alone evaluates; the others go on to the next step and
        // wait for it in its all-reduce.
        if !self.world.is_main() {
            return Ok(None);
        }
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
