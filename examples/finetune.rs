//! Fine-tune GPT-2 on a text file, from the pieces a trainer is made of:
//! the tokenizer, random windows of tokens, `Gpt2::forward_with_loss`,
//! AdamW with a warmup + cosine schedule, gradient clipping, a held-out
//! loss before and after, and a checkpoint that loads back to the same loss.
//!
//! Run:  cargo run --release --example finetune -- [TEXT_FILE] [MODEL_DIR]
//!
//! Defaults: `data/shakespeare/sonnets.txt` and a fresh model of the tiny
//! config (2 layers, width 32, the full 50,257-token vocabulary), so it runs
//! in seconds; the loss starts near ln(50257) ≈ 10.8 (a uniform guess) and
//! falls as the model learns which tokens the sonnets use. With a real
//! checkpoint directory as MODEL_DIR it fine-tunes that model instead.
//!
//! Book: docs/src/training.md.

use std::path::PathBuf;

use kiln::autograd::no_grad;
use kiln::models::gpt2::{load_model_dir, save_model_dir, Gpt2, Gpt2Config};
use kiln::models::tokenizer::Tokenizer;
use kiln::nn::optim::{clip_grad_norm, decay_groups, AdamConfig, AdamW, LrSchedule, Optimizer};
use kiln::nn::Module;
use kiln::tensor::{Rng, Tensor};

/// Sequences per step (B) and tokens per sequence (T).
const B: usize = 4;
const T: usize = 32;
const STEPS: usize = 30;
/// Held-out windows averaged for the validation loss.
const VAL_WINDOWS: usize = 8;

/// `B` windows of `T` tokens starting at random offsets, as `(B, T)` i64.
/// The model shifts the labels itself: position t predicts token t + 1.
fn random_batch(tokens: &[u32], rng: &mut Rng) -> anyhow::Result<Tensor> {
    let mut ids = Vec::with_capacity(B * T);
    for _ in 0..B {
        let start = rng.below((tokens.len() - T) as u64) as usize;
        ids.extend(tokens[start..start + T].iter().map(|&id| id as i64));
    }
    Ok(Tensor::from_vec(ids, &[B, T])?)
}

/// Mean loss over `VAL_WINDOWS` consecutive windows of the held-out tokens,
/// without recording a tape.
fn val_loss(model: &Gpt2, tokens: &[u32]) -> anyhow::Result<f64> {
    no_grad(|| {
        let mut sum = 0.0;
        for w in 0..VAL_WINDOWS {
            let window: Vec<i64> = tokens[w * T..(w + 1) * T]
                .iter()
                .map(|&id| id as i64)
                .collect();
            let ids = Tensor::from_vec(window, &[1, T])?;
            let (_, loss) = model.forward_with_loss(&ids, &ids)?;
            sum += loss.value().item::<f32>()? as f64;
        }
        Ok(sum / VAL_WINDOWS as f64)
    })
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let text_path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("data/shakespeare/sonnets.txt"));
    let model_dir = args.next().map(PathBuf::from);

    // Data: the whole file as one token stream; the last 10% is held out.
    let text = std::fs::read_to_string(&text_path)?;
    let tokens = Tokenizer::gpt2().encode(&text);
    let split = tokens.len() * 9 / 10;
    let (train, val) = tokens.split_at(split);
    println!(
        "{} tokens: {} for training, {} held out",
        tokens.len(),
        train.len(),
        val.len()
    );

    let mut model = match &model_dir {
        Some(dir) => load_model_dir(dir)?,
        None => Gpt2::new(Gpt2Config::tiny(), 0)?,
    };
    model.train(); // dropout on
    println!("model: {} parameters", model.num_parameters());

    // AdamW as nanoGPT sets it up: β₂ = 0.95, decay on matrices only.
    let base_lr = 1e-2;
    let groups = decay_groups(model.named_parameters(), base_lr, 0.1);
    let mut opt = AdamW::new(
        groups,
        AdamConfig {
            beta2: 0.95,
            ..AdamConfig::default()
        },
    );
    let schedule = LrSchedule::WarmupCosine {
        warmup: 3,
        total: STEPS,
        min_lr: base_lr / 10.0,
    };
    let params = model.parameters();

    model.eval();
    let before = val_loss(&model, val)?;
    model.train();
    println!("held-out loss before: {before:.4}");

    let mut rng = Rng::new(0);
    for step in 0..STEPS {
        opt.set_lr(schedule.lr_at(step, base_lr));
        let ids = random_batch(train, &mut rng)?;
        let (_logits, loss) = model.forward_with_loss(&ids, &ids)?; // logits (B, T, V)
        loss.backward()?;
        let norm = clip_grad_norm(&params, 1.0)?;
        opt.step()?;
        opt.zero_grad();
        if step % 5 == 0 || step == STEPS - 1 {
            println!(
                "step {step:>3}  loss {:.4}  grad norm {norm:>7.3}  lr {:.2e}",
                loss.value().item::<f32>()?,
                opt.lr()
            );
        }
    }

    model.eval();
    let after = val_loss(&model, val)?;
    println!("held-out loss after:  {after:.4}");
    anyhow::ensure!(after < before, "training did not lower the held-out loss");

    // Checkpoint: a Hugging Face directory that transformers can also load.
    // Loading it back must give the same model, hence the same loss.
    let out = root.join("runs/finetune-example");
    save_model_dir(&model, &out)?;
    let reloaded = load_model_dir(&out)?;
    let again = val_loss(&reloaded, val)?;
    println!(
        "saved to {}; reloaded held-out loss {again:.4}",
        out.strip_prefix(&root).unwrap_or(&out).display()
    );
    anyhow::ensure!(
        (again - after).abs() < 1e-6,
        "the checkpoint changed the model"
    );
    Ok(())
}
