//! Tests of the packed GEMM (and, through `gemm_f32`'s dispatch, the gemv
//! path) against the naive kernel run in f64.

use super::*;
use crate::kernels::matmul_naive;
use proptest::prelude::*;

/// A tiny deterministic generator (xorshift64*), so tests need no crate.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// How an operand is laid out in memory.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Layout {
    /// Contiguous, rows one after another.
    Row,
    /// Contiguous, columns one after another (a transposed view).
    Col,
    /// Row-major with `pad` extra elements per row (a sliced view).
    RowPadded(usize),
    /// Column-major with padding (a sliced transposed view).
    ColPadded(usize),
    /// Row-major, rows stored last to first (negative row stride).
    RowReversed,
    /// Neither stride is 1: every other element of a row-major buffer.
    Strided2,
}

pub(crate) const LAYOUTS: [Layout; 6] = [
    Layout::Row,
    Layout::Col,
    Layout::RowPadded(3),
    Layout::ColPadded(5),
    Layout::RowReversed,
    Layout::Strided2,
];

/// A matrix view over a buffer that may contain elements outside the view.
#[derive(Clone, Debug)]
pub(crate) struct Mat {
    pub data: Vec<f32>,
    pub off: isize,
    pub rs: isize,
    pub cs: isize,
    pub rows: usize,
    pub cols: usize,
}

/// Marks buffer elements outside the view, to catch stray writes.
const SENTINEL: f32 = 1234.5;

impl Mat {
    pub(crate) fn new(rows: usize, cols: usize, layout: Layout, fill: impl FnMut() -> f32) -> Mat {
        let (r, c) = (rows as isize, cols as isize);
        let (len, off, rs, cs) = match layout {
            Layout::Row => (rows * cols, 0, c, 1),
            Layout::Col => (rows * cols, 0, 1, r),
            Layout::RowPadded(p) => (rows * (cols + p), 0, c + p as isize, 1),
            Layout::ColPadded(p) => (cols * (rows + p), 0, 1, r + p as isize),
            Layout::RowReversed => (rows * cols, (r - 1).max(0) * c, -c, 1),
            Layout::Strided2 => (rows * cols * 2, 0, 2 * c, 2),
        };
        let mut m = Mat {
            data: vec![SENTINEL; len.max(1)],
            off,
            rs,
            cs,
            rows,
            cols,
        };
        let mut fill = fill;
        for i in 0..rows {
            for j in 0..cols {
                let at = m.at(i, j);
                m.data[at] = fill();
            }
        }
        m
    }
    pub(crate) fn at(&self, i: usize, j: usize) -> usize {
        (self.off + i as isize * self.rs + j as isize * self.cs) as usize
    }
    pub(crate) fn get(&self, i: usize, j: usize) -> f32 {
        self.data[self.at(i, j)]
    }
    pub(crate) fn ptr(&self) -> *const f32 {
        self.data.as_ptr().wrapping_offset(self.off)
    }
    pub(crate) fn mut_ptr(&mut self) -> *mut f32 {
        self.data.as_mut_ptr().wrapping_offset(self.off)
    }
    /// Every element outside the view still holds the sentinel.
    pub(crate) fn assert_outside_untouched(&self) {
        let mut inside = vec![false; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                inside[self.at(i, j)] = true;
            }
        }
        for (idx, &v) in self.data.iter().enumerate() {
            assert!(
                inside[idx] || v == SENTINEL,
                "wrote outside the view at {idx}"
            );
        }
    }
}

