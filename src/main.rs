//! The `kiln` command-line program: tokenize, generate, evaluate and train
//! GPT-2 models. Every error is printed as one line on stderr with a
//! non-zero exit status.

mod cmd;

mod alloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kiln: tensors, autodiff and GPT-2 in Rust.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    /// With no command, runs the built-in demo: trains a small GPT-2 on the
    /// Shakespeare corpus in data/shakespeare, then prints a sample.
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Fine-tune a GPT-2 directory, or train one from scratch.
    Train(Box<cmd::train::TrainArgs>),
    /// Fold a LoRA adapter into its base model and write the merged model.
    MergeLora(cmd::merge_lora::MergeLoraArgs),
    /// Redraw a run's loss curve (SVG) from its log.jsonl.
    PlotLoss(cmd::plot_loss::PlotLossArgs),
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Some(Command::Tokenize(args)) => done(cmd::tokenize::run(&args)),
        Some(Command::Generate(args)) => done(cmd::generate::run(&args)),
        Some(Command::Eval(args)) => done(cmd::eval::run(&args)),
        Some(Command::Train(args)) => cmd::train::run(&args),
        Some(Command::MergeLora(args)) => done(cmd::merge_lora::run(&args)),
        Some(Command::PlotLoss(args)) => done(cmd::plot_loss::run(&args)),
        None => cmd::train::run(&cmd::train::TrainArgs::demo()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
