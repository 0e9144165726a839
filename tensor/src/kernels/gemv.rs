//! Row-vector × matrix: `y[1×n] = alpha · x[1×k] · B[k×n] + beta · y`.
//!
//! This is the `m == 1` product of token-by-token generation (and, through
//! `Cᵀ = Bᵀ·Aᵀ`, the `n == 1` one). It does 2 flops per element of B and
//! touches each element once, so it is bound by memory bandwidth, not FMAs:
//! the job is to stream B exactly once, sequentially, on every thread.
//! Packing would read B twice, so B is read in place, through one of two
//! loops chosen by its layout:
//!
//! * **row-major B** (`csb == 1`, e.g. a `[in, out]` weight): rows of B are
//!   contiguous, so `y += x[p] · B[p, :]` row after row. When B is at most
//!   4096 wide (every GPT-2 weight), `k` is cut into fixed blocks of 64
//!   rows: each block is one contiguous stretch of memory, streamed start
//!   to end into its own partial sums held in L1, and the partials are
//!   added in block order. (Splitting columns instead would read every row
//!   in short strided pieces, which the hardware prefetcher follows far
//!   worse over GPT-2's 48 layer weights.) Wider
//!   B: threads own column ranges, each swept over all of `k` with a tile
//!   of up to 4096 accumulators.
//! * **column-major B** (`rsb == 1`, e.g. GPT-2's tied head `h · wteᵀ` with
//!   `wte` a contiguous `[vocab, k]`): each column of B is contiguous, so
//!   `y[j] = x · B[:, j]` is a dot product. Threads own ranges of columns
//!   (rows of `wte`), eight dot products at a time (four on AVX2).
//!
//! Any other layout falls back to a plain strided loop.
//!
//! Determinism: the `k` loop is split only into the fixed 64-row blocks,
//! which depend on `k` alone. Within a block (or all of `k`) every `y[j]`
//! is an FMA chain over `p` in order, and block partials are added in
//! order; in the dot-product loop every column uses the same lane
//! assignment and the same final reduction whichever group it lands in.
//! So the bits do not depend on the thread count or on how work was
//! grouped.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::ops::Range;

use crate::parallel::for_each_range;

use super::isa::Level;
use super::matmul_packed::Isa;
use super::scratch::{with_scratch, Line, PARTIALS};
use super::Gemm;
use crate::parallel::SharedPtr;

/// Widest column tile of the row-major loop, in floats (16 KiB of
/// accumulators: inside the 48 KiB L1 next to the x values and
/// the lines of B in flight).
const ROW_TILE: usize = 4096;

/// Rows of B per block when row-major B is split along `k` (see
/// `Gemv::rows_split_k`): 64 rows of GPT-2's widest weight are 768 KiB of
/// contiguous memory, and `k = 768` gives 12 blocks to share out.
const ROW_BLOCK: usize = 64;

/// Below this many elements of B (256 KiB) the pool is not woken.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

/// `y[1×n] = alpha · x[1×k] · B[k×n] + beta · y`, single precision: the
/// product `g` describes, which has one row (`g.m == 1`): x is row 0 of A
/// (`x[p]` at `a.offset(p·csa)`), y row 0 of C (`y[j]` at `c.offset(j·csc)`).
///
/// Fast when B is row-major (`csb == 1`) or column-major (`rsb == 1`);
/// correct for any strides. `beta == 0` makes y write-only; `alpha == 0` or
/// `k == 0` gives `y = beta · y` without reading x or B. Runs on Kiln's pool
/// when B is large; bit-identical for any thread count.
/// [`super::matmul_packed::gemm_f32`] calls this itself for `m == 1` and
/// `n == 1`, so callers rarely need it directly.
///
/// # Panics
///
/// If `g.m != 1`.
///
/// # Safety
///
/// [`super::matmul_packed::gemm_f32`]'s contract, with `m == 1`.
pub unsafe fn gemv_f32(g: Gemm<f32>) {
    assert_eq!(g.m, 1, "gemv_f32: the product has {} rows, not 1", g.m);
    // SAFETY: forwarded; `Isa::detect` only names an available ISA.
    unsafe { gemv_f32_with(Isa::detect(), crate::parallel::num_threads(), &g) }
}

/// [`gemv_f32`] with the instruction set and thread count chosen; used by
/// `gemm_f32_with`. `threads > 1` spreads big products over the caller and
/// Kiln's pool (`parallel::for_each_range`); under [`PARALLEL_MIN_ELEMS`]
/// elements of B the caller does it alone.
///
/// # Safety
///
/// `isa.available()`, `g.m == 1`, and [`gemv_f32`]'s contract.
pub(crate) unsafe fn gemv_f32_with(isa: Isa, threads: usize, g: &Gemm<f32>) {
    debug_assert_eq!(g.m, 1);
    let args = Gemv {
        k: g.k,
        n: g.n,
        alpha: g.alpha,
        x: g.a,
        incx: g.csa,
        b: g.b,
        rsb: g.rsb,
        csb: g.csb,
        beta: g.beta,
        y: g.c,
        incy: g.csc,
    };
    let threads = if g.k.saturating_mul(g.n) < PARALLEL_MIN_ELEMS {
        1
    } else {
        threads
    };
    // SAFETY: forwarded.
    unsafe { args.run(isa, threads) }
}