/// The f64 reference `alpha·A·B + beta·C0` and the error scale
/// `|alpha|·|A|·|B| + |beta·C0|` for each element.
fn reference(alpha: f32, a: &Mat, b: &Mat, beta: f32, c0: &Mat) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let to64 = |x: &Mat, abs: bool| -> Vec<f64> {
        let mut v = vec![0.0; m.max(k) * n.max(k)];
        for i in 0..x.rows {
            for j in 0..x.cols {
                let e = x.get(i, j) as f64;
                v[i * x.cols + j] = if abs { e.abs() } else { e };
            }
        }
        v
    };
    let mut exact = vec![0.0; m * n];
    let mut scale = vec![0.0; m * n];
    for (out, abs) in [(&mut exact, false), (&mut scale, true)] {
        let (a64, b64) = (to64(a, abs), to64(b, abs));
        let al = if abs {
            (alpha as f64).abs()
        } else {
            alpha as f64
        };
        // SAFETY: row-major m×k, k×n and m×n buffers of at least that size.
        unsafe {
            matmul_naive::gemm_f64(Gemm {
                m,
                k,
                n,
                alpha: al,
                a: a64.as_ptr(),
                rsa: k as isize,
                csa: 1,
                b: b64.as_ptr(),
                rsb: n as isize,
                csb: 1,
                beta: 0.0,
                c: out.as_mut_ptr(),
                rsc: n as isize,
                csc: 1,
            })
        };
    }
    if beta != 0.0 {
        for i in 0..m {
            for j in 0..n {
                let c = (beta as f64) * c0.get(i, j) as f64;
                exact[i * n + j] += c;
                scale[i * n + j] += c.abs();
            }
        }
    }
    (exact, scale)
}

/// Checks `got` against the f64 reference.
///
/// Tolerance: every f32 rounding adds at most u = 2⁻²⁴ ≈ 6e-8 of the running
/// magnitude, which is bounded by Σ|a||b|. Over k roundings the errors
/// behave like a random walk, ~√k·u·Σ|a||b| (k·u at worst), plus a few u
/// from the alpha/beta update. `1e-5·√k` relative to that scale leaves ~100×
/// margin over the random-walk estimate, yet a single missing, doubled or
/// misplaced term (about 1/k of the scale, ≥ 1/257 here) is far above it.
pub(crate) fn assert_close(got: &Mat, exact: &[f64], scale: &[f64], k: usize, what: &str) {
    let tol = 1e-5 * (k.max(1) as f64).sqrt();
    for i in 0..got.rows {
        for j in 0..got.cols {
            let (g, e, s) = (
                got.get(i, j) as f64,
                exact[i * got.cols + j],
                scale[i * got.cols + j],
            );
            assert!(
                (g - e).abs() <= tol * s + 1e-30,
                "{what}: C[{i},{j}] = {g}, want {e} (scale {s})"
            );
        }
    }
    got.assert_outside_untouched();
}

/// One product, with the operands' layouts and alpha/beta chosen.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Case {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub la: Layout,
    pub lb: Layout,
    pub lc: Layout,
    pub alpha: f32,
    pub beta: f32,
}

impl Case {
    pub(crate) fn plain(m: usize, k: usize, n: usize) -> Case {
        Case {
            m,
            k,
            n,
            la: Layout::Row,
            lb: Layout::Row,
            lc: Layout::Row,
            alpha: 1.0,
            beta: 0.0,
        }
    }
    pub(crate) fn operands(&self, seed: u64) -> (Mat, Mat, Mat) {
        let mut rng = Rng::new(seed);
        let a = Mat::new(self.m, self.k, self.la, || rng.next());
        let b = Mat::new(self.k, self.n, self.lb, || rng.next());
        // beta == 0 promises C is never read: fill it with NaN to prove it.
        let c = if self.beta == 0.0 {
            Mat::new(self.m, self.n, self.lc, || f32::NAN)
        } else {
            Mat::new(self.m, self.n, self.lc, || rng.next())
        };
        (a, b, c)
    }
    /// Runs the case through `gemm_f32_with` and checks it.
    pub(crate) fn check(&self, isa: Isa, threads: usize, seed: u64) {
        let (a, b, mut c) = self.operands(seed);
        let (exact, scale) = reference(self.alpha, &a, &b, self.beta, &c);
        self.multiply(isa, threads, &a, &b, &mut c);
        assert_close(
            &c,
            &exact,
            &scale,
            self.k,
            &format!("{isa:?} ×{threads} {self:?}"),
        );
    }
    /// Runs the case through `gemm_f32_with` and returns C's buffer.
    pub(crate) fn run(&self, isa: Isa, threads: usize, seed: u64) -> Vec<f32> {
        let (a, b, mut c) = self.operands(seed);
        self.multiply(isa, threads, &a, &b, &mut c);
        c.data
    }
    /// `C = alpha·A·B + beta·C` through `gemm_f32_with`.
    fn multiply(&self, isa: Isa, threads: usize, a: &Mat, b: &Mat, c: &mut Mat) {
        let g = Gemm {
            m: self.m,
            k: self.k,
            n: self.n,
            alpha: self.alpha,
            a: a.ptr(),
            rsa: a.rs,
            csa: a.cs,
            b: b.ptr(),
            rsb: b.rs,
            csb: b.cs,
            beta: self.beta,
            c: c.mut_ptr(),
            rsc: c.rs,
            csc: c.cs,
        };
        // SAFETY: the views are in bounds of their buffers.
        unsafe { gemm_f32_with(isa, threads, g) };
    }
}

