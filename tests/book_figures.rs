//! The book's rendered figures come from the library: each committed `.dot`
//! under `docs/src/figures/` must be what the library writes today, so a
//! change to the tape or to the DOT export that would change a figure fails
//! here until `docs/figures.sh` regenerates it.

use kiln::autograd::{clear_tape, trace, Var};
use kiln::tensor::Tensor;

/// `docs/src/figures/autodiff_by_hand.dot`: the forward pass of
/// `examples/autodiff_by_hand.rs` (its `forward` anchor), as that example's
/// `--dot` writes it.
#[test]
fn autodiff_by_hand_figure_is_current() -> Result<(), Box<dyn std::error::Error>> {
    clear_tape();
    let x = Var::constant(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])?);
    let y = Var::constant(Tensor::from_vec(vec![2.0f64, 4.0, 7.0], &[3])?);
    let w = Var::parameter(Tensor::from_vec(vec![1.5f64], &[1])?);
    let b = Var::parameter(Tensor::from_vec(vec![0.5f64], &[1])?);
    let pred = w.mul(&x)?.add(&b)?;
    let r = pred.sub(&y)?;
    let loss = r.powf(2.0)?.mean_all()?;
    let dot = trace::tape().to_dot_named(&[("w", &w), ("b", &b)]);
    loss.backward()?;
    let committed = include_str!("../docs/src/figures/autodiff_by_hand.dot");
    assert_eq!(
        dot, committed,
        "the figure is out of date: run docs/figures.sh"
    );
    Ok(())
}
