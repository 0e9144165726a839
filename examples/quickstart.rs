//! The README's "Using Kiln as a library" program: train a tiny GPT-2 for
//! 20 AdamW steps through the public API only, as a crate that depends on
//! Kiln would (copy it out as `src/main.rs` of a new project; it uses no
//! path from this repository).
//!
//! Run:  cargo run --release --example quickstart

use kiln::models::gpt2::{Gpt2, Gpt2Config};
use kiln::models::tokenizer::Tokenizer;
use kiln::models::train::{TrainConfig, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Any text; here a public-domain sonnet, repeated.
    let text =
        "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
            .repeat(200);
    let ids = Tokenizer::gpt2().encode(&text);
    let (train, val) = ids.split_at(ids.len() * 9 / 10);
    let model = Gpt2::new(Gpt2Config::tiny(), 0)?; // or load_model_dir("path/to/gpt2")
    let cfg = TrainConfig {
        output_dir: "runs/tiny".into(),
        max_steps: Some(20),
        batch_size: 4,
        block_size: 64,
        learning_rate: 1e-2,
        overwrite_output_dir: true,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(model, cfg, train.to_vec(), Some(val.to_vec()))?;
    let summary = trainer.run()?;
    println!(
        "{} steps in {:.1} s, validation loss {:.3}",
        summary.steps,
        summary.seconds,
        summary.eval_loss.unwrap()
    );
    Ok(())
}
