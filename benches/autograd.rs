//! Tape overhead and backward speed, for `scripts/compare_pieces.py`.
//! Run: `cargo bench --bench autograd -- [--json] [CASE…]`. Medians of
//! repeats, timed here (each case is either tiny or seconds long).
//!
//! - `mlp_tiny`: forward + backward of a 64→64→10 MLP (ReLU, cross-entropy)
//!   on a batch of 8 — where per-op dispatch dominates (µs per iteration).
//! - `block_backward`: backward of one GPT-2-small transformer block
//!   (pre-LN attention + MLP, C = 768, 12 heads) on B = 4, T = 128 (ms).

#[path = "../src/alloc.rs"]
mod alloc;

use std::time::Instant;

#[path = "common/report.rs"]
mod report;
use report::{median, Cases};

use kiln::autograd::Var;
use kiln::tensor::{DType, Rng, Tensor};

fn randn(shape: &[usize], std: f64, rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, 0.0, std, DType::F32, rng).unwrap()
}

fn mlp_tiny() -> f64 {
    let mut rng = Rng::new(0);
    let w1 = Var::parameter(randn(&[64, 64], 0.1, &mut rng));
    let b1 = Var::parameter(randn(&[64], 0.1, &mut rng));
    let w2 = Var::parameter(randn(&[64, 10], 0.1, &mut rng));
    let b2 = Var::parameter(randn(&[10], 0.1, &mut rng));
    let x = Var::constant(randn(&[8, 64], 1.0, &mut rng));
    let y = Tensor::from_vec((0..8).map(|i| i % 10).collect::<Vec<i64>>(), &[8]).unwrap();
    let mut times = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        for _ in 0..200 {
            let h = x.matmul(&w1).unwrap().add(&b1).unwrap().relu().unwrap();
            let loss = h
                .matmul(&w2)
                .unwrap()
                .add(&b2)
                .unwrap()
                .cross_entropy(&y, -100)
                .unwrap();
            loss.backward().unwrap();
        }
        times.push(t0.elapsed().as_secs_f64() / 200.0);
        for p in [&w1, &b1, &w2, &b2] {
            p.zero_grad();
        }
    }
    median(times) * 1e6
}

fn block_backward() -> f64 {
    let (b, t, c, nh) = (4, 128, 768, 12);
    let hs = c / nh;
    let mut rng = Rng::new(1);
    let p = |shape: &[usize], std: f64, rng: &mut Rng| Var::parameter(randn(shape, std, rng));
    let ln1w = Var::parameter(Tensor::ones(&[c], DType::F32));
    let ln1b = Var::parameter(Tensor::zeros(&[c], DType::F32));
    let ln2w = Var::parameter(Tensor::ones(&[c], DType::F32));
    let ln2b = Var::parameter(Tensor::zeros(&[c], DType::F32));
    let wa = p(&[c, 3 * c], 0.02, &mut rng);
    let ba = p(&[3 * c], 0.0, &mut rng);
    let wp = p(&[c, c], 0.02, &mut rng);
    let bp = p(&[c], 0.0, &mut rng);
    let wf = p(&[c, 4 * c], 0.02, &mut rng);
    let bf = p(&[4 * c], 0.0, &mut rng);
    let wq = p(&[4 * c, c], 0.02, &mut rng);
    let bq = p(&[c], 0.0, &mut rng);
    let x = Var::parameter(randn(&[b, t, c], 1.0, &mut rng));
    let r = randn(&[b, t, c], 1.0, &mut rng);
    let mut times = Vec::new();
    // 15 timed passes after one warm-up, as compare_pieces.py does: torch's
    // and Kiln's passes each vary by ±10 % here.
    for i in 0..16 {
        let h = x.layer_norm(Some(&ln1w), Some(&ln1b), 1e-5).unwrap();
        let qkv = h.matmul(&wa).unwrap().add(&ba).unwrap();
        let parts = qkv.split_sizes(&[c, c, c], 2).unwrap();
        let heads = |v: &Var| v.reshape(&[b, t, nh, hs]).unwrap().transpose(1, 2).unwrap();
        let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
        // Scale, causal mask and softmax in one op, as kiln-nn's attention.
        let att = q
            .matmul(&k.t().unwrap())
            .unwrap()
            .causal_softmax((hs as f64).sqrt(), 0)
            .unwrap();
        let y = att
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape(&[b, t, c])
            .unwrap();
        let x2 = x.add(&y.matmul(&wp).unwrap().add(&bp).unwrap()).unwrap();
        let h2 = x2.layer_norm(Some(&ln2w), Some(&ln2b), 1e-5).unwrap();
        let m = h2.matmul(&wf).unwrap().add(&bf).unwrap().gelu().unwrap();
        let out = x2.add(&m.matmul(&wq).unwrap().add(&bq).unwrap()).unwrap();
        let loss = out
            .mul(&Var::constant(r.clone()))
            .unwrap()
            .sum_all()
            .unwrap();
        let t0 = Instant::now();
        loss.backward().unwrap();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
        for p in [
            &ln1w, &ln1b, &ln2w, &ln2b, &wa, &ba, &wp, &bp, &wf, &bf, &wq, &bq, &x,
        ] {
            p.zero_grad();
        }
    }
    median(times) * 1e3
}

fn main() {
    let cases = Cases::from_args();
    let run = |name: &str| cases.run(name);
    let report = |case: &str, value: f64, unit: &str| cases.report(case, value, unit);
    if run("mlp_tiny") {
        report("mlp_tiny", mlp_tiny(), "us");
    }
    if run("block_backward") {
        report("block_backward", block_backward(), "ms");
    }
}