/// Every instruction set this CPU can run (always including the fallback).
pub(crate) fn isas() -> Vec<Isa> {
    // The bf16 level runs the same f32 kernels as avx512: skip it.
    let mut v: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|i| !i.has_bf16_dot())
        .collect();
    v.reverse();
    v
}

#[test]
fn odd_shapes_every_isa() {
    let dims = [1, 7, 13, 31, 33, 65];
    for isa in isas() {
        for &m in &dims {
            for &k in &dims {
                for &n in &dims {
                    Case::plain(m, k, n).check(isa, 1, (m * 10_000 + k * 100 + n) as u64);
                }
            }
        }
    }
}

#[test]
fn larger_shapes_cross_cache_blocks() {
    // k > KC (several K blocks, beta = 1 after the first), m > MR·many,
    // n > NC (several column blocks), and 257-sized edges everywhere.
    let shapes = [
        (129, 257, 129),
        (257, 129, 33),
        (40, 1000, 70),
        (33, 65, 1100),
        (1600, 20, 40),
    ];
    for isa in isas() {
        for &(m, k, n) in &shapes {
            Case::plain(m, k, n).check(isa, 1, 7);
            Case {
                alpha: -0.75,
                beta: 1.5,
                ..Case::plain(m, k, n)
            }
            .check(isa, 1, 8);
        }
    }
}

#[test]
fn every_layout_pair() {
    for isa in isas() {
        for (s, &la) in LAYOUTS.iter().enumerate() {
            for (t, &lb) in LAYOUTS.iter().enumerate() {
                let lc = LAYOUTS[(s + t) % LAYOUTS.len()];
                for &(m, k, n) in &[(13, 33, 31), (37, 70, 65)] {
                    let case = Case {
                        la,
                        lb,
                        lc,
                        alpha: 1.25,
                        beta: -0.5,
                        ..Case::plain(m, k, n)
                    };
                    case.check(isa, 1, (s * 7 + t) as u64);
                }
            }
        }
    }
}

#[test]
fn alpha_beta_variants() {
    let ab = [
        (1.0, 0.0),
        (2.5, 0.0),
        (1.0, 1.0),
        (-0.5, 2.0),
        (0.0, 0.5),
        (0.0, 0.0),
    ];
    for isa in isas() {
        for &(alpha, beta) in &ab {
            for &(m, k, n) in &[(25, 40, 70), (1, 40, 70), (25, 40, 1)] {
                Case {
                    alpha,
                    beta,
                    lc: Layout::RowPadded(2),
                    ..Case::plain(m, k, n)
                }
                .check(isa, 1, 3);
            }
        }
    }
}

