//! Reverse-mode autodiff on an expression small enough to differentiate by
//! hand: the mean squared error of a line `w·x + b` through three points.
//!
//! ```text
//!   x = [1, 2, 3]   y = [2, 4, 7]   (constants)
//!   w = [1.5]       b = [0.5]       (parameters, shape [1]: they broadcast)
//!   L = mean((w·x + b − y)²)
//! ```
//!
//! By hand, with residuals r = w·x + b − y = [0, −0.5, −2] and n = 3:
//!
//! ```text
//!   L     = (0² + 0.5² + 2²) / 3            = 4.25 / 3 = 1.416667
//!   dL/dr = 2·r / n                          = [0, −1/3, −4/3]
//!   dL/dw = Σ dL/dr · x = 0 − 2/3 − 4        = −14/3    = −4.666667
//!   dL/db = Σ dL/dr     = 0 − 1/3 − 4/3      = −5/3     = −1.666667
//! ```
//!
//! The two sums are where broadcasting is undone: w and b were stretched
//! from [1] to [3] in the forward pass, so their gradients are summed back
//! to [1] (`kiln::autograd::unbroadcast`).
//!
//! Run:  cargo run --release --example autodiff_by_hand [-- --dot FILE]
//! (`--dot` also writes the tape as Graphviz DOT, the book's figure:
//! `docs/figures.sh` renders it.)
//! Book: docs/src/autodiff.md. Code: autograd/src/tape.rs, autograd/src/ops/.

use kiln::autograd::{trace, unbroadcast, Var};
use kiln::tensor::Tensor;

fn main() -> anyhow::Result<()> {
    // f64 so the printed values match the hand computation to every digit.
    // ANCHOR: forward
    let x = Var::constant(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])?);
    let y = Var::constant(Tensor::from_vec(vec![2.0f64, 4.0, 7.0], &[3])?);
    let w = Var::parameter(Tensor::from_vec(vec![1.5f64], &[1])?);
    let b = Var::parameter(Tensor::from_vec(vec![0.5f64], &[1])?);

    // [1]·[3] + [1] → [3]: w and b broadcast over the three points.
    let pred = w.mul(&x)?.add(&b)?;
    let r = pred.sub(&y)?;
    let loss = r.powf(2.0)?.mean_all()?;
    // ANCHOR_END: forward

    // Five ops were recorded, in execution order: the tape. Each line shows
    // the shapes and strides in and out, whether the output is a view or new
    // memory, and the backward rule that will run.
    println!("== the tape after the forward pass");
    print!("{}", trace::tape());

    // The same tape as a graph, for `dot -Tsvg` (before backward, which
    // consumes the tape).
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--dot") {
        let path = args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("--dot needs a file"))?;
        std::fs::write(path, trace::tape().to_dot_named(&[("w", &w), ("b", &b)]))?;
        println!("(graph written to {path})");
    }

    // ANCHOR: backward
    loss.backward()?;
    // ANCHOR_END: backward

    // backward() played the tape in reverse, one rule per node.
    println!("\n== the rules backward ran, last node first");
    print!("{}", trace::last_backward());

    let by_hand_loss = 4.25 / 3.0;
    let by_hand_dw = -14.0 / 3.0;
    let by_hand_db = -5.0 / 3.0;
    let dw = w.grad().expect("w requires grad").item::<f64>()?;
    let db = b.grad().expect("b requires grad").item::<f64>()?;
    println!("\n== Kiln beside the hand-derived values");
    println!("{:<6} {:>12} {:>12}", "", "kiln", "by hand");
    println!(
        "{:<6} {:>12.6} {:>12.6}",
        "L",
        loss.value().item::<f64>()?,
        by_hand_loss
    );
    println!("{:<6} {:>12.6} {:>12.6}", "dL/dw", dw, by_hand_dw);
    println!("{:<6} {:>12.6} {:>12.6}", "dL/db", db, by_hand_db);
    assert!((dw - by_hand_dw).abs() < 1e-12 && (db - by_hand_db).abs() < 1e-12);

    // What the engine did for b: the add rule returned g = dL/dr, shaped
    // like the output [3]; unbroadcast summed it down to b's shape [1].
    let g = Tensor::from_vec(vec![0.0f64, -1.0 / 3.0, -4.0 / 3.0], &[3])?;
    let g_b = unbroadcast(g, &[1])?;
    println!(
        "\nunbroadcast([0, -1/3, -4/3], [1]) = {:?}",
        g_b.to_vec::<f64>()?
    );

    // The tape was consumed by backward: it is empty until the next forward.
    println!("tape length after backward: {}", kiln::autograd::tape_len());
    Ok(())
}
