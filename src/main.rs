//! The `kiln` command-line program.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use kiln_models::tokenizer::Tokenizer;

/// Kiln: tensors, autodiff and GPT-2 in Rust.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode text into GPT-2 token ids, printed on stdout as one JSON array
    /// (e.g. `[15496,995]`) followed by a newline.
    Tokenize(TokenizeArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("input").required(true).args(["text", "file"])))]
struct TokenizeArgs {
    /// Directory holding vocab.json + merges.txt (or encoder.json +
    /// vocab.bpe); without it, the built-in GPT-2 vocabulary.
    #[arg(long, value_name = "DIR")]
    tokenizer: Option<PathBuf>,
    /// Read the text from this UTF-8 file.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The text to encode (`<|endoftext|>` in it becomes the special token).
    #[arg(value_name = "TEXT")]
    text: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tokenize(args) => tokenize(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a whole file as UTF-8 text, with errors that name the file.
fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not valid UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let tokenizer = match &args.tokenizer {
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

/// Prints `[1,2,3]` and a newline on stdout. A closed pipe (`| head`) is not
/// an error.
fn print_json_array(ids: &[u32]) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(ids.len() * 6 + 3);
    line.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        write!(line, "{id}").expect("writing to a String cannot fail");
    }
    line.push_str("]\n");
    let mut out = std::io::stdout().lock();
    match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}
