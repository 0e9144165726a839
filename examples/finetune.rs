//! Fine-tune a GPT-2 that already knows something on a text file with
//! Kiln's `Trainer`: tokenise (with a cache), hold out a validation slice,
//! measure the model's loss on it before training, train with AdamW +
//! warmup/cosine + clipping, checkpoint — then interrupt-and-resume from a
//! checkpoint and check that the resumed run ends exactly where the
//! uninterrupted one did.
//!
//! Run:  cargo run --release --example finetune -- [TEXT_FILE] [MODEL_DIR]
//!
//! Defaults: `data/shakespeare/sonnets.txt`, and the model the demo trained
//! on Shakespeare's plays (`cargo run --release` writes it to
//! `runs/demo/final/`), so the run starts from a model that already writes
//! play-shaped English — its loss on the sonnets starts near 5, not at
//! ln(50257) ≈ 10.8 — and adapts it to the sonnets in 16 steps. Any
//! Hugging Face GPT-2 directory can be given as MODEL_DIR instead. Without
//! either (a fresh checkout, CI) it falls back to the committed test
//! fixture `fixtures/gpt2/tiny-a`, says so, and folds the token ids into
//! its 1,000-token vocabulary: that run checks the machinery in seconds but
//! teaches the model nothing readable. `kiln train` is the same loop with
//! every option on the command line.
//!
//! Book: docs/src/training.md. Code: models/src/train/.

use std::path::PathBuf;

use kiln::models::gpt2::load_model_dir;
use kiln::models::tokenizer::Tokenizer;
use kiln::models::train::{load_tokens, BatchSampling, ScheduleKind, TrainConfig, Trainer};
use kiln::nn::Module;

/// Optimizer steps of the whole run, and where the "interrupted" run stops.
const STEPS: usize = 16;
const CHECKPOINT_EVERY: usize = 8;

fn main() -> anyhow::Result<()> {
    // Paths are relative to where it runs (`cargo run --example` from the
    // repository's root); pass your own text file and model folder.
    let mut args = std::env::args().skip(1);
    let text = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data/shakespeare/sonnets.txt"));
    // The model: the one given, else the demo's, else the committed fixture.
    let demo = PathBuf::from("runs/demo/final");
    let fixture = PathBuf::from("fixtures/gpt2/tiny-a");
    let (model_dir, pretrained) = match args.next() {
        Some(dir) => (PathBuf::from(dir), true),
        None if demo.join("config.json").is_file() => (demo, true),
        None => {
            println!(
                "{} not found (run `cargo run --release` first to train it): \
                 falling back to the test fixture {}, a random 1,000-token model",
                demo.display(),
                fixture.display()
            );
            (fixture, false)
        }
    };
    let model = load_model_dir(&model_dir)?;
    let vocab = model.config.vocab_size;
    println!(
        "model: {} ({} parameters, vocabulary {vocab})",
        model_dir.display(),
        model.num_parameters()
    );

    let out = PathBuf::from("runs/finetune-example");
    // Start clean: the trainer resumes from whatever checkpoints it finds.
    let _ = std::fs::remove_dir_all(&out);

    // Data: tokenised once and cached in out/cache; the cache's header
    // fingerprints the tokenizer and the file, so a stale cache is rebuilt.
    let mut train = load_tokens(
        std::slice::from_ref(&text),
        &Tokenizer::gpt2(),
        &out.join("cache/train.tokens"),
    )?;
    if vocab < Tokenizer::gpt2().vocab_size() {
        // Only the fixture's small vocabulary gets here: fold the GPT-2 ids
        // into it so every id is a valid row of its embedding.
        println!("folding token ids into 0..{vocab} (id mod {vocab}) for this model's vocabulary");
        train.iter_mut().for_each(|id| *id %= vocab as u32);
    }
    let val = train.split_off(train.len() - train.len() / 50); // last 2%
    println!(
        "{}: {} training tokens, {} held out",
        text.display(),
        train.len(),
        val.len()
    );

    // transformers' TrainingArguments names; nanoGPT-style random windows.
    let cfg = TrainConfig {
        output_dir: out.clone(),
        // A trained model needs small steps not to forget what it knows; a
        // random one (the fixture) can take big ones.
        learning_rate: if pretrained { 5e-4 } else { 1e-2 },
        weight_decay: 0.1,
        warmup_steps: 2,
        schedule: ScheduleKind::Cosine,
        max_steps: Some(STEPS),
        batch_size: 4,
        block_size: 32,
        sampling: BatchSampling::Random,
        logging_steps: 2,
        save_steps: CHECKPOINT_EVERY,
        seed: 0,
        progress: false,
        ..TrainConfig::default()
    };

    // ANCHOR: run
    let mut trainer = Trainer::new(model, cfg.clone(), train.clone(), Some(val.clone()))?;
    let before = trainer.evaluate()?.expect("there is validation data");
    let summary = trainer.run()?;
    // ANCHOR_END: run
    for point in trainer.history() {
        if let Some(loss) = point.loss {
            println!("step {:>3}  train loss {loss:.4}", point.step);
        }
    }
    let after = summary.eval_loss.expect("evaluated at the end");
    println!(
        "validation loss {before:.4} before fine-tuning → {after:.4} in {} steps ({:.0} tokens/s)",
        summary.steps, summary.tokens_per_sec
    );
    anyhow::ensure!(after < before, "training did not lower the validation loss");
    println!(
        "wrote {}: checkpoint-{CHECKPOINT_EVERY}/, checkpoint-{STEPS}/, final/ (a Hugging Face directory), log.jsonl, loss.svg",
        out.display()
    );

    // Resume: delete the final model and the last checkpoint, as if the run
    // had been killed after the checkpoint at step 8, and start again. The checkpoint restores
    // weights, AdamW moments, the data sampler and the dropout generators,
    // so the last 8 steps repeat bit for bit.
    // ANCHOR: resume
    std::fs::remove_dir_all(out.join("final"))?;
    std::fs::remove_dir_all(out.join(format!("checkpoint-{STEPS}")))?;
    let mut resumed = Trainer::new(load_model_dir(&model_dir)?, cfg, train, Some(val))?;
    let from = resumed.resume()?.expect("a checkpoint was saved");
    println!(
        "resumed from {} at step {}",
        from.file_name().unwrap().to_string_lossy(),
        resumed.step()
    );
    let again = resumed.run()?;
    // ANCHOR_END: resume
    println!(
        "last train loss: uninterrupted {:.6}, resumed {:.6}",
        summary.last_loss.unwrap(),
        again.last_loss.unwrap()
    );
    anyhow::ensure!(
        again.last_loss == summary.last_loss && again.eval_loss == summary.eval_loss,
        "the resumed run diverged from the uninterrupted one"
    );
    Ok(())
}