#[test]
fn degenerate_dimensions() {
    for isa in isas() {
        // k == 0: C = beta·C (zeros when beta == 0, even over NaN).
        Case {
            beta: 0.0,
            ..Case::plain(5, 0, 9)
        }
        .check(isa, 1, 1);
        Case {
            beta: 3.0,
            ..Case::plain(5, 0, 9)
        }
        .check(isa, 1, 1);
        Case::plain(5, 1, 9).check(isa, 1, 1);
        Case::plain(1, 1, 1).check(isa, 1, 1);
        Case::plain(1, 64, 1).check(isa, 1, 1);
        // m or n == 0: nothing to do, nothing touched.
        for (m, n) in [(0, 5), (5, 0)] {
            let (a, b, mut c) = Case::plain(m, 4, n).operands(1);
            let g = Gemm {
                m,
                k: 4,
                n,
                alpha: 1.0,
                a: a.ptr(),
                rsa: a.rs,
                csa: a.cs,
                b: b.ptr(),
                rsb: b.rs,
                csb: b.cs,
                beta: 0.0,
                c: c.mut_ptr(),
                rsc: c.rs,
                csc: c.cs,
            };
            // SAFETY: nothing is accessed for empty C.
            unsafe { gemm_f32_with(isa, 1, g) };
        }
    }
}

#[test]
fn alpha_zero_does_not_read_a_or_b() {
    let a = [f32::NAN; 6];
    let b = [f32::NAN; 6];
    let mut c = [2.0f32; 4];
    // SAFETY: 2×3, 3×2 and 2×2 row-major buffers.
    unsafe {
        gemm_f32(Gemm {
            m: 2,
            k: 3,
            n: 2,
            alpha: 0.0,
            a: a.as_ptr(),
            rsa: 3,
            csa: 1,
            b: b.as_ptr(),
            rsb: 2,
            csb: 1,
            beta: 0.5,
            c: c.as_mut_ptr(),
            rsc: 2,
            csc: 1,
        })
    };
    assert_eq!(c, [1.0; 4]);
}

#[test]
fn public_entry_points_match_reference() {
    // Large enough to take the parallel path on the default pool.
    let mut rng = Rng::new(11);
    let (m, k, n) = (150, 200, 170);
    let a: Vec<f32> = (0..m * k).map(|_| rng.next()).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.next()).collect();
    let mut c = vec![f32::NAN; m * n];
    let mut want = vec![0.0f32; m * n];
    let (ki, ni) = (k as isize, n as isize);
    let g = Gemm {
        m,
        k,
        n,
        alpha: 1.0,
        a: a.as_ptr(),
        rsa: ki,
        csa: 1,
        b: b.as_ptr(),
        rsb: 1,
        csb: ki,
        beta: 0.0,
        c: c.as_mut_ptr(),
        rsc: ni,
        csc: 1,
    };
    // SAFETY: row-major buffers of the right sizes (B read transposed as
    // its own n×k view reinterpreted: both calls use the same strides).
    unsafe {
        gemm_f32(g);
        matmul_naive::gemm_f32(Gemm {
            c: want.as_mut_ptr(),
            ..g
        });
    }
    for (g, w) in c.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 * (k as f32).sqrt(), "{g} vs {w}");
    }
    // f64 delegates to matrixmultiply.
    let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    let mut c64 = vec![f64::NAN; m * n];
    let mut w64 = vec![0.0f64; m * n];
    let g = Gemm {
        m,
        k,
        n,
        alpha: 2.0,
        a: a64.as_ptr(),
        rsa: ki,
        csa: 1,
        b: b64.as_ptr(),
        rsb: ni,
        csb: 1,
        beta: 0.0,
        c: c64.as_mut_ptr(),
        rsc: ni,
        csc: 1,
    };
    // SAFETY: as above.
    unsafe {
        gemm_f64(g);
        matmul_naive::gemm_f64(Gemm {
            c: w64.as_mut_ptr(),
            ..g
        });
    }
    for (g, w) in c64.iter().zip(&w64) {
        assert!((g - w).abs() <= 1e-12 * k as f64, "{g} vs {w}");
    }
    // k == 0 and alpha == 0 are handled before delegating: C = beta·C.
    let mut small = [f64::NAN, f64::NAN, 3.0, 4.0];
    // SAFETY: 1×2 views of a 4-element buffer; A and B are not read.
    unsafe {
        gemm_f64(Gemm {
            m: 1,
            k: 0,
            n: 2,
            alpha: 1.0,
            a: a64.as_ptr(),
            rsa: 0,
            csa: 0,
            b: b64.as_ptr(),
            rsb: 0,
            csb: 0,
            beta: 0.0,
            c: small.as_mut_ptr(),
            rsc: 2,
            csc: 1,
        });
        gemm_f64(Gemm {
            m: 1,
            k: 5,
            n: 2,
            alpha: 0.0,
            a: a64.as_ptr(),
            rsa: 1,
            csa: 1,
            b: b64.as_ptr(),
            rsb: 1,
            csb: 1,
            beta: 0.5,
            c: small.as_mut_ptr().add(2),
            rsc: 2,
            csc: 1,
        });
    }
    assert_eq!(small, [0.0, 0.0, 1.5, 2.0]);
}

