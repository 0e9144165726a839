//! The loss curve as an SVG picture (train and validation loss per step).

use std::path::Path;

use plotters::prelude::*;

use super::checkpoint::LogPoint;
use crate::{ModelError, Result};

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
