//! `kiln train`: fine-tune a GPT-2 directory or train one from scratch —
//! and, with no arguments at all, the built-in demo (`cargo run --release`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_distributed::World;
use kiln_models::gpt2::{
    generate, load_model_dir_with, GenerationConfig, Gpt2, Gpt2Config, LoraConfig, TokenSampling,
};
use kiln_models::hub::{parse_dataset, Hub, HubError};
use kiln_models::tokenizer::Tokenizer;
use kiln_models::train::{
    collect_files, load_tokens_with, BatchSampling, IntervalStrategy, OutputLock, ScheduleKind,
    TrainConfig, Trainer,
};

use super::tokenizer_for;

/// Arguments of `kiln train` (names follow transformers' TrainingArguments).
#[derive(Args)]
pub struct TrainArgs {
    /// Fine-tune this Hugging Face GPT-2 directory, or a hub id (gpt2,
    /// org/name, org/name@revision) looked up in the Hugging Face cache and
    /// downloaded into it if missing.
    #[arg(long, value_name = "DIR|ID", conflicts_with = "config")]
    pub model: Option<PathBuf>,
    /// Train from scratch: a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl,
    /// baby, tiny) or a config.json file.
    #[arg(long, value_name = "NAME|FILE")]
    pub config: Option<String>,
    /// Training text: .txt, .parquet or .jsonl files, or folders of them.
    #[arg(long, value_name = "PATH", num_args = 1.., required_unless_present = "dataset")]
    pub train: Vec<PathBuf>,
    /// Validation text (as --train); without it, --val-fraction of the
    /// training tokens is held out.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub val: Vec<PathBuf>,
    /// A hub dataset, NAME[:CONFIG] (wikitext:wikitext-2-raw-v1): its
    /// train split's parquet files from the Hugging Face cache (downloaded
    /// if missing), and its validation split, if it has one, for --val.
    #[arg(long, value_name = "NAME[:CONFIG]", conflicts_with_all = ["train", "val"])]
    pub dataset: Option<String>,
    /// The column (or JSON field) of .parquet / .jsonl rows that holds the text.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Fraction of training tokens held out for validation when --val is absent.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// The trainer's settings: --output-dir, --learning-rate, --lr-scheduler,
    /// --save-steps, … (the library's `TrainConfig`, one flag per field).
    #[command(flatten)]
    pub training: TrainConfig,
    /// Tokens per row (default: the model's context, at most 1024).
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Override the config's dropout (all three probabilities).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Continue from the newest checkpoint in --output-dir.
    #[arg(long, conflicts_with = "overwrite_output_dir")]
    pub resume: bool,
    /// Continue from this checkpoint folder (transformers'
    /// resume_from_checkpoint); without a PATH, as --resume.
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        conflicts_with_all = ["overwrite_output_dir", "resume"]
    )]
    pub resume_from_checkpoint: Option<Option<PathBuf>>,
    /// The frozen base model's weights with LoRA: bf16 halves their memory
    /// (transformers' `torch_dtype=torch.bfloat16`); the adapters, their
    /// gradients and AdamW's moments stay f32. Without LoRA only f32.
    #[arg(long, value_enum, default_value = "f32", requires = "lora_r")]
    pub dtype: super::DtypeArg,
    /// LoRA: train rank-R adapters on --lora-target-modules with every base
    /// weight frozen (PEFT's LoraConfig r); checkpoints and final/ then
    /// hold the adapter in PEFT's format.
    #[arg(long, value_name = "R")]
    pub lora_r: Option<usize>,
    /// LoRA scale numerator: updates are scaled by alpha / r (PEFT's
    /// lora_alpha).
    #[arg(long, default_value_t = 8.0, requires = "lora_r")]
    pub lora_alpha: f64,
    /// Dropout on the adapters' input (PEFT's lora_dropout).
    #[arg(long, default_value_t = 0.0, requires = "lora_r")]
    pub lora_dropout: f64,
    /// The layers that get adapters: c_attn, c_proj (attention's and
    /// MLP's), c_fc, or a dotted suffix such as attn.c_proj (PEFT's
    /// target_modules; its default for GPT-2 is c_attn).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "c_attn",
        requires = "lora_r"
    )]
    pub lora_target_modules: Vec<String>,
    /// Generate a sample from this prompt at the end.
    #[arg(long)]
    pub sample_prompt: Option<String>,
}

