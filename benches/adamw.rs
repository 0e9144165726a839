//! One AdamW step over GPT-2 small's 124 M parameters (with gradients
//! present), for `scripts/compare_pieces.py`. Run:
//! `cargo bench --bench adamw -- [--json]`. Median of repeats, in ms.

#[path = "../src/alloc.rs"]
mod alloc;

use std::time::Instant;

#[path = "common/report.rs"]
mod report;
use report::{median, Cases};

use kiln::models::gpt2::{Gpt2, Gpt2Config};
use kiln::nn::optim::{decay_groups, AdamConfig, AdamW, Optimizer};
use kiln::nn::Module;

fn main() {
    let cases = Cases::from_args();
    if !cases.run("adamw_124m") {
        return;
    }
    let model = Gpt2::new(Gpt2Config::gpt2(), 0).unwrap();
    for p in model.parameters() {
        let v = p.value();
        p.set_grad(Some(v.mul_scalar(0.01).unwrap())).unwrap();
    }
    let mut opt = AdamW::new(
        decay_groups(model.named_parameters(), 1e-4, 0.1),
        AdamConfig::default(),
    );
    let mut times = Vec::new();
    for i in 0..6 {
        let t0 = Instant::now();
        opt.step().unwrap();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    cases.report("adamw_124m", median(times), "ms");
}
