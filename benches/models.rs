//! Whole-model timings at GPT-2 shapes, for the PyTorch comparison in
//! `scripts/compare_models.py` (which runs this bench and transformers back
//! to back and prints ratios). Timing is done here rather than by criterion
//! because each case takes seconds; every case reports the median of its
//! repeats. Run: `cargo bench --bench models -- [--json] [CASE…]`.
//!
//! Cases (random weights, f32, the pool's thread count):
//! - `generate`: GPT-2 124M, batch 1, 8-token prompt, 128 greedy new tokens (tokens/s)
//! - `prefill`: GPT-2 124M, one forward over 1×512 tokens (seconds)
//! - `load`: load a saved 124M Hugging Face directory (seconds)
//! - `train_124m`: one training step (fwd + bwd + AdamW), B=4, T=128 (tokens/s)
//! - `train_baby`: one step of nanoGPT's baby GPT (4×4×128, block 64, batch 12, V=50257) (iterations/s)
//! - `generate_bf16`, `prefill_bf16`: the same with the matrices in bf16 (`model.to(bfloat16)`)
//! - `train_124m_bf16`: `train_124m` under bf16 autocast (`kiln train --bf16`) (tokens/s)

#[path = "../src/alloc.rs"]
mod alloc;

use std::time::Instant;

#[path = "common/report.rs"]
mod report;
use report::{median, Cases};

use kiln::autograd::{autocast_bf16, no_grad};
use kiln::models::gpt2::{
    generate, load_model_dir, save_model_dir, ForwardOptions, GenerationConfig, Gpt2, Gpt2Config,
};
use kiln::nn::optim::{clip_grad_norm, decay_groups, AdamConfig, AdamW, Optimizer};
use kiln::nn::Module;
use kiln::tensor::{DType, Tensor};

/// Prefill runs per case: the first is a warm-up (after it a bf16 model
/// keeps its reused weights packed, `kiln_nn::prepack`); the median of the
/// rest is reported. `scripts/compare_models.py` runs as many.
const PREFILL_RUNS: usize = 8;

fn ids(n: usize, v: usize) -> Vec<i64> {
    (0..n).map(|i| ((i * 7919 + 13) % v) as i64).collect()
}

fn train_step_secs(cfg: Gpt2Config, b: usize, t: usize, reps: usize, bf16: bool) -> f64 {
    let mut cfg = cfg;
    cfg.set_dropout(0.0);
    let model = Gpt2::new(cfg, 0).unwrap();
    let mut opt = AdamW::new(
        decay_groups(model.named_parameters(), 1e-4, 0.1),
        AdamConfig::default(),
    );
    let params = model.parameters();
    let x = Tensor::from_vec(ids(b * t, 50257), &[b, t]).unwrap();
    let mut times = Vec::new();
    for i in 0..reps + 1 {
        let t0 = Instant::now();
        let forward = || model.forward_with_loss(&x, &x).unwrap().1;
        // `kiln train --bf16`: the forward's matrix products, and the
        // gradient products they record, on bf16 operands.
        let loss = if bf16 {
            autocast_bf16(forward)
        } else {
            forward()
        };
        loss.backward().unwrap();
        clip_grad_norm(&params, 1.0).unwrap();
        opt.step().unwrap();
        opt.zero_grad();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    median(times)
}

/// Median tokens/s of greedy generation: an 8-token prompt, 128 new tokens
/// (no early stop), three runs.
fn generate_rate(model: &Gpt2) -> f64 {
    let prompt: Vec<u32> = ids(8, 50257).into_iter().map(|i| i as u32).collect();
    let cfg = GenerationConfig {
        max_new_tokens: 128,
        eos_token_id: None,
        ..Default::default()
    };
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let out = generate(
            model,
            std::slice::from_ref(&prompt),
            &cfg,
            None,
            &mut |_, _| {},
        )
        .unwrap();
        rates.push(out[0].len() as f64 / t0.elapsed().as_secs_f64());
    }
    median(rates)
}

fn main() {
    // As the `kiln` binary does: the allocator keeps freed memory, so a
    // decoding step's activations do not fault in fresh zeroed pages.
    alloc::keep_freed_memory();
    let cases = Cases::from_args();
    let run = |name: &str| cases.run(name);
    let report = |case: &str, value: f64, unit: &str| cases.report(case, value, unit);
    if run("generate") || run("prefill") || run("load") {
        let mut model = Gpt2::new(Gpt2Config::gpt2(), 0).unwrap();
        model.eval();
        if run("generate") {
            report("generate", generate_rate(&model), "tokens/s");
        }
        if run("prefill") {
            let x = Tensor::from_vec(ids(512, 50257), &[1, 512]).unwrap();
            let mut times = Vec::new();
            for _ in 0..PREFILL_RUNS {
                let t0 = Instant::now();
                no_grad(|| model.forward(&x, ForwardOptions::default()).unwrap());
                times.push(t0.elapsed().as_secs_f64());
            }
            report("prefill", median(times[1..].to_vec()), "s");
        }
        if run("load") {
            let dir = std::env::temp_dir().join(format!("kiln-bench-gpt2-{}", std::process::id()));
            save_model_dir(&model, &dir).unwrap();
            drop(model);
            let mut times = Vec::new();
            for _ in 0..4 {
                let t0 = Instant::now();
                let m = load_model_dir(&dir).unwrap();
                times.push(t0.elapsed().as_secs_f64());
                drop(m);
            }
            let _ = std::fs::remove_dir_all(&dir);
            report("load", median(times[1..].to_vec()), "s");
        }
    }
    if run("generate_bf16") || run("prefill_bf16") {
        // The f32 model's matrices rounded to bf16 (`model.to(bfloat16)`).
        let mut model = Gpt2::new(Gpt2Config::gpt2(), 0)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        model.eval();
        if run("generate_bf16") {
            report("generate_bf16", generate_rate(&model), "tokens/s");
        }
        if run("prefill_bf16") {
            // A generation's prefill: every position through the blocks,
            // the LM head for the last one (transformers: logits_to_keep=1).
            let x = Tensor::from_vec(ids(512, 50257), &[1, 512]).unwrap();
            let mut times = Vec::new();
            for _ in 0..PREFILL_RUNS {
                let t0 = Instant::now();
                no_grad(|| {
                    let h = model.hidden_states(&x, ForwardOptions::default()).unwrap();
                    h.narrow(1, 511, 1)
                        .unwrap()
                        .matmul(&model.wte.weight.t().unwrap())
                        .unwrap()
                });
                times.push(t0.elapsed().as_secs_f64());
            }
            report("prefill_bf16", median(times[1..].to_vec()), "s");
        }
    }
    if run("train_124m") {
        let s = train_step_secs(Gpt2Config::gpt2(), 4, 128, 3, false);
        report("train_124m", (4 * 128) as f64 / s, "tokens/s");
    }
    if run("train_124m_bf16") {
        let s = train_step_secs(Gpt2Config::gpt2(), 4, 128, 3, true);
        report("train_124m_bf16", (4 * 128) as f64 / s, "tokens/s");
    }
    if run("train_baby") {
        let s = train_step_secs(Gpt2Config::baby(), 12, 64, 5, false);
        report("train_baby", 1.0 / s, "iterations/s");
    }
}
