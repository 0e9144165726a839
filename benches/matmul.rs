//! Matrix-multiply benchmarks: Kiln's packed GEMM / gemv beside
//! `matrixmultiply::sgemm` (the baseline) and, at 256³ only, the naive
//! triple loop; plus the book's ladder (`steps_flops`: the intermediate
//! kernels of `matmul_steps` and a register-only FMA peak, one thread).
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
//! `KILN_BENCH_CPU_TIME=1` switches to a contention-proof mode for shared
//! machines: everything runs on one thread and criterion measures that
//! thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) instead of wall time, so
//! time slices lost to other processes do not count. It compares per-core
//! efficiency, not 2-thread throughput.
//!
//! Run (short, one shape):
//! `cargo bench --bench matmul -- 'gpt2_flops/kiln/qkv' --warm-up-time 1 --measurement-time 3`

#[path = "../src/alloc.rs"]
mod alloc;

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use kiln_tensor::kernels::matmul_bf16::{self, to_bf16_bits, Elems, GemmBf16, Operand};
use kiln_tensor::kernels::{matmul_naive, matmul_packed, matmul_steps, Gemm};

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
    /// The product `C = A·B` over this problem's buffers.
    fn gemm(&mut self) -> Gemm<f32> {
        Gemm {
            m: self.m,
            k: self.k,
            n: self.n,
            alpha: 1.0,
            a: self.a.as_ptr(),
            rsa: self.k as isize,
            csa: 1,
            b: self.b.as_ptr(),
            rsb: self.rsb,
            csb: self.csb,
            beta: 0.0,
            c: self.c.as_mut_ptr(),
            rsc: self.n as isize,
            csc: 1,
        }
    }
    fn kiln(&mut self) {
        let g = self.gemm();
        // SAFETY: the buffers hold exactly these row-major / transposed views.
        unsafe { matmul_packed::gemm_f32(g) }
    }
    fn matrixmultiply(&mut self) {
        let g = self.gemm();
        // SAFETY: as above.
        unsafe {
            matrixmultiply::sgemm(
                g.m, g.k, g.n, g.alpha, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, g.beta, g.c, g.rsc,
                g.csc,
            )
        }
    }
    fn naive(&mut self) {
        let g = self.gemm();
        // SAFETY: as above.
        unsafe { matmul_naive::gemm_f32(g) }
    }
}

/// Square products, FLOP/s.
fn square<M: Measurement>(c: &mut Criterion<M>) {
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

/// FMAs per chain per call of [`fma_peak`].
const PEAK_ITERS: usize = 10_000;

/// The f32 FMA peak of one core, measured: 24 independent chains of AVX-512
/// FMAs on registers only (the micro-kernel's accumulator count, enough to
/// hide the FMA latency), no loads or stores. Each call does
/// `PEAK_ITERS · 24 · 16` FMAs, `2·` that many FLOPs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_peak(x: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(x); 24];
    let (mul, add) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..PEAK_ITERS {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, mul, add);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, &r| _mm512_add_ps(s, r));
    _mm512_reduce_add_ps(sum)
}

/// The book's ladder (`docs/src/matmul.md`, "The ladder, measured"): the
/// naive loop, the three intermediate kernels of `matmul_steps` and the full
/// kernel at 512³ (all but naive at 2048³, step 3 and the full kernel at
/// 4096³), FLOP/s, **one thread** (the pool is set to
/// one thread for the group and restored after), so each rung is per core.
/// Run: `cargo bench --bench matmul -- steps_flops --warm-up-time 1 --measurement-time 3`
fn steps<M: Measurement>(c: &mut Criterion<M>) {
    let threads = kiln_tensor::parallel::num_threads();
    kiln_tensor::parallel::set_num_threads(1);
    let mut group = c.benchmark_group("steps_flops");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    type Step = fn(usize, usize, usize, &[f32], &[f32], &mut [f32]);
    let rungs: [(&str, Step); 3] = [
        ("step1_ipj", matmul_steps::step1_ipj),
        ("step2_register_tile", matmul_steps::step2_register_tile),
        ("step3_packed", matmul_steps::step3_packed),
    ];
    // 512³: packed B (1 MiB) fits L2. 2048³: k is past KC, packed B (16
    // MiB) fits a 32 MiB L3. 4096³: packed B (64 MiB) does not, which is
    // where cache blocking has to pay (only step 3 and the full kernel:
    // the others would take minutes there, naive already at 2048³).
    for s in [512, 2048, 4096] {
        let mut p = Problem::new(s, s, s, false);
        group.throughput(Throughput::Elements(p.flops()));
        let label = p.label("square");
        if s == 512 {
            group.bench_function(BenchmarkId::new("naive", &label), |bch| {
                bch.iter(|| p.naive())
            });
        }
        for (name, step) in rungs {
            if s == 4096 && name != "step3_packed" {
                continue;
            }
            group.bench_function(BenchmarkId::new(name, &label), |bch| {
                bch.iter(|| step(p.m, p.k, p.n, &p.a, &p.b, &mut p.c))
            });
        }
        group.bench_function(BenchmarkId::new("kiln", &label), |bch| {
            bch.iter(|| p.kiln())
        });
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        group.throughput(Throughput::Elements(2 * (PEAK_ITERS * 24 * 16) as u64));
        group.bench_function("fma_peak_avx512", |bch| {
            // SAFETY: AVX-512F was detected just above.
            bch.iter(|| unsafe { fma_peak(std::hint::black_box(1.0)) })
        });
    }
    group.finish();
    kiln_tensor::parallel::set_num_threads(threads);
}

