//! Fine-tune GPT-2 on a text file with Kiln's `Trainer`: tokenise (with a
//! cache), hold out a validation slice, train with AdamW + warmup/cosine +
//! clipping, checkpoint — then interrupt-and-resume from a checkpoint and
//! check that the resumed run ends exactly where the uninterrupted one did.
//!
//! Run:  cargo run --release --example finetune -- [TEXT_FILE] [MODEL_DIR]
//!
//! Defaults: `data/shakespeare/sonnets.txt` and a fresh model of the tiny
//! config (2 layers, width 32, the full 50,257-token vocabulary), so it runs
//! in seconds; the loss starts near ln(50257) ≈ 10.8 (a uniform guess) and
//! falls as the model learns which tokens the sonnets use. With a real
//! checkpoint directory as MODEL_DIR it fine-tunes that model instead (use a
//! smaller learning rate then, e.g. 5e-5). `kiln train` is the same loop
//! with every option on the command line.
//!
//! Book: docs/src/training.md. Code: models/src/train/.

use std::path::PathBuf;

use kiln::models::gpt2::{load_model_dir, Gpt2, Gpt2Config};
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
    let model_dir = args.next().map(PathBuf::from);
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
    let val = train.split_off(train.len() - train.len() / 50); // last 2%
    println!(
        "{}: {} training tokens, {} held out",
        text.display(),
        train.len(),
        val.len()
    );

    let new_model = || -> anyhow::Result<Gpt2> {
        Ok(match &model_dir {
            Some(dir) => load_model_dir(dir)?,
            None => Gpt2::new(Gpt2Config::tiny(), 0)?,
        })
    };
    // transformers' TrainingArguments names; nanoGPT-style random windows.
    let cfg = TrainConfig {
        output_dir: out.clone(),
        learning_rate: 1e-2,
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
    let model = new_model()?;
    println!("model: {} parameters", model.num_parameters());
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
        "validation loss {before:.4} → {after:.4} in {} steps ({:.0} tokens/s)",
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
    let mut resumed = Trainer::new(new_model()?, cfg, train, Some(val))?;
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
