//! The tape of one GPT-2-small transformer block: every op the forward pass
//! records, with the shapes and strides it read and wrote, whether it made
//! a view or new memory and how many bytes; then every backward rule that
//! ran, in order, with its time. This is the table to read when a model is
//! slower or larger than expected.
//!
//! The block has GPT-2 small's width (C = 768, 12 heads) and random
//! weights; its input is `[1, 64, 768]` by default, `[4, 128, 768]` with
//! `--full` (the shape `benches/autograd.rs` times). The loss is the sum of
//! the output times a fixed random tensor, so every output element gets a
//! gradient.
//!
//! Run:  cargo run --release --example block_trace [-- --full]
//! Book: docs/src/autodiff.md ("The trace"). Code: autograd/src/trace.rs.

use kiln::autograd::{clear_tape, trace, Var};
use kiln::models::gpt2::{Gpt2, Gpt2Config};
use kiln::tensor::{DType, Rng, Tensor};

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--full");
    let (b, t) = if full { (4, 128) } else { (1, 64) };

    // One block of GPT-2 small's shape; a vocabulary of 1 keeps the unused
    // embedding small.
    let mut cfg = Gpt2Config::gpt2();
    cfg.n_layer = 1;
    cfg.vocab_size = 1;
    cfg.set_dropout(0.0);
    let model = Gpt2::new(cfg, 0)?;
    let block = &model.h[0];
    let c = model.config.n_embd;

    let mut rng = Rng::new(1);
    let x = Var::parameter(Tensor::randn(&[b, t, c], 0.0, 1.0, DType::F32, &mut rng)?);
    let r = Var::constant(Tensor::randn(&[b, t, c], 0.0, 1.0, DType::F32, &mut rng)?);

    clear_tape();
    // ANCHOR: trace
    let loss = block.forward_with(&x, None, None)?.mul(&r)?.sum_all()?;
    println!("== the tape of one block, x = [{b}, {t}, {c}]");
    print!("{}", trace::tape());
    loss.backward()?;
    println!("\n== the backward rules, in the order they ran");
    print!("{}", trace::last_backward());
    // ANCHOR_END: trace
    Ok(())
}
