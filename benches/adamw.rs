//! One AdamW step over GPT-2 small's 124 M parameters (with gradients
//! present), for `scripts/compare_pieces.py`. Run:
//! `cargo bench --bench adamw -- [--json]`. Median of repeats, in ms.

use std::time::Instant;

use kiln::models::gpt2::{Gpt2, Gpt2Config};
use kiln::nn::optim::{decay_groups, AdamConfig, AdamW, Optimizer};
use kiln::nn::Module;

fn main() {
    let json = std::env::args().any(|a| a == "--json");
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
    times.sort_by(|a, b| a.total_cmp(b));
    let ms = times[times.len() / 2];
    let threads = kiln::tensor::parallel::num_threads();
    if json {
        println!("{{\"case\": \"adamw_124m\", \"value\": {ms}, \"unit\": \"ms\", \"threads\": {threads}}}");
    } else {
        println!("adamw_124m {ms:.1} ms ({threads} threads)");
    }
}
