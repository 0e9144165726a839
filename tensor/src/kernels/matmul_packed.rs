//! Kiln's GEMM: packed, cache-blocked, SIMD micro-kernels, parallel over C.
//!
//! `C[m×n] = alpha · A[m×k] · B[k×n] + beta · C`, every operand read through
//! arbitrary element strides.
//!
//! # Design (BLIS-style, with the roles of the caches chosen for this CPU)
//!
//! ```text
//! for ic in 0..m step MC                      A block (MC×KC) lives in L3, shared
//!   for pc in 0..k step KC                    never split across threads
//!     pack A[ic.., pc..] into MR-row panels   (in parallel, into one shared buffer)
//!     for each task = (column block, row part)      <- the parallel loop
//!       pack B[pc.., jc..] into NR-col panels (per thread; the block stays in L2)
//!       for ir in MR panels of A              the A panel (MR×KC) stays in L1
//!         for jr in NR panels of B            B panels stream from L2
//!           micro-kernel: MR×NR tile of C in registers, loop over KC
//! ```
//!
//! Packing reads A and B through their strides once per block and lays them
//! out exactly in the order the micro-kernel consumes them, so transposed or
//! sliced views cost nothing extra beyond the pack, and the kernel only ever
//! does aligned, unit-stride loads. Edge panels are zero-padded, so the one
//! micro-kernel handles every tile; partial tiles are written back through a
//! scalar path that evaluates the same expression.
//!
//! The A micro-panel (12×KC floats) is kept in L1 and the B block in L2
//! because the 2 MiB L2 of this Xeon is large and its 48 KiB L1 small: a
//! 32-wide B micro-panel of KC floats would not fit L1 next to anything else.
//!
//! # Determinism
//!
//! Threads split C into independent blocks; the `k` loop is never split.
//! Every `C[i, j]` is therefore computed by the same sequence of operations
//! (FMA over `p` inside each KC block, then `alpha·acc + C` per block)
//! whatever the thread count or the split, so results are bit-identical for
//! any number of threads. The KC blocking depends only on `k`.
//!
//! # Instruction sets
//!
//! The micro-kernel is picked once at run time (`is_x86_feature_detected!`,
//! cached): AVX-512F (12×32 tile), else AVX2+FMA (6×16 tile), else the
//! portable fallback, which hands the whole product to
//! `matrixmultiply::sgemm`.

use std::ops::Range;

use super::gemv;
use super::scratch::{with_scratch, PACK_A, PACK_B};
pub use super::Gemm;
use crate::parallel::SharedPtr;

pub(crate) use super::isa::Isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Level;

/// Below this many multiply-adds (`m·n·k`) a call runs on the calling thread:
/// waking the pool costs a few microseconds, about what 64³ FMAs take.
const PARALLEL_MIN_FMAS: usize = 64 * 64 * 64;

