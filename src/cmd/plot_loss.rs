//! `kiln plot-loss`: redraw a run's loss curve from its `log.jsonl` — for a
//! run stopped before its end (the trainer draws `loss.svg` only when it
//! finishes), or a log kept after its run folder is gone.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kiln_models::train::{plot_loss_curve, read_log};

/// Arguments of `kiln plot-loss`.
#[derive(Args)]
pub struct PlotLossArgs {
    /// The run's log, as `kiln train` writes it to `<output-dir>/log.jsonl`.
    #[arg(value_name = "LOG")]
    pub log: PathBuf,
    /// Where the SVG goes (default: `loss.svg` beside the log).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs `kiln plot-loss`.
pub fn run(args: &PlotLossArgs) -> Result<()> {
    let history = read_log(&args.log)?;
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.log.with_file_name("loss.svg"));
    plot_loss_curve(&history, &out)?;
    let evals = history.iter().filter(|p| p.eval_loss.is_some()).count();
    eprintln!(
        "wrote {} ({} training and {evals} evaluation points)",
        out.display(),
        history.len() - evals
    );
    Ok(())
}
