//! Throughput of the non-matmul ops at GPT-2-small sizes, in elements/s.
//!
//!     cargo bench --bench ops -- --warm-up-time 1 --measurement-time 3
//!
//! Shapes: activations of one 512-token sequence (`[T, C] = [512, 768]`) and
//! one layer's attention scores (`[NH, T, T] = [12, 512, 512]`). The thread
//! count comes from `KILN_NUM_THREADS` (default: every logical CPU).
//! `scripts/compare_ops.py` runs the same shapes in PyTorch back to back.

#[path = "../src/alloc.rs"]
mod alloc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_tensor::{DType, Rng, Tensor};

fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, rng).unwrap()
}

fn ops(c: &mut Criterion) {
    alloc::keep_freed_memory();
    eprintln!(
        "kiln: {} threads, {} kernels",
        kiln_tensor::parallel::num_threads(),
        kiln_tensor::kernels::fastmath::Isa::detect().name()
    );
    let mut rng = Rng::new(0);
    let (t, ch) = (512, 768);
    let x = randn(&[t, ch], &mut rng); // (T, C)
    let w = randn(&[ch], &mut rng);
    let b = randn(&[ch], &mut rng);
    let att = randn(&[12, t, t], &mut rng); // (NH, T, T)
    let xt = x.t().unwrap(); // (C, T) view, strides (1, C)

    let mut g = c.benchmark_group("ops");
    let n = (t * ch) as u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function(BenchmarkId::new("softmax", "512x768"), |bch| {
        bch.iter(|| black_box(&x).softmax(-1).unwrap())
    });
    g.bench_function(BenchmarkId::new("layer_norm", "512x768"), |bch| {
        bch.iter(|| black_box(&x).layer_norm(Some(&w), Some(&b), 1e-5).unwrap())
    });
    g.bench_function(BenchmarkId::new("gelu", "512x768"), |bch| {
        bch.iter(|| black_box(&x).gelu().unwrap())
    });
    g.bench_function(BenchmarkId::new("add_bcast", "512x768+768"), |bch| {
        bch.iter(|| black_box(&x).add(&b).unwrap())
    });
    g.bench_function(BenchmarkId::new("exp", "512x768"), |bch| {
        bch.iter(|| black_box(&x).exp().unwrap())
    });
    g.bench_function(BenchmarkId::new("transpose_copy", "768x512"), |bch| {
        bch.iter(|| black_box(&xt).contiguous())
    });
    g.throughput(Throughput::Elements((12 * t * t) as u64));
    g.bench_function(BenchmarkId::new("softmax", "12x512x512"), |bch| {
        bch.iter(|| black_box(&att).softmax(-1).unwrap())
    });
    g.finish();
}

criterion_group!(benches, ops);
criterion_main!(benches);
