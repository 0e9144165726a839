//! The `kiln` command-line program: tokenize, generate, evaluate and train
//! GPT-2 models. Every error is printed as one line on stderr with a
//! non-zero exit status.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Tokenize(cmd::tokenize::TokenizeArgs),
    /// Generate text from a prompt with a GPT-2 model directory.
    Generate(cmd::generate::GenerateArgs),
    /// Evaluate a model's loss and perplexity on a text file.
    Eval(cmd::eval::EvalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tokenize(args) => cmd::tokenize::run(&args),
        Command::Generate(args) => cmd::generate::run(&args),
        Command::Eval(args) => cmd::eval::run(&args),
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