/// One call's operands in the names of a matrix–vector product, bundled so
/// they can cross into the pool.
#[derive(Clone, Copy)]
struct Gemv {
    k: usize,
    n: usize,
    alpha: f32,
    x: *const f32,
    incx: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    y: *mut f32,
    incy: isize,
}

// SAFETY: dereferenced only under `gemv_f32`'s contract; tasks write
// disjoint elements of y.
unsafe impl Send for Gemv {}
// SAFETY: as above.
unsafe impl Sync for Gemv {}

/// The loop a layout of B gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    RowMajor,
    ColMajor,
    Strided,
}

impl Gemv {
    /// # Safety
    ///
    /// `isa.available()`, and [`gemv_f32`]'s contract.
    unsafe fn run(mut self, isa: Isa, threads: usize) {
        if self.n == 0 {
            return;
        }
        if self.k == 0 || self.alpha == 0.0 {
            for j in 0..self.n {
                // SAFETY: j < n.
                unsafe { self.store(j, 0.0) };
            }
            return;
        }
        if isa.f32() == Level::Portable {
            // SAFETY: the same product as a 1×k · k×n GEMM.
            unsafe {
                matrixmultiply::sgemm(
                    1, self.k, self.n, self.alpha, self.x, 0, self.incx, self.b, self.rsb,
                    self.csb, self.beta, self.y, 0, self.incy,
                )
            };
            return;
        }
        // The loops read x with unit stride: copy a strided x (k floats,
        // negligible next to the k·n of B).
        let x_copy: Vec<f32>;
        if self.incx != 1 {
            // SAFETY: p < k.
            x_copy = (0..self.k)
                .map(|p| unsafe { *self.x.offset(p as isize * self.incx) })
                .collect();
            self.x = x_copy.as_ptr();
            self.incx = 1;
        }
        let layout = if self.csb == 1 {
            Layout::RowMajor
        } else if self.rsb == 1 {
            Layout::ColMajor
        } else {
            Layout::Strided
        };
        #[cfg(target_arch = "x86_64")]
        if layout == Layout::RowMajor && self.k > ROW_BLOCK && self.n <= ROW_TILE {
            // SAFETY: forwarded; the ISA is not portable (handled above).
            unsafe { self.rows_split_k(isa, threads) };
            return;
        }
        // Column ranges per task: a multiple of 16 (one zmm) so that only
        // the last task has a ragged edge. Several per thread let a thread
        // that lost its core for a while be covered by the other.
        let (chunk, align) = match layout {
            Layout::RowMajor => (ROW_TILE, 16),
            _ => (4096, 16),
        };
        let tasks = if threads > 1 {
            (self.n.div_ceil(chunk)).div_ceil(threads).max(2) * threads
        } else {
            self.n.div_ceil(chunk)
        };
        let width = self.n.div_ceil(tasks).div_ceil(align) * align;
        let tasks = self.n.div_ceil(width);
        let task = |t: usize| {
            let j0 = t * width;
            let j1 = (j0 + width).min(self.n);
            // SAFETY: j0..j1 ⊂ 0..n; tasks cover disjoint column ranges.
            unsafe { self.columns(isa, layout, j0, j1) }
        };
        if threads > 1 && tasks > 1 {
            for_each_range(tasks, 1, |r| r.for_each(task));
        } else {
            (0..tasks).for_each(task);
        }
    }

    /// Row-major B with `k` split into fixed blocks of [`ROW_BLOCK`] rows:
    /// each block's rows are one contiguous stretch of memory, streamed in
    /// order into its own partial sums (all `n ≤ ROW_TILE` columns at once),
    /// and the partials are added in block order. The blocking depends on
    /// `k` only, so the bits do not depend on the thread count.
    ///
    /// # Safety
    ///
    /// `isa` is AVX-512 or AVX2 and available, `csb == 1`, x contiguous,
    /// `n ≤ ROW_TILE`, and [`gemv_f32`]'s contract.
    #[cfg(target_arch = "x86_64")]
    unsafe fn rows_split_k(&self, isa: Isa, threads: usize) {
        let (k, n) = (self.k, self.n);
        let blocks = k.div_ceil(ROW_BLOCK);
        // Each block's partials start on a cache line (the kernels store
        // the accumulators with aligned stores).
        let ld = n.div_ceil(16) * 16;
        with_scratch(&PARTIALS, blocks * ld, |base| {
            let base = SharedPtr(base);
            let work = |r: Range<usize>| {
                for blk in r {
                    let (p0, p1) = (blk * ROW_BLOCK, ((blk + 1) * ROW_BLOCK).min(k));
                    let acc = base.get().wrapping_add(blk * ld);
                    // SAFETY: block `blk`'s partials are written by this
                    // call only; the rest is forwarded.
                    unsafe { self.rows_acc(isa, p0, p1, 0, n, acc) }
                }
            };
            if threads > 1 {
                for_each_range(blocks, 1, work);
            } else {
                work(0..blocks);
            }
            // SAFETY: every block's first n partials were written above.
            let partial = unsafe { std::slice::from_raw_parts(base.get(), blocks * ld) };
            self.add_partials(partial, blocks, ld);
        });
    }

