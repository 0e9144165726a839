//! `kiln eval`: a model's loss and perplexity on a text file or a hub
//! dataset's split, over disjoint windows or strided ones.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use kiln_models::hub::{parse_dataset, Hub};
use kiln_models::train::{evaluate, evaluate_strided, load_tokens_with};

/// Arguments of `kiln eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// --model, --dtype, --no-mmap.
    #[command(flatten)]
    pub load: super::ModelArgs,
    /// Text to evaluate on: a UTF-8 .txt file, or the rows of a .parquet /
    /// .jsonl file (--text-column).
    #[arg(long, value_name = "FILE", required_unless_present = "dataset")]
    pub file: Option<PathBuf>,
    /// A hub dataset, NAME[:CONFIG]: evaluate on its --split, read from the
    /// Hugging Face cache (downloaded if missing).
    #[arg(long, value_name = "NAME[:CONFIG]", conflicts_with = "file")]
    pub dataset: Option<String>,
    /// The split of --dataset.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// The column (or JSON field) of .parquet / .jsonl rows that holds the text.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Sliding-window perplexity (transformers' "Perplexity of fixed-length
    /// models"): windows of --block-size tokens that start every S tokens,
    /// each token scored once with up to --block-size − S tokens of context.
    /// Without it, disjoint windows.
    #[arg(long, value_name = "S")]
    pub stride: Option<usize>,
    /// Window length in tokens (default: the model's n_positions).
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Windows evaluated together (without --stride).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Print `{"loss": …, "perplexity": …, "tokens": …}`.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kiln eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let (model, tokenizer) = args.load.load()?;
    let (files, what) = match (&args.dataset, &args.file) {
        (Some(spec), _) => {
            let (id, config) = parse_dataset(spec)?;
            let files = Hub::from_env().dataset_split(&id, config.as_deref(), &args.split)?;
            (files, format!("split {} of {spec}", args.split))
        }
        (None, Some(file)) => (vec![file.clone()], file.display().to_string()),
        (None, None) => unreachable!("clap requires --file or --dataset"),
    };
    let ids = load_tokens_with(&files, &args.text_column, &tokenizer, None)?;
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
            "{what} has {} token(s); at least 2 are needed to predict one",
            ids.len()
        );
    }
    let r = match args.stride {
        Some(stride) => evaluate_strided(&model, &ids, block, stride)?,
        None => evaluate(&model, &ids, block, args.batch_size)?,
    };
    let (loss, count) = (r.mean(), r.tokens);
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
