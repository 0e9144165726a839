//! `kiln eval`: a model's loss and perplexity on a text file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use kiln_models::gpt2::load_model_dir_with;
use kiln_models::train::evaluate;

use super::{read_utf8, tokenizer_for};

/// Arguments of `kiln eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Hugging Face GPT-2 directory (config.json + model.safetensors), or
    /// a hub id (gpt2, org/name, org/name@revision) looked up in the
    /// Hugging Face cache and downloaded into it if missing.
    #[arg(long, value_name = "DIR|ID")]
    pub model: PathBuf,
    /// Read the weights into memory instead of mapping the file (slower to
    /// load; safe if the file may be overwritten in place meanwhile).
    #[arg(long)]
    pub no_mmap: bool,
    /// UTF-8 text file to evaluate on.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Window length in tokens (default: the model's n_positions).
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Windows evaluated together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Print `{"loss": …, "perplexity": …, "tokens": …}`.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kiln eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let dir = super::resolve_model(&args.model, true)?;
    let model = load_model_dir_with(&dir, super::load_options(args.no_mmap))?;
    let tokenizer = tokenizer_for(&dir)?;
    let text = read_utf8(&args.file)?;
    let ids = tokenizer.encode(&text);
    let block = args.block_size.unwrap_or(model.config.n_positions);
    if block < 2 {
        bail!("--block-size must be at least 2 (one token to condition on, one to predict)");
    }
    if block > model.config.n_positions {
        bail!(
            "--block-size {block} exceeds the model's context of {} positions",
            model.config.n_positions
        );
    }
    if ids.len() < 2 {
        bail!(
            "{} has {} token(s); at least 2 are needed to predict one",
            args.file.display(),
            ids.len()
        );
    }
    let (sum, count) = evaluate(&model, &ids, block, args.batch_size)?;
    let loss = sum / count as f64;
    let ppl = loss.exp();
    if !loss.is_finite() {
        eprintln!("warning: the loss is {loss}: the model's weights or logits are not finite");
    }
    if args.json {
        // JSON has no NaN or Infinity: a non-finite number is printed as null.
        let num = |x: f64| serde_json::json!(x.is_finite().then_some(x));
        println!(
            "{}",
            serde_json::json!({"loss": num(loss), "perplexity": num(ppl), "tokens": count})
        );
    } else {
        println!("loss {loss:.4}  perplexity {ppl:.2}  tokens {count}");
    }
    Ok(())
}