    /// `y = Σ_blk partial[blk]` in block order, written through `store`.
    #[cfg(target_arch = "x86_64")]
    fn add_partials(&self, partial: &[f32], blocks: usize, ld: usize) {
        let n = self.n;
        let mut sum = partial[..n].to_vec();
        for blk in 1..blocks {
            for (s, &v) in sum.iter_mut().zip(&partial[blk * ld..blk * ld + n]) {
                *s += v;
            }
        }
        for (j, &s) in sum.iter().enumerate() {
            // SAFETY: j < n.
            unsafe { self.store(j, s) };
        }
    }

    /// Row-major B: `y[j0..j1] = x · B[:, j0..j1]` over all of `k`, in
    /// column tiles of up to [`ROW_TILE`] accumulators held in L1.
    ///
    /// # Safety
    ///
    /// `isa` is AVX-512 or AVX2 and available, `csb == 1`, x contiguous,
    /// `j1 ≤ n`, and [`gemv_f32`]'s contract.
    #[cfg(target_arch = "x86_64")]
    unsafe fn rows(&self, isa: Isa, j0: usize, j1: usize) {
        let mut tile = [Line::default(); ROW_TILE / 16];
        let acc = tile.as_mut_ptr().cast::<f32>();
        let mut t0 = j0;
        while t0 < j1 {
            let w = (j1 - t0).min(ROW_TILE);
            // SAFETY: forwarded; the tile holds ROW_TILE ≥ w floats, aligned.
            unsafe {
                self.rows_acc(isa, 0, self.k, t0, w, acc);
                for j in 0..w {
                    self.store(t0 + j, *acc.add(j));
                }
            }
            t0 += w;
        }
    }

    /// The row-major accumulators for rows `p0..p1` and columns
    /// `t0..t0 + w` into `acc`, on `isa`'s kernel.
    ///
    /// # Safety
    ///
    /// As [`Self::rows`], plus `p0 ≤ p1 ≤ k`, `t0 + w ≤ n`, and `acc`
    /// 64-byte aligned and writable for `w` rounded up to 16 floats.
    #[cfg(target_arch = "x86_64")]
    unsafe fn rows_acc(&self, isa: Isa, p0: usize, p1: usize, t0: usize, w: usize, acc: *mut f32) {
        // SAFETY: forwarded; the caller picked an available SIMD ISA.
        unsafe {
            match isa.f32() {
                Level::Avx512 => self.rows_acc_avx512(p0, p1, t0, w, acc),
                _ => self.rows_acc_avx2(p0, p1, t0, w, acc),
            }
        }
    }

    /// `y[j] = alpha · acc + beta · y[j]`, evaluated like the GEMM write-back.
    ///
    /// # Safety
    ///
    /// `j < n`.
    #[inline(always)]
    unsafe fn store(&self, j: usize, acc: f32) {
        // SAFETY: j < n, by the contract.
        let yj = unsafe { &mut *self.y.offset(j as isize * self.incy) };
        let r = self.alpha * acc;
        *yj = if self.beta == 0.0 {
            r
        } else {
            r + self.beta * *yj
        };
    }

    /// Computes `y[j0..j1]`.
    ///
    /// # Safety
    ///
    /// `isa.available()`, `j1 ≤ n`, x contiguous, and the call contract.
    unsafe fn columns(&self, isa: Isa, layout: Layout, j0: usize, j1: usize) {
        match (isa.f32(), layout) {
            (_, Layout::Strided) | (Level::Portable, _) => {
                for j in j0..j1 {
                    let mut acc = 0.0f32;
                    for p in 0..self.k {
                        // SAFETY: p < k, j < n.
                        unsafe {
                            let bpj = *self.b.offset(p as isize * self.rsb + j as isize * self.csb);
                            acc = (*self.x.add(p)).mul_add(bpj, acc);
                        }
                    }
                    // SAFETY: j < n.
                    unsafe { self.store(j, acc) };
                }
            }
            // SAFETY: (each arm below) `isa.available()` and the bounds are
            // this function's contract; the level and layout match the
            // kernel's requirements by the match itself.
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Level::Avx512, Layout::RowMajor) => unsafe { self.rows(isa, j0, j1) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Level::Avx512, Layout::ColMajor) => unsafe { self.dots_avx512(j0, j1) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Level::Avx2, Layout::RowMajor) => unsafe { self.rows(isa, j0, j1) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Level::Avx2, Layout::ColMajor) => unsafe { self.dots_avx2(j0, j1) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "gemv_x86.rs"]
mod x86;

#[cfg(test)]
#[path = "gemv_tests.rs"]
mod tests;