/// `C[m×n] = alpha · A[m×k] · B[k×n] + beta · C`, single precision, for
/// the product `g` describes.
///
/// Element `(i, j)` of `X ∈ {A, B, C}` lives at `x.offset(i·rsx + j·csx)`.
/// Strides are in elements and may be any value (transposed, sliced, or
/// negative-stride views are read through their strides; callers never need
/// to copy). When `beta == 0`, C is write-only: it is never read, so NaN or
/// uninitialised garbage in it is ignored. When `alpha == 0` or `k == 0`,
/// A and B are not read and `C = beta · C` (BLAS semantics).
///
/// Large products run on Kiln's thread pool ([`crate::parallel`]); `m == 1`
/// (and `n == 1`) products take the bandwidth-bound matrix–vector path in
/// [`super::gemv`]. The result is bit-identical for every thread count.
///
/// # Safety
///
/// * For all `i < m`, `p < k`: `a.offset(i·rsa + p·csa)` is valid for reads;
///   for all `p < k`, `j < n`: `b.offset(p·rsb + j·csb)` is valid for reads;
///   for all `i < m`, `j < n`: `c.offset(i·rsc + j·csc)` is valid for writes
///   (and reads when `beta != 0`).
/// * C does not overlap A or B, and distinct `(i, j)` are distinct elements
///   of C (no zero or aliasing strides in C when that dimension exceeds 1).
/// * Nothing else reads or writes C during the call.
pub unsafe fn gemm_f32(g: Gemm<f32>) {
    let Gemm { m, k, n, .. } = g;
    let isa = Isa::detect();
    let threads = if m.saturating_mul(n).saturating_mul(k) < PARALLEL_MIN_FMAS {
        1
    } else {
        crate::parallel::num_threads()
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { gemm_f32_with(isa, threads, g) }
}

/// `C[m×n] = alpha · A[m×k] · B[k×n] + beta · C`, double precision.
///
/// Same meaning, strides and `beta == 0` rule as [`gemm_f32`]. f64 exists
/// for references and gradient checks, not speed, so it delegates to
/// `matrixmultiply::dgemm` (which splits no reduction across threads
/// either), after handling `alpha == 0`, `k == 0` and empty shapes here.
///
/// # Safety
///
/// The same contract as [`gemm_f32`].
pub unsafe fn gemm_f64(g: Gemm<f64>) {
    let Gemm {
        m,
        k,
        n,
        alpha,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        beta,
        c,
        rsc,
        csc,
    } = g;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        for i in 0..m as isize {
            for j in 0..n as isize {
                // SAFETY: in bounds by the contract.
                let cij = unsafe { &mut *c.offset(i * rsc + j * csc) };
                *cij = if beta == 0.0 { 0.0 } else { beta * *cij };
            }
        }
        return;
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
}

/// [`gemm_f32`] with the instruction set and the thread count chosen.
///
/// `threads` is the number of threads to cut the work for. When it exceeds
/// 1, the column split ([`gemm_packed`]), the row split ([`gemm_rows`])
/// and gemv run on the caller plus Kiln's pool
/// (`parallel::for_each_range`). With `threads == 1` the work stays on the
/// calling thread.
///
/// # Safety
///
/// `isa.available()` must hold, and `g` must satisfy [`gemm_f32`]'s contract.
pub(crate) unsafe fn gemm_f32_with(isa: Isa, threads: usize, g: Gemm<f32>) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    if g.k == 0 || g.alpha == 0.0 {
        // SAFETY: forwarded.
        unsafe { scale_c(&g) };
        return;
    }
    match isa.f32() {
        super::isa::Level::Portable => {
            // SAFETY: forwarded; matrixmultiply has the same contract.
            unsafe {
                matrixmultiply::sgemm(
                    g.m, g.k, g.n, g.alpha, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, g.beta, g.c,
                    g.rsc, g.csc,
                )
            }
        }
        // A row vector times a matrix: stream B once (see `gemv`).
        _ if g.m == 1 && (g.rsb == 1 || g.csb == 1) => unsafe {
            // SAFETY: forwarded; x is row 0 of A, y row 0 of C.
            gemv::gemv_f32_with(isa, threads, &g)
        },
        // A matrix times a column vector: Cᵀ = Bᵀ·Aᵀ is the same problem
        // with x = column 0 of B and the matrix Aᵀ (strides swapped).
        _ if g.n == 1 && (g.rsa == 1 || g.csa == 1) => unsafe {
            // SAFETY: forwarded; the transposed product touches the same
            // elements (Aᵀ[p, i] = A[i, p] for p<k, i<m).
            gemv::gemv_f32_with(isa, threads, &g.transposed())
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the call contract is forwarded and `isa` (so the level)
        // was checked available by the caller.
        Level::Avx512 if splits_rows(isa, &g, threads) => unsafe {
            gemm_rows::<Avx512>(threads, &g)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the arm above.
        Level::Avx2 if splits_rows(isa, &g, threads) => unsafe { gemm_rows::<Avx2>(threads, &g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the arm above.
        Level::Avx512 => unsafe { gemm_packed::<Avx512>(threads, &g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the arm above.
        Level::Avx2 => unsafe { gemm_packed::<Avx2>(threads, &g) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the portable ISA exists off x86-64"),
    }
}

/// `C = beta · C` (zero-filled without reading when `beta == 0`).
///
/// # Safety
///
/// C as in [`gemm_f32`].
unsafe fn scale_c(g: &Gemm<f32>) {
    for i in 0..g.m as isize {
        for j in 0..g.n as isize {
            // SAFETY: in bounds by the contract.
            let cij = unsafe { &mut *g.c.offset(i * g.rsc + j * g.csc) };
            *cij = if g.beta == 0.0 { 0.0 } else { g.beta * *cij };
        }
    }
}

/// Where a micro-kernel writes its tile: the valid `rows × cols` corner of
/// an `MR×NR` tile, at `c` with strides `rsc`, `csc`.
///
/// Contract: for `i < rows`, `j < cols`, `c.offset(i·rsc + j·csc)` is valid
/// for writes, and for reads when `beta != 0`; `rows ≤ MR`, `cols ≤ NR`.
pub(crate) struct TileOut {
    pub c: *mut f32,
    pub rsc: isize,
    pub csc: isize,
    pub rows: usize,
    pub cols: usize,
    pub alpha: f32,
    pub beta: f32,
}

/// Writes `alpha · tmp + beta · C` for the valid part of a tile, where
/// `tmp[i·ld + j]` holds the accumulator of `C[i, j]`.
///
/// The expression is evaluated as the SIMD write-back does it (`alpha·acc`,
/// then `+ beta·c`, unfused), so edge tiles and full tiles round alike.
///
/// # Safety
///
/// `out` must satisfy [`TileOut`]'s contract and `tmp` hold `rows` rows of `ld`.
pub(crate) unsafe fn store_tile_scalar(tmp: &[f32], ld: usize, out: &TileOut) {
    for i in 0..out.rows {
        for j in 0..out.cols {
            // SAFETY: i < rows, j < cols: in bounds by the TileOut contract.
            let c = unsafe { &mut *out.c.offset(i as isize * out.rsc + j as isize * out.csc) };
            let r = out.alpha * tmp[i * ld + j];
            *c = if out.beta == 0.0 {
                r
            } else {
                r + out.beta * *c
            };
        }
    }
}

/// A micro-kernel and the cache blocking tuned for it.
trait Kernel {
    /// Rows of the register tile.
    const MR: usize;
    /// Columns of the register tile.
    const NR: usize;
    /// Depth of a packed panel: the A micro-panel `MR×KC` should sit in L1.
    const KC: usize;
    /// Rows of the shared A block (`MC×KC` floats, lives in L3).
    const MC: usize;
    /// Widest column block per task (`KC×NC` floats of packed B, lives in L2).
    const NC: usize;
    /// Computes one tile; see the micro-kernel modules.
    unsafe fn tile(kc: usize, a: *const f32, b: *const f32, out: &TileOut);
    /// Packs an A micro-panel ([`pack_panel`] with `w = MR`).
    unsafe fn pack_a(
        kc: usize,
        valid: usize,
        src: *const f32,
        ls: isize,
        ps: isize,
        dst: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { pack_panel(Self::MR, kc, valid, src, ls, ps, dst) }
    }
    /// Packs a `kc × ncur` block of row-major B (`src[p·ps + j]`) into
    /// consecutive NR-wide panels at `dst`; by default one panel at a time
    /// through [`Kernel::pack_b`].
    unsafe fn pack_b_rows(kc: usize, ncur: usize, src: *const f32, ps: isize, dst: *mut f32) {
        for jp in 0..ncur.div_ceil(Self::NR) {
            let col = jp * Self::NR;
            // SAFETY: columns col..col+valid < ncur of the block; panel jp
            // of dst is in bounds (forwarded contract).
            unsafe {
                Self::pack_b(
                    kc,
                    Self::NR.min(ncur - col),
                    src.add(col),
                    1,
                    ps,
                    dst.add(col * kc),
                )
            };
        }
    }
    /// Packs a B micro-panel ([`pack_panel`] with `w = NR`).
    unsafe fn pack_b(
        kc: usize,
        valid: usize,
        src: *const f32,
        ls: isize,
        ps: isize,
        dst: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { pack_panel(Self::NR, kc, valid, src, ls, ps, dst) }
    }
}

/// One micro-kernel's tile and cache-block sizes, in elements: the MR×NR
/// register tile, K blocks KC deep, MC-row A blocks and B blocks of up to
/// NC columns (the book's blocking figure is drawn from these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile.
    pub nr: usize,
    /// Depth of a packed panel (the A micro-panel `MR×KC` sits in L1).
    pub kc: usize,
    /// Rows of the shared A block.
    pub mc: usize,
    /// Widest column block per task (the packed `KC×NC` B block, in L2).
    pub nc: usize,
}

/// The AVX-512 kernel's blocking.
pub const AVX512_BLOCKING: Blocking = Blocking {
    mr: 12,
    nr: 32,
    kc: 384,
    mc: 1536,
    nc: 1024,
};

/// The AVX2 kernel's blocking.
pub const AVX2_BLOCKING: Blocking = Blocking {
    mr: 6,
    nr: 16,
    kc: 256,
    mc: 1536,
    nc: 1024,
};

#[cfg(target_arch = "x86_64")]
const _: () = assert!(
    AVX512_BLOCKING.mr == super::microkernel_avx512::MR
        && AVX512_BLOCKING.nr == super::microkernel_avx512::NR
        && AVX2_BLOCKING.mr == super::microkernel_avx2::MR
        && AVX2_BLOCKING.nr == super::microkernel_avx2::NR,
    "the published blocking names each micro-kernel's register tile"
);

#[cfg(target_arch = "x86_64")]
struct Avx512;
#[cfg(target_arch = "x86_64")]
impl Kernel for Avx512 {
    const MR: usize = AVX512_BLOCKING.mr;
    const NR: usize = AVX512_BLOCKING.nr;
    const KC: usize = AVX512_BLOCKING.kc;
    const MC: usize = AVX512_BLOCKING.mc;
    const NC: usize = AVX512_BLOCKING.nc;
    unsafe fn pack_b_rows(kc: usize, ncur: usize, src: *const f32, ps: isize, dst: *mut f32) {
        // SAFETY: AVX-512F detected; rest forwarded.
        unsafe { super::microkernel_avx512::pack_b_rows(kc, ncur, src, ps, dst) }
    }
    unsafe fn tile(kc: usize, a: *const f32, b: *const f32, out: &TileOut) {
        // SAFETY: only reached when AVX-512F was detected; rest forwarded.
        unsafe { super::microkernel_avx512::kernel(kc, a, b, out) }
    }
    unsafe fn pack_a(
        kc: usize,
        valid: usize,
        src: *const f32,
        ls: isize,
        ps: isize,
        dst: *mut f32,
    ) {
        // SAFETY: AVX-512F detected; rest forwarded.
        unsafe { super::microkernel_avx512::pack_a(kc, valid, src, ls, ps, dst) }
    }
    unsafe fn pack_b(
        kc: usize,
        valid: usize,
        src: *const f32,
        ls: isize,
        ps: isize,
        dst: *mut f32,
    ) {
        // SAFETY: AVX-512F detected; rest forwarded.
        unsafe { super::microkernel_avx512::pack_b(kc, valid, src, ls, ps, dst) }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;
#[cfg(target_arch = "x86_64")]
impl Kernel for Avx2 {
    const MR: usize = AVX2_BLOCKING.mr;
    const NR: usize = AVX2_BLOCKING.nr;
    const KC: usize = AVX2_BLOCKING.kc;
    const MC: usize = AVX2_BLOCKING.mc;
    const NC: usize = AVX2_BLOCKING.nc;
    unsafe fn tile(kc: usize, a: *const f32, b: *const f32, out: &TileOut) {
        // SAFETY: only reached when AVX2 and FMA were detected; rest forwarded.
        unsafe { super::microkernel_avx2::kernel(kc, a, b, out) }
    }
}

/// Packs one panel: `dst[p·w + l] = src[l·ls + p·ps]` for `p < kc`,
/// `l < valid`, and zero for the padding lanes `valid ≤ l < w`.
///
/// For A, lanes are rows (`ls = rsa`, `ps = csa`); for B, lanes are columns
/// (`ls = csb`, `ps = rsb`). This is where transposes are absorbed: the two
/// common layouts get loops that read memory sequentially.
///
/// # Safety
///
/// `src` readable at those offsets, `dst` writable for `kc·w` floats.
#[inline(always)]
pub(crate) unsafe fn pack_panel(
    w: usize,
    kc: usize,
    valid: usize,
    src: *const f32,
    ls: isize,
    ps: isize,
    dst: *mut f32,
) {
    // SAFETY: (whole body) offsets stay within p < kc, l < valid (source)
    // and p·w + l < kc·w (destination), per the contract.
    unsafe {
        if ls == 1 && valid == w {
            // Lanes contiguous (row-major B, column-major A): row copies.
            for p in 0..kc {
                std::ptr::copy_nonoverlapping(src.offset(p as isize * ps), dst.add(p * w), w);
            }
        } else if ps == 1 {
            // Each lane contiguous along k (row-major A, column-major B such
            // as wteᵀ): a transpose. Go 16 values of p at a time so the
            // destination rows being filled (16·w floats) stay in L1 while
            // every lane is read as a sequential stream.
            let mut p0 = 0;
            while p0 < kc {
                let pn = (kc - p0).min(16);
                for l in 0..w {
                    let d = dst.add(p0 * w + l);
                    if l < valid {
                        let s = src.offset(l as isize * ls + p0 as isize);
                        for q in 0..pn {
                            *d.add(q * w) = *s.add(q);
                        }
                    } else {
                        for q in 0..pn {
                            *d.add(q * w) = 0.0;
                        }
                    }
                }
                p0 += pn;
            }
        } else {
            for p in 0..kc {
                let s = src.offset(p as isize * ps);
                let d = dst.add(p * w);
                for l in 0..w {
                    *d.add(l) = if l < valid {
                        *s.offset(l as isize * ls)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// How the columns of C are split into tasks: `(row_parts, col_width)`.
///
/// Column blocks are at most `nc` wide (so a packed B block fits L2) and a
/// multiple of `nr`. With several threads, there are up to four blocks per
/// thread (each at least 8 panels wide, so an A panel loaded into L1 is
/// reused enough): the host sometimes takes a core away for a while, and
/// the other thread then takes the stalled one's remaining blocks
/// (`parallel::for_each_range`).
/// Few blocks are rounded up to a multiple of the thread count so the
/// threads finish together. If C is so narrow that there are still fewer
/// blocks than threads, the rows of the A block are split too, each part
/// packing its own copy of B. None of this changes any result (no `k`
/// split), only who computes which tile.
pub(crate) fn plan(
    n: usize,
    nr: usize,
    nc: usize,
    mpanels: usize,
    threads: usize,
) -> (usize, usize) {
    let mut blocks = n.div_ceil(nc);
    if threads > 1 {
        let want = (4 * threads).min(n / (8 * nr)).max(threads);
        blocks = blocks.max(want);
        if blocks < 8 * threads {
            blocks = blocks.div_ceil(threads) * threads;
        }
    }
    blocks = blocks.min(n.div_ceil(nr)).max(1);
    let width = n.div_ceil(blocks).div_ceil(nr) * nr;
    let blocks = n.div_ceil(width);
    let row_parts = if blocks >= threads {
        1
    } else {
        threads.div_ceil(blocks).min(mpanels).max(1)
    };
    (row_parts, width)
}

/// One K block of a product, as both GEMM drivers walk it: rows
/// `pc..pc + kcur` of B (columns of A), and the beta that block applies to
/// C (the caller's for the first block, then 1 to accumulate).
#[derive(Clone, Copy)]
struct KBlock {
    pc: usize,
    kcur: usize,
    beta: f32,
}

/// Packs A's rows `row..row + MR` (fewer at the bottom edge) over the K
/// block into one MR-row panel at `dst`.
///
/// # Safety
///
/// As [`gemm_packed`]; `row < m`; `dst` writable for `MR·kcur` floats.
unsafe fn pack_a_panel<K: Kernel>(g: &Gemm<f32>, kb: KBlock, row: usize, dst: *mut f32) {
    // SAFETY: rows row..row+valid < m and columns pc..pc+kcur < k of A.
    unsafe {
        K::pack_a(
            kb.kcur,
            K::MR.min(g.m - row),
            g.a.offset(row as isize * g.rsa + kb.pc as isize * g.csa),
            g.rsa,
            g.csa,
            dst,
        )
    }
}

/// Packs B's columns `j0..j0 + ncur` over the K block into NR-wide panels
/// at `dst`, one after another.
///
/// # Safety
///
/// As [`gemm_packed`]; `j0 + ncur ≤ n`; `dst` writable for
/// `ncur.div_ceil(NR)·NR·kcur` floats.
unsafe fn pack_b_block<K: Kernel>(
    g: &Gemm<f32>,
    kb: KBlock,
    j0: usize,
    ncur: usize,
    dst: *mut f32,
) {
    if g.csb == 1 {
        // SAFETY: columns j0..j0+ncur, rows pc..pc+kcur of B; dst as above.
        unsafe {
            let src = g.b.offset(kb.pc as isize * g.rsb + j0 as isize);
            K::pack_b_rows(kb.kcur, ncur, src, g.rsb, dst);
        }
        return;
    }
    for jp in 0..ncur.div_ceil(K::NR) {
        let col = j0 + jp * K::NR;
        // SAFETY: columns col..col+valid < n, rows pc..pc+kcur < k of B;
        // panel jp of dst is in bounds.
        unsafe {
            K::pack_b(
                kb.kcur,
                K::NR.min(g.n - col),
                g.b.offset(kb.pc as isize * g.rsb + col as isize * g.csb),
                g.csb,
                g.rsb,
                dst.add(jp * K::NR * kb.kcur),
            )
        };
    }
}

/// Runs the micro-kernel on every tile of A panels `panels` (indices into
/// `apack`, whose panel 0 holds row `ic` of C) × the B panels of columns
/// `j0..j0 + ncur` packed at `bpack`, the row block holding `mcur` rows.
///
/// # Safety
///
/// As [`gemm_packed`]; the panels were packed for this K block, and no
/// other thread writes these tiles of C meanwhile.
unsafe fn tiles<K: Kernel>(
    g: &Gemm<f32>,
    kb: KBlock,
    apack: *const f32,
    panels: Range<usize>,
    (ic, mcur): (usize, usize),
    bpack: *const f32,
    (j0, ncur): (usize, usize),
) {
    let (mr, nr, kcur) = (K::MR, K::NR, kb.kcur);
    for ip in panels {
        let row = ip * mr;
        for jp in 0..ncur.div_ceil(nr) {
            let col = jp * nr;
            let out = TileOut {
                c: g.c
                    .wrapping_offset((ic + row) as isize * g.rsc + (j0 + col) as isize * g.csc),
                rsc: g.rsc,
                csc: g.csc,
                rows: mr.min(mcur - row),
                cols: nr.min(ncur - col),
                alpha: g.alpha,
                beta: kb.beta,
            };
            // SAFETY: the panels were packed with depth kcur; the tile is
            // inside C and owned by the caller.
            unsafe {
                K::tile(
                    kcur,
                    apack.wrapping_add(ip * mr * kcur),
                    bpack.wrapping_add(jp * nr * kcur),
                    &out,
                )
            };
        }
    }
}

/// The packed, blocked GEMM for micro-kernel `K` (see the module docs).
///
/// # Safety
///
/// `K`'s instruction set is available; `g` satisfies [`gemm_f32`]'s
/// contract with `m, n, k > 0`.
unsafe fn gemm_packed<K: Kernel>(threads: usize, g: &Gemm<f32>) {
    let (mr, nr) = (K::MR, K::NR);
    // Balance the K blocks (k = 400 → 200 + 200, not 384 + 16): the blocking
    // depends on k only, never on threads.
    let kc = g.k.div_ceil(g.k.div_ceil(K::KC));
    let mc = g.m.div_ceil(g.m.div_ceil(K::MC)).div_ceil(mr) * mr;
    with_scratch(&PACK_A, mc * kc, |apack| {
        let apack = SharedPtr(apack);
        for ic in (0..g.m).step_by(mc) {
            let mcur = mc.min(g.m - ic);
            let mpanels = mcur.div_ceil(mr);
            let (row_parts, width) = plan(g.n, nr, K::NC, mpanels, threads);
            let col_blocks = g.n.div_ceil(width);
            for pc in (0..g.k).step_by(kc) {
                let kcur = kc.min(g.k - pc);
                let kb = KBlock {
                    pc,
                    kcur,
                    beta: if pc == 0 { g.beta } else { 1.0 },
                };
                let pack_a = |ip: usize| {
                    // SAFETY: panel ip of the buffer (sized mc·kc) is written
                    // by this call only.
                    unsafe {
                        pack_a_panel::<K>(g, kb, ic + ip * mr, apack.get().add(ip * mr * kcur))
                    }
                };
                if threads > 1 && mcur * kcur >= 1 << 15 {
                    crate::parallel::for_each_range(mpanels, 1, |r| r.for_each(pack_a));
                } else {
                    (0..mpanels).for_each(pack_a);
                }
                let task = |t: usize| {
                    let (part, cb) = (t / col_blocks, t % col_blocks);
                    let j0 = cb * width;
                    let ncur = width.min(g.n - j0);
                    let npanels = ncur.div_ceil(nr);
                    let (p0, p1) = (part * mpanels / row_parts, (part + 1) * mpanels / row_parts);
                    with_scratch(&PACK_B, npanels * nr * kcur, |bpack| {
                        // SAFETY: bpack holds npanels panels; tasks own
                        // disjoint (rows, columns) of C.
                        unsafe {
                            pack_b_block::<K>(g, kb, j0, ncur, bpack);
                            tiles::<K>(g, kb, apack.get(), p0..p1, (ic, mcur), bpack, (j0, ncur));
                        }
                    })
                };
                let tasks = row_parts * col_blocks;
                if threads > 1 && tasks > 1 {
                    crate::parallel::for_each_range(tasks, 1, |r| r.for_each(task));
                } else {
                    (0..tasks).for_each(task);
                }
            }
        }
    });
}

/// Whether a product is split between threads by rows of C ([`gemm_rows`])
/// rather than by columns ([`gemm_packed`]): when C is at most one column
/// block wide (so each task packs B's block once per K block, and B, read
/// once per task, stays small) but `k` spans several K blocks (where the
/// column split pays two barriers each), and every thread gets at least 8
/// register-tile rows of panels (96 rows on AVX-512). Measured at 2 threads:
/// 1024³ +6 %, 512×3072×768 +3 %; wide C (qkv, MLP up, LM head) is faster
/// with the column split, which packs B once for all threads.
fn splits_rows(isa: Isa, g: &Gemm<f32>, threads: usize) -> bool {
    fn fits<K: Kernel>(g: &Gemm<f32>, threads: usize) -> bool {
        threads > 1 && g.n <= K::NC && g.k > K::KC && g.m.div_ceil(K::MR) >= 8 * threads
    }
    match isa.f32() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => fits::<Avx512>(g, threads),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => fits::<Avx2>(g, threads),
        _ => false,
    }
}

/// The blocked GEMM split by rows of C: each task owns a band of rows and
/// runs the whole `k` and `n` loops over it with its own packed A and B, so
/// threads never wait for each other until the end (the column split of
/// [`gemm_packed`] shares one packed A block and meets at two barriers per
/// K block). The price is packing B once per task instead of once: `kc·n`
/// floats against `rows·kc·n` multiply-adds, under 2 % for bands of 64+
/// rows. The K blocking and the per-tile order of operations are those of
/// [`gemm_packed`], so the bits are the same.
///
/// # Safety
///
/// As [`gemm_packed`].
unsafe fn gemm_rows<K: Kernel>(threads: usize, g: &Gemm<f32>) {
    let (mr, nr) = (K::MR, K::NR);
    let kc = g.k.div_ceil(g.k.div_ceil(K::KC));
    let mpanels = g.m.div_ceil(mr);
    // One band per thread: every extra band packs all of B once more, and
    // two bands per thread measured 4 % slower at 1024³ and on mlp_down.
    let tasks = threads.min(mpanels);
    // Column blocks: as wide as fits L2 (NC), evened out.
    let width = g.n.div_ceil(g.n.div_ceil(K::NC)).div_ceil(nr) * nr;
    let task = |t: usize| {
        let (p0, p1) = (t * mpanels / tasks, (t + 1) * mpanels / tasks);
        let (r0, r1) = (p0 * mr, (p1 * mr).min(g.m));
        let mc = (r1 - r0).min(K::MC);
        with_scratch(&PACK_A, mc.div_ceil(mr) * mr * kc, |apack| {
            with_scratch(&PACK_B, width * kc, |bpack| {
                for ic in (r0..r1).step_by(mc) {
                    let mcur = mc.min(r1 - ic);
                    let panels = mcur.div_ceil(mr);
                    for pc in (0..g.k).step_by(kc) {
                        let kcur = kc.min(g.k - pc);
                        let kb = KBlock {
                            pc,
                            kcur,
                            beta: if pc == 0 { g.beta } else { 1.0 },
                        };
                        for ip in 0..panels {
                            // SAFETY: the buffer holds `panels` panels of
                            // depth kcur ≤ kc.
                            unsafe {
                                pack_a_panel::<K>(g, kb, ic + ip * mr, apack.add(ip * mr * kcur))
                            }
                        }
                        for j0 in (0..g.n).step_by(width) {
                            let ncur = width.min(g.n - j0);
                            // SAFETY: bpack holds width·kc floats; bands of
                            // rows belong to one task each.
                            unsafe {
                                pack_b_block::<K>(g, kb, j0, ncur, bpack);
                                tiles::<K>(g, kb, apack, 0..panels, (ic, mcur), bpack, (j0, ncur));
                            }
                        }
                    }
                }
            })
        })
    };
    crate::parallel::for_each_range(tasks, 1, |r| r.for_each(task));
}

#[cfg(test)]
#[path = "matmul_packed_tests.rs"]
pub(crate) mod tests;
