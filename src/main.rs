//! The `kiln` command-line program.
use anyhow::Result;
use clap::Parser;

/// Kiln: tensors, autodiff and GPT-2 in Rust.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {}

fn main() -> Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
