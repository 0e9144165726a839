//! `kiln eval`: a model's loss and perplexity on a text file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use kiln_models::gpt2::load_model_dir;
use kiln_models::train::evaluate;

use super::{read_utf8, tokenizer_for};

/// Arguments of `kiln eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Hugging Face GPT-2 directory (config.json + model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
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
    let model = load_model_dir(&args.model)?;
    let tokenizer = tokenizer_for(&args.model)?;
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
    if args.json {
        println!("{{\"loss\": {loss}, \"perplexity\": {ppl}, \"tokens\": {count}}}");
    } else {
        println!("loss {loss:.4}  perplexity {ppl:.2}  tokens {count}");
    }
    Ok(())
}