/// GPT-2 small products (sequence 512, width 768), named after the layer,
/// FLOP/s. `lm_head*` multiply by `wteᵀ`, a transposed (column-major) view
/// of the `[50257, 768]` embedding, exactly as the tied head does.
fn gpt2<M: Measurement>(c: &mut Criterion<M>) {
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

/// A product with both operands in bf16 (as `a.bfloat16() @ b.bfloat16()`),
/// f32 accumulation and output, on the shapes of [`square`] and [`gpt2`];
/// for the gemv shapes (`m = 1`, a decode step) the activations are f32 and
/// only the weights bf16.
struct Bf16Problem {
    p: Problem,
    a: Vec<u16>,
    b: Vec<u16>,
}

impl Bf16Problem {
    fn new(m: usize, k: usize, n: usize, b_transposed: bool) -> Bf16Problem {
        let p = Problem::new(m, k, n, b_transposed);
        let a = p.a.iter().map(|&x| to_bf16_bits(x)).collect();
        let b = p.b.iter().map(|&x| to_bf16_bits(x)).collect();
        Bf16Problem { p, a, b }
    }
    fn kiln(&mut self) {
        let p = &mut self.p;
        // SAFETY: the buffers hold exactly these row-major / transposed views.
        unsafe {
            matmul_bf16::gemm_bf16(GemmBf16 {
                m: p.m,
                k: p.k,
                n: p.n,
                alpha: 1.0,
                a: Operand {
                    // A decode step's activations are f32 (the gemv path).
                    data: if p.m == 1 {
                        Elems::F32(p.a.as_ptr())
                    } else {
                        Elems::Bf16(self.a.as_ptr())
                    },
                    rs: p.k as isize,
                    cs: 1,
                },
                b: Operand {
                    data: Elems::Bf16(self.b.as_ptr()),
                    rs: p.rsb,
                    cs: p.csb,
                },
                beta: 0.0,
                c: p.c.as_mut_ptr(),
                rsc: p.n as isize,
                csc: 1,
            })
        }
    }
}

/// bf16 products, FLOP/s (`KILN_SIMD` picks the path: AMX or AVX512-BF16
/// where the CPU has it, else the widening fallback).
fn bf16<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = c.benchmark_group("bf16_flops");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let shapes = [
        ("square", 1024, 1024, 1024, false),
        ("qkv", 512, 768, 2304, false),
        ("mlp_up", 512, 768, 3072, false),
        ("mlp_down", 512, 3072, 768, false),
        ("lm_head", 512, 768, 50257, true),
        ("lm_head_gemv", 1, 768, 50257, true),
        ("mlp_up_gemv", 1, 768, 3072, false),
    ];
    for (name, m, k, n, bt) in shapes {
        let mut p = Bf16Problem::new(m, k, n, bt);
        group.throughput(Throughput::Elements(p.p.flops()));
        let label = p.p.label(name);
        group.bench_function(BenchmarkId::new("kiln", &label), |bch| {
            bch.iter(|| p.kiln())
        });
    }
    group.finish();
}

/// CPU time of the calling thread, as a criterion measurement (Linux).
///
/// Values are `Duration`s like wall time, so reports and the FLOP/s
/// throughput read the same way.
struct ThreadCpuTime(WallTime);

impl ThreadCpuTime {
    fn now() -> Duration {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: a plain libc call writing into `ts`.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        Duration::new(ts.sec as u64, ts.nsec as u32)
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        Self::now()
    }
    fn end(&self, start: Duration) -> Duration {
        Self::now() - start
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.0.formatter()
    }
}

fn main() {
    alloc::keep_freed_memory();
    if std::env::var_os("KILN_BENCH_CPU_TIME").is_some() {
        if !cfg!(target_os = "linux") {
            panic!("KILN_BENCH_CPU_TIME needs Linux's CLOCK_THREAD_CPUTIME_ID");
        }
        // Everything on this thread, or its CPU time would miss the work.
        kiln_tensor::parallel::set_num_threads(1);
        std::env::set_var("MATMUL_NUM_THREADS", "1");
        let mut c = Criterion::default()
            .with_measurement(ThreadCpuTime(WallTime))
            .configure_from_args();
        square(&mut c);
        steps(&mut c);
        gpt2(&mut c);
        bf16(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        square(&mut c);
        steps(&mut c);
        gpt2(&mut c);
        bf16(&mut c);
        c.final_summary();
    }
}