#[test]
fn thread_count_does_not_change_bits() {
    // Shapes that exercise column splits, row splits (narrow C, and tall C
    // through `gemm_rows`), several K blocks, and both gemv layouts.
    let cases = [
        Case::plain(200, 300, 150),
        Case {
            lb: Layout::Col,
            ..Case::plain(90, 700, 1100)
        },
        Case {
            la: Layout::Col,
            beta: 1.0,
            ..Case::plain(500, 70, 40)
        },
        Case {
            lb: Layout::Col,
            ..Case::plain(1, 300, 3000)
        },
        Case {
            alpha: 0.5,
            beta: 2.0,
            ..Case::plain(1, 300, 3000)
        },
        Case {
            la: Layout::Col,
            ..Case::plain(3001, 200, 1)
        },
        // Row splits (`gemm_rows`): several K and column blocks; bands
        // taller than one MC block.
        Case {
            lb: Layout::Col,
            beta: 0.5,
            ..Case::plain(400, 900, 1000)
        },
        Case::plain(6500, 400, 37),
    ];
    for isa in isas() {
        for (s, case) in cases.iter().enumerate() {
            let one = case.run(isa, 1, s as u64);
            for threads in [2, 3] {
                // Cut for `threads` threads, run on Kiln's pool.
                let many = case.run(isa, threads, s as u64);
                let same = one
                    .iter()
                    .zip(&many)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{isa:?}: {threads} threads differ from 1 on {case:?}");
            }
        }
    }
}

#[test]
fn parallel_paths_are_correct() {
    for isa in isas() {
        for case in [
            Case {
                lb: Layout::Col,
                ..Case::plain(77, 129, 1500)
            },
            Case {
                lc: Layout::Col,
                beta: 0.5,
                ..Case::plain(700, 33, 20)
            },
            Case {
                la: Layout::Col,
                alpha: -2.0,
                ..Case::plain(300, 500, 700)
            },
            Case::plain(6500, 400, 37),
        ] {
            case.check(isa, 2, 5);
        }
    }
}

#[test]
fn task_plan_balances_threads() {
    // n = 768 fits one block, but two threads get two blocks each (at
    // least 8 panels wide) so that one can take over from a stalled other.
    assert_eq!(plan(768, 32, 1024, 43, 2), (1, 192));
    assert_eq!(plan(2304, 32, 1024, 43, 2), (1, 288));
    // Wide C: at most NC per block.
    let (rows, w) = plan(50257, 32, 1024, 43, 2);
    assert_eq!(rows, 1);
    assert!(w <= 1024 && w % 32 == 0);
    // Narrow C: rows are split instead.
    assert_eq!(plan(20, 32, 1024, 43, 2), (2, 32));
    // One thread: blocks of at most NC.
    assert_eq!(plan(3000, 32, 1024, 43, 1), (1, 1024));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_shapes_and_strides(
        m in 1usize..80, k in 0usize..90, n in 1usize..80,
        la in 0usize..6, lb in 0usize..6, lc in 0usize..6,
        alpha in prop::sample::select(vec![1.0f32, -2.0, 0.25]),
        beta in prop::sample::select(vec![0.0f32, 1.0, -0.5]),
        seed in 0u64..1000,
    ) {
        let case = Case { m, k, n, la: LAYOUTS[la], lb: LAYOUTS[lb], lc: LAYOUTS[lc], alpha, beta };
        for isa in isas() {
            case.check(isa, 1, seed);
        }
    }
}
