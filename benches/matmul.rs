//! Matrix-multiply benchmarks: Kiln's packed GEMM / gemv beside
//! `matrixmultiply::sgemm` (the baseline) and, at 256³ only, the naive
//! triple loop.
//!
//! Throughput is in **FLOP/s**: every benchmark declares
//! `Throughput::Elements(2·m·n·k)` (one multiply and one add per term), so
//! criterion's "elem/s" column reads as FLOP/s. Groups are named `*_flops`
//! to say so. The `lm_head_gemv` case is memory-bound; its bytes/s is
//! `4·k·n / time` (B streamed once), which `scripts/compare_matmul.py`
//! prints beside the FLOP/s.
//!
//! Threads: Kiln's pool default (`KILN_NUM_THREADS`, else all logical CPUs);
//! matrixmultiply uses `MATMUL_NUM_THREADS`, else the physical core count.
//!
//! Run (short, one shape):
//! `cargo bench --bench matmul -- 'gpt2_flops/kiln/qkv' --warm-up-time 1 --measurement-time 3`

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use kiln_tensor::kernels::{matmul_naive, matmul_packed};

/// Deterministic values in [-1, 1) (no RNG crate needed for a benchmark).
fn filled(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// A product's operands: A row-major `m×k`, B either row-major `k×n` or the
/// transpose of a row-major `n×k` (GPT-2's tied `wte`), C row-major `m×n`.
struct Problem {
    m: usize,
    k: usize,
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    /// Element strides of B: `(n, 1)` row-major, `(1, k)` for `wteᵀ`.
    rsb: isize,
    csb: isize,
    c: Vec<f32>,
}

impl Problem {
    fn new(m: usize, k: usize, n: usize, b_transposed: bool) -> Problem {
        let (rsb, csb) = if b_transposed {
            (1, k as isize)
        } else {
            (n as isize, 1)
        };
        Problem {
            m,
            k,
            n,
            a: filled(m * k, 1),
            b: filled(k * n, 2),
            rsb,
            csb,
            c: vec![0.0; m * n],
        }
    }
    fn flops(&self) -> u64 {
        2 * (self.m * self.n * self.k) as u64
    }
    fn label(&self, name: &str) -> String {
        format!("{name}_{}x{}x{}", self.m, self.k, self.n)
    }
    fn kiln(&mut self) {
        // SAFETY: the buffers hold exactly these row-major / transposed views.
        unsafe {
            matmul_packed::gemm_f32(
                self.m,
                self.k,
                self.n,
                1.0,
                self.a.as_ptr(),
                self.k as isize,
                1,
                self.b.as_ptr(),
                self.rsb,
                self.csb,
                0.0,
                self.c.as_mut_ptr(),
                self.n as isize,
                1,
            )
        }
    }
    fn matrixmultiply(&mut self) {
        // SAFETY: as above.
        unsafe {
            matrixmultiply::sgemm(
                self.m,
                self.k,
                self.n,
                1.0,
                self.a.as_ptr(),
                self.k as isize,
                1,
                self.b.as_ptr(),
                self.rsb,
                self.csb,
                0.0,
                self.c.as_mut_ptr(),
                self.n as isize,
                1,
            )
        }
    }
    fn naive(&mut self) {
        // SAFETY: as above.
        unsafe {
            matmul_naive::gemm_f32(
                self.m,
                self.k,
                self.n,
                1.0,
                self.a.as_ptr(),
                self.k as isize,
                1,
                self.b.as_ptr(),
                self.rsb,
                self.csb,
                0.0,
                self.c.as_mut_ptr(),
                self.n as isize,
                1,
            )
        }
    }
}

/// Square products, FLOP/s.
fn square(c: &mut Criterion) {
    let mut group = c.benchmark_group("square_flops");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for s in [256, 512, 1024, 2048] {
        let mut p = Problem::new(s, s, s, false);
        group.throughput(Throughput::Elements(p.flops()));
        let label = p.label("square");
        group.bench_function(BenchmarkId::new("kiln", &label), |bch| {
            bch.iter(|| p.kiln())
        });
        group.bench_function(BenchmarkId::new("matrixmultiply", &label), |bch| {
            bch.iter(|| p.matrixmultiply())
        });
        if s == 256 {
            group.bench_function(BenchmarkId::new("naive", &label), |bch| {
                bch.iter(|| p.naive())
            });
        }
    }
    group.finish();
}

/// GPT-2 small products (sequence 512, width 768), named after the layer,
/// FLOP/s. `lm_head*` multiply by `wteᵀ`, a transposed (column-major) view
/// of the `[50257, 768]` embedding, exactly as the tied head does.
fn gpt2(c: &mut Criterion) {
    let mut group = c.benchmark_group("gpt2_flops");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let shapes = [
        ("qkv", 512, 768, 2304, false),
        ("mlp_up", 512, 768, 3072, false),
        ("mlp_down", 512, 3072, 768, false),
        ("lm_head_gemv", 1, 768, 50257, true),
        ("lm_head", 512, 768, 50257, true),
    ];
    for (name, m, k, n, bt) in shapes {
        let mut p = Problem::new(m, k, n, bt);
        group.throughput(Throughput::Elements(p.flops()));
        let label = p.label(name);
        group.bench_function(BenchmarkId::new("kiln", &label), |bch| {
            bch.iter(|| p.kiln())
        });
        group.bench_function(BenchmarkId::new("matrixmultiply", &label), |bch| {
            bch.iter(|| p.matrixmultiply())
        });
    }
    group.finish();
}

criterion_group!(benches, square, gpt2);
criterion_main!(benches);