impl TrainArgs {
    /// The built-in demo: a small GPT-2 on the Shakespeare corpus shipped in
    /// `data/shakespeare`, a few minutes on 2 cores.
    pub fn demo() -> TrainArgs {
        TrainArgs {
            model: None,
            config: Some("baby".into()),
            train: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare")],
            val: Vec::new(),
            dataset: None,
            text_column: "text".into(),
            val_fraction: 0.01,
            training: TrainConfig {
                output_dir: PathBuf::from("runs/demo"),
                epochs: 1.0,
                max_steps: Some(DEMO_STEPS),
                batch_size: 12,
                learning_rate: 2e-3,
                weight_decay: 0.1,
                warmup_steps: 20,
                schedule: ScheduleKind::Cosine,
                sampling: BatchSampling::Random,
                eval_strategy: IntervalStrategy::Steps,
                eval_steps: Some(100),
                save_steps: 250,
                save_total_limit: Some(2),
                seed: 1337,
                // The demo owns runs/demo/: each run starts it afresh.
                overwrite_output_dir: true,
                ..TrainConfig::default()
            },
            block_size: Some(64),
            dropout: Some(0.0),
            resume: false,
            resume_from_checkpoint: None,
            dtype: super::DtypeArg::F32,
            lora_r: None,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            lora_target_modules: vec!["c_attn".into()],
            sample_prompt: Some("ROMEO:\n".into()),
        }
    }
}

/// Optimizer steps of the demo run.
pub const DEMO_STEPS: usize = 450;

fn model_and_tokenizer(args: &TrainArgs, main: bool) -> Result<(Gpt2, Tokenizer)> {
    match (&args.model, &args.config) {
        (Some(spec), _) => {
            let dir = &super::resolve_model(spec, args.training.progress && main)?;
            // Copied, not mapped: the folder may be another run's, rotated
            // or rewritten while this one trains.
            let mut model = load_model_dir_with(dir, super::load_options(true), args.dtype.into())?;
            if let Some(p) = args.dropout {
                model.set_dropout(p)?;
            }
            if let Some(r) = args.lora_r {
                let cfg = LoraConfig {
                    r,
                    alpha: args.lora_alpha,
                    dropout: args.lora_dropout,
                    base_model: Some(spec.to_string_lossy().into_owned()),
                    target_modules: args.lora_target_modules.clone(),
                };
                let n = model.add_lora(&cfg, args.training.seed)?;
                if main {
                    eprintln!(
                        "LoRA: rank {r} adapters on {n} layers ({}), base weights frozen",
                        cfg.target_modules.join(", ")
                    );
                }
            }
            Ok((model, tokenizer_for(dir)?))
        }
        (None, Some(cfg)) => {
            if args.lora_r.is_some() {
                bail!(
                    "--lora-r adapts a pretrained model: give it with --model DIR|ID, not --config"
                );
            }
            let mut config = if Path::new(cfg).is_file() {
                Gpt2Config::from_file(cfg)?
            } else {
                Gpt2Config::preset(cfg)?
            };
            if let Some(p) = args.dropout {
                config.set_dropout(p);
            }
            Ok((Gpt2::new(config, args.training.seed)?, Tokenizer::gpt2()))
        }
        (None, None) => {
            bail!("give --model DIR|ID to fine-tune or --config NAME to train from scratch")
        }
    }
}

/// The signal that stopped a run, as the process's exit status (128 + its
/// number: 130 for SIGINT, 143 for SIGTERM), so `kiln train && kiln eval`
/// never evaluates an unfinished model.
fn interrupted_status(signal: usize) -> ExitCode {
    ExitCode::from(128u8.wrapping_add(signal as u8))
}

/// Ctrl-C, SIGTERM and SIGHUP set `stop` (the trainer finishes its step and
/// saves a checkpoint) and record which signal came; a second one ends the
/// process at once with the same status.
fn stop_on_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicUsize>)> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        let code = 128 + sig;
        signal_hook::flag::register_conditional_shutdown(sig, code, stop.clone())?;
        signal_hook::flag::register_usize(sig, which.clone(), sig as usize)?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok((stop, which))
}

/// Runs `kiln train` (or the demo); the exit status is non-zero when a
/// signal interrupted the run (after its checkpoint was saved).
///
/// Under `mpirun` (built with `--features mpi`) each process is one rank of
/// a data-parallel run ([`Trainer::new_in`]); a rank that fails prints one
/// line naming itself and ends every rank (`MPI_Abort`), so none waits for
/// it forever.
pub fn run(args: &TrainArgs) -> Result<ExitCode> {
    let world = World::from_env()?;
    if world.size() == 1 {
        return train(args, world);
    }
    let keep = world.clone();
    match train(args, world) {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("error: rank {} of {}: {err:#}", keep.rank(), keep.size());
            keep.abort(1)
        }
    }
}

