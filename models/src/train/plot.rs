//! The loss curve as an SVG picture (train and validation loss per step),
//! drawn at the end of a run or redrawn later from its `log.jsonl`.

use std::path::Path;

use plotters::prelude::*;

use super::checkpoint::LogPoint;
use crate::{ModelError, Result};

/// The loss history in a run's `log.jsonl`, in the order the trainer
/// logged it: its training lines (`loss`) and evaluation lines
/// (`eval_loss`); other keys are ignored. A resumed run appends from its
/// checkpoint's step on, after whatever the interrupted run had logged past
/// it, so a point replaces the earlier points of its kind at or after its
/// step: the result is the history of the run that finished.
///
/// # Errors
/// [`ModelError::Io`] if the file cannot be read; [`ModelError::Input`]
/// naming the file and line if a line is not a log entry.
pub fn read_log(path: &Path) -> Result<Vec<LogPoint>> {
    let text = std::fs::read_to_string(path).map_err(|error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let mut history: Vec<LogPoint> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: LogPoint = serde_json::from_str(line).map_err(|e| {
            ModelError::Input(format!(
                "{}:{}: not a log entry: {e}",
                path.display(),
                i + 1
            ))
        })?;
        let is_eval = p.eval_loss.is_some();
        history.retain(|q| q.eval_loss.is_some() != is_eval || q.step < p.step);
        history.push(p);
    }
    Ok(history)
}

/// Draws train loss (line) and validation loss (points and line) against
/// the optimizer step into `path`.
///
/// # Errors
/// [`ModelError::Io`] naming the file if it cannot be written.
pub fn plot_loss_curve(history: &[LogPoint], path: &Path) -> Result<()> {
    let train: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|p| p.loss.map(|l| (p.step as f64, l)))
        .collect();
    let eval: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|p| p.eval_loss.map(|l| (p.step as f64, l)))
        .collect();
    let all = train.iter().chain(&eval);
    let max_step = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo.min(hi) * 0.95, hi * 1.05)
    } else {
        (0.0, 1.0)
    };
    let err = |e: String| ModelError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(e),
    };
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Kiln training: loss", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..max_step, lo..hi.max(lo + 1e-3))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("cross-entropy (nats/token)")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(train, &BLUE))
        .map_err(|e| err(e.to_string()))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
    chart
        .draw_series(LineSeries::new(eval.clone(), &RED))
        .map_err(|e| err(e.to_string()))?
        .label("validation")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED));
    chart
        .draw_series(eval.into_iter().map(|p| Circle::new(p, 3, RED.filled())))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_log_keeps_the_resumed_history() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ModelError::Input(e.to_string()))?;
        let path = dir.path().join("log.jsonl");
        // Logged every 2 steps, evaluated at 4; the run died after step 6
        // and resumed from its checkpoint at step 4, logging 6 again.
        let lines = [
            r#"{"step":2,"epoch":0.1,"loss":3.0,"lr":0.1,"grad_norm":1.0,"tokens_per_sec":9.0}"#,
            r#"{"step":4,"epoch":0.2,"loss":2.5,"lr":0.1,"grad_norm":1.0}"#,
            r#"{"step":4,"epoch":0.2,"eval_loss":2.6,"eval_perplexity":13.46}"#,
            r#"{"step":6,"epoch":0.3,"loss":2.25,"lr":0.1,"grad_norm":1.0}"#,
            "",
            r#"{"step":6,"epoch":0.3,"loss":2.0,"lr":0.1,"grad_norm":1.0}"#,
        ];
        std::fs::write(&path, lines.join("\n")).map_err(|e| ModelError::Input(e.to_string()))?;
        let got: Vec<(usize, Option<f64>, Option<f64>)> = read_log(&path)?
            .iter()
            .map(|p| (p.step, p.loss, p.eval_loss))
            .collect();
        assert_eq!(
            got,
            [
                (2, Some(3.0), None),
                (4, Some(2.5), None),
                (4, None, Some(2.6)),
                (6, Some(2.0), None),
            ]
        );

        std::fs::write(&path, "{\"step\":1}\nnot json\n")
            .map_err(|e| ModelError::Input(e.to_string()))?;
        let err = read_log(&path).unwrap_err().to_string();
        assert!(err.contains("log.jsonl:2: not a log entry"), "{err}");
        Ok(())
    }
}
