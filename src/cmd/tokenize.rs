//! `kiln tokenize`: text to GPT-2 token ids.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use kiln_models::tokenizer::Tokenizer;

use super::{print_json_array, read_utf8};

#[derive(Args)]
#[command(group(ArgGroup::new("input").required(true).args(["text", "file"])))]
pub struct TokenizeArgs {
    /// A tokenizer.json file, or a directory holding tokenizer.json,
    /// vocab.json + merges.txt or encoder.json + vocab.bpe; without it, the
    /// built-in GPT-2 vocabulary.
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// Read the text from this UTF-8 file.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The text to encode (`<|endoftext|>` in it becomes the special token).
    #[arg(value_name = "TEXT")]
    pub text: Option<String>,
}

/// Runs `kiln tokenize`.
pub fn run(args: &TokenizeArgs) -> Result<()> {
    let tokenizer = match &args.tokenizer {
        Some(file) if file.is_file() => Tokenizer::from_tokenizer_json(file)?,
        Some(dir) => Tokenizer::from_dir(dir)?,
        None => Tokenizer::gpt2(),
    };
    let text = match (&args.file, &args.text) {
        (Some(path), _) => read_utf8(path)?,
        (None, Some(text)) => text.clone(),
        (None, None) => unreachable!("clap requires TEXT or --file"),
    };
    let ids = tokenizer.encode(&text);
    print_json_array(&ids).context("cannot write to stdout")
}