fn train(args: &TrainArgs, world: World) -> Result<ExitCode> {
    let main = world.is_main();
    // Before anything is written there (the token cache included): one run
    // per output folder. Rank 0 alone downloads, tokenises and caches; the
    // other ranks then find everything in the caches.
    let _lock = if main {
        Some(OutputLock::acquire(&args.training.output_dir)?)
    } else {
        world.barrier();
        None
    };
    let (model, tokenizer) = model_and_tokenizer(args, main)?;
    let block = args
        .block_size
        .unwrap_or(model.config.n_positions.min(1024));
    if block > model.config.n_positions {
        bail!(
            "--block-size {block} exceeds the model's context of {} positions",
            model.config.n_positions
        );
    }
    let cache_dir = args.training.output_dir.join("cache");
    let (train_files, val_files) = match &args.dataset {
        Some(spec) => {
            let (id, config) = parse_dataset(spec)?;
            let mut hub = Hub::from_env();
            hub.progress = args.training.progress && main;
            let train = hub.dataset_split(&id, config.as_deref(), "train")?;
            let val = match hub.dataset_split(&id, config.as_deref(), "validation") {
                Ok(files) => files,
                Err(HubError::NoSplit { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            (train, val)
        }
        None => (collect_files(&args.train)?, collect_files(&args.val)?),
    };
    let tokens = |files: &[PathBuf], name: &str| {
        load_tokens_with(
            files,
            &args.text_column,
            &tokenizer,
            Some(&cache_dir.join(name)),
        )
    };
    let mut train_ids = tokens(&train_files, "train.tokens")?;
    let val_ids = if val_files.is_empty() {
        if !(0.0..1.0).contains(&args.val_fraction) {
            bail!(
                "--val-fraction must be in [0, 1), got {}",
                args.val_fraction
            );
        }
        let n_val = (train_ids.len() as f64 * args.val_fraction) as usize;
        (n_val >= 2).then(|| train_ids.split_off(train_ids.len() - n_val))
    } else {
        Some(tokens(&val_files, "val.tokens")?)
    };
    if main {
        world.barrier();
    }
    let cfg = TrainConfig {
        block_size: block,
        ..args.training.clone()
    };
    let params = kiln_nn::Module::num_parameters(&model);
    let ranks = world.size();
    let mut trainer = Trainer::new_in(world, model, cfg, train_ids.clone(), val_ids)?
        .with_tokenizer(tokenizer.clone());
    // Rank 0 speaks for the run.
    let say = |line: String| {
        if main {
            eprintln!("{line}");
        }
    };
    for note in trainer.repairs() {
        eprintln!("{note} (left by an interrupted run)");
    }
    if let Some(Some(dir)) = &args.resume_from_checkpoint {
        trainer.resume_from(dir)?;
        say(format!(
            "resuming from {} (step {})",
            dir.display(),
            trainer.step()
        ));
    } else if args.resume || args.resume_from_checkpoint.is_some() {
        match trainer.resume()? {
            Some(dir) => say(format!(
                "resuming from {} (step {})",
                dir.display(),
                trainer.step()
            )),
            None => say(format!(
                "no checkpoint in {}; starting from scratch",
                args.training.output_dir.display()
            )),
        }
    }
    say(format!(
        "training {:.2}M parameters on {} tokens: {} steps of {}×{} tokens, {} thread(s){}",
        params as f64 / 1e6,
        train_ids.len(),
        trainer.total_steps(),
        args.training.batch_size * args.training.gradient_accumulation_steps * ranks,
        block,
        kiln_tensor::parallel::num_threads(),
        if ranks > 1 {
            format!(" on each of {ranks} ranks")
        } else {
            String::new()
        }
    ));
    let (stop, signal) = stop_on_signals()?;
    let summary = trainer.run_until(&stop)?;
    if summary.interrupted {
        say(format!(
            "stopped at step {}; resume with --resume",
            summary.steps
        ));
        return Ok(interrupted_status(signal.load(Ordering::SeqCst)));
    }
    if !main {
        return Ok(ExitCode::SUCCESS);
    }
    let final_dir = summary
        .final_dir
        .clone()
        .context("a completed run has a final model")?;
    eprintln!(
        "done: {} steps in {:.1} s ({:.0} tokens/s){}",
        summary.steps,
        summary.seconds,
        summary.tokens_per_sec,
        summary
            .eval_loss
            .map(|l| format!(", validation loss {l:.4} (perplexity {:.1})", l.exp()))
            .unwrap_or_default()
    );
    eprintln!(
        "model: {}   loss curve: {}",
        final_dir.display(),
        args.training.output_dir.join("loss.svg").display()
    );
    if let Some(prompt) = &args.sample_prompt {
        let mut model = trainer.model.clone();
        kiln_nn::Module::eval(&mut model);
        let ids = tokenizer.encode(prompt);
        let cfg = GenerationConfig {
            max_new_tokens: 120,
            sampling: TokenSampling::Sample {
                temperature: 0.8,
                top_k: Some(40),
                top_p: None,
            },
            seed: args.training.seed,
            eos_token_id: Some(model.config.eos_token_id),
            ..Default::default()
        };
        let out = generate(&model, &[ids], &cfg, Some(&tokenizer), &mut |_, _| {})?;
        println!(
            "--- sample ---\n{prompt}{}",
            tokenizer.decode_lossy(&out[0])?
        );
    }
    Ok(ExitCode::SUCCESS)
}
