//! The matmul ladder: the intermediate kernels between the naive triple loop
//! ([`super::matmul_naive`]) and Kiln's GEMM ([`super::matmul_packed`]),
//! kept so that the book's chapter on matmul (`docs/src/matmul.md`) can
//! measure what each idea buys, one at a time.
//!
//! Every step computes `C[m×n] = A[m×k] · B[k×n]` over **row-major,
//! contiguous** slices (`A[i, p] = a[i·k + p]`, `B[p, j] = b[p·n + j]`,
//! `C[i, j] = c[i·n + j]`), overwriting C, on one thread:
//!
//! 1. [`step1_ipj`]: the loop order `i, p, j`, so the innermost loop walks a
//!    row of B and a row of C with unit stride and the compiler vectorises it.
//! 2. [`step2_register_tile`]: an `MR×NR` tile of C held in registers across
//!    the whole `p` loop, reading A and B in place (no packing).
//! 3. [`step3_packed`]: A and B copied into the micro-kernel's panel order
//!    first, then the real micro-kernel over whole-`k` panels — packing, but
//!    no cache blocking (no `KC`/`MC`/`NC` loops).
//!
//! The full kernel adds the cache blocking and threads on top of step 3.
//! Steps 1 and 2 are plain Rust compiled three times — for AVX-512, for
//! AVX2 + FMA, and for the baseline target — and the best one the CPU has is
//! picked at run time ([`Isa::detect`], honouring `KILN_SIMD`), so that the
//! ladder compares loop structures, not instruction sets. With FMA available
//! every multiply-add is fused, like the micro-kernels'; otherwise it is a
//! multiply then an add, like [`super::matmul_naive`].
//!
//! These are teaching kernels: none of them is called by `Tensor::matmul`.

use super::isa::{Isa, Level};
use super::scratch::{with_scratch, PACK_A, PACK_B};

/// `(m, k, n)`: A is `m×k`, B `k×n`, C `m×n`.
type Dims = (usize, usize, usize);

/// Checks the slice lengths every step relies on.
fn check(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &[f32]) {
    assert_eq!(a.len(), m * k, "A must be m×k = {m}×{k}, row-major");
    assert_eq!(b.len(), k * n, "B must be k×n = {k}×{n}, row-major");
    assert_eq!(c.len(), m * n, "C must be m×n = {m}×{n}, row-major");
}

/// `x + y·z`, fused when `FUSED` (the caller was compiled with FMA; without
/// it `mul_add` would be a slow library call).
#[inline(always)]
fn madd<const FUSED: bool>(x: f32, y: f32, z: f32) -> f32 {
    if FUSED {
        y.mul_add(z, x)
    } else {
        x + y * z
    }
}

/// Step 1's loops: `C[i, :] += A[i, p] · B[p, :]` for `p = 0, 1, …`.
#[inline(always)]
fn ipj<const FUSED: bool>((_, k, n): Dims, a: &[f32], b: &[f32], c: &mut [f32]) {
    c.fill(0.0);
    for (ci, ai) in c.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
        for (&aip, bp) in ai.iter().zip(b.chunks_exact(n)) {
            for (cij, &bpj) in ci.iter_mut().zip(bp) {
                *cij = madd::<FUSED>(*cij, aip, bpj);
            }
        }
    }
}

/// Generates, for one kernel body, a copy compiled with a given set of
/// target features (the body is `#[inline(always)]`, so it is compiled
/// anew inside each copy with those features).
macro_rules! with_features {
    ($name:ident, $features:literal, $body:ident) => {
        /// The generic body compiled with these target features.
        ///
        /// # Safety
        ///
        /// The CPU must support the features named above.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(s: Dims, a: &[f32], b: &[f32], c: &mut [f32]) {
            $body::<true>(s, a, b, c)
        }
    };
}

with_features!(ipj_avx512, "avx512f,avx2,fma", ipj);
with_features!(ipj_avx2, "avx2,fma", ipj);

/// Step 1 of the ladder: the naive kernel's three loops in the order
/// `i, p, j`. `A` is `m×k`, `B` is `k×n`, `C` is `m×n`, all row-major and
/// contiguous; `C` is overwritten with `A·B`.
///
/// The innermost loop is now `C[i, j] += A[i, p] · B[p, j]` over `j`: one
/// scalar of A against a row of B into a row of C, all unit-stride, with no
/// dependency between iterations, so the compiler turns it into vector
/// FMAs. Each `C[i, j]` still sums its terms in `p` order. What remains slow
/// is memory traffic: every multiply-add loads and stores C, so the loop is
/// bound by the load/store ports (and by L2 once a row of B and C no longer
/// fits L1).
///
/// PyTorch equivalent: `torch.matmul(a, b)` on 2-D tensors.
///
/// # Panics
///
/// If the slice lengths are not `m·k`, `k·n` and `m·n`.
pub fn step1_ipj(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    check(m, k, n, a, b, c);
    if n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    match Isa::detect().f32() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the detected level guarantees AVX-512F, AVX2 and FMA.
        Level::Avx512 => unsafe { ipj_avx512((m, k, n), a, b, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the detected level guarantees AVX2 and FMA.
        Level::Avx2 => unsafe { ipj_avx2((m, k, n), a, b, c) },
        Level::Portable => ipj::<false>((m, k, n), a, b, c),
    }
}

/// Where one step-2 tile reads its operands: `A[r, p] = a[r·ars + p·aps]`
/// for the tile's rows `r`, `B[p, l] = b[p·bps + l]` for its columns `l`.
/// Unpacked row-major operands have `(ars, aps, bps) = (k, 1, n)`; packed
/// panels `(1, MR, NR)`.
#[derive(Clone, Copy)]
struct TileIn<'a> {
    a: &'a [f32],
    ars: usize,
    aps: usize,
    b: &'a [f32],
    bps: usize,
}

/// One `rows×cols` (≤ `MR×NR`) tile of C, written to `c[r·ldc + l]`.
///
/// The `MR×NR` accumulators are a fixed-size array with constant loop
/// bounds, so for a full tile the compiler unrolls the loops and keeps the
/// whole array in vector registers for the entire `p` loop — the
/// micro-kernel's idea, written portably. Edge tiles take the same code
/// with run-time bounds.
#[inline(always)]
fn tile<const MR: usize, const NR: usize, const FUSED: bool>(
    k: usize,
    src: TileIn<'_>,
    (rows, cols): (usize, usize),
    c: &mut [f32],
    ldc: usize,
) {
    if rows == MR && cols == NR {
        // Its own array, indexed by constants only once the loops unroll,
        // so that it lives in registers (sharing it with the edge path's
        // run-time indices would keep it in memory, stored every step).
        let mut acc = [[0.0f32; NR]; MR];
        for p in 0..k {
            let bp: &[f32; NR] = src.b[p * src.bps..][..NR].try_into().expect("NR values");
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let arp = src.a[r * src.ars + p * src.aps];
                for (x, &bpl) in acc_r.iter_mut().zip(bp) {
                    *x = madd::<FUSED>(*x, arp, bpl);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (cl, &x) in c[r * ldc..][..NR].iter_mut().zip(acc_r) {
                *cl = x;
            }
        }
        return;
    }
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..k {
        let bp = &src.b[p * src.bps..][..cols];
        for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
            let arp = src.a[r * src.ars + p * src.aps];
            for (x, &bpl) in acc_r.iter_mut().zip(bp) {
                *x = madd::<FUSED>(*x, arp, bpl);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate().take(rows) {
        c[r * ldc..][..cols].copy_from_slice(&acc_r[..cols]);
    }
}

/// Step 2's loops: every `MR×NR` tile of C, each read straight from A and B.
#[inline(always)]
fn tiled<const MR: usize, const NR: usize, const FUSED: bool>(
    (m, k, n): Dims,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) {
    for i in (0..m).step_by(MR) {
        for j in (0..n).step_by(NR) {
            let src = TileIn {
                a: &a[i * k..],
                ars: k,
                aps: 1,
                b: &b[j..],
                bps: n,
            };
            let size = (MR.min(m - i), NR.min(n - j));
            tile::<MR, NR, FUSED>(k, src, size, &mut c[i * n + j..], n);
        }
    }
}

/// Step 2 at the AVX-512 micro-kernel's tile, 12×32 (24 zmm accumulators).
fn tiled_12x32<const FUSED: bool>(s: Dims, a: &[f32], b: &[f32], c: &mut [f32]) {
    tiled::<12, 32, FUSED>(s, a, b, c)
}

/// Step 2 at the AVX2 micro-kernel's tile, 6×16 (12 ymm accumulators).
fn tiled_6x16<const FUSED: bool>(s: Dims, a: &[f32], b: &[f32], c: &mut [f32]) {
    tiled::<6, 16, FUSED>(s, a, b, c)
}

with_features!(tiled_avx512, "avx512f,avx2,fma", tiled_12x32);
with_features!(tiled_avx2, "avx2,fma", tiled_6x16);

/// Step 2 of the ladder: a register tile over unpacked operands. `A` is
/// `m×k`, `B` is `k×n`, `C` is `m×n`, all row-major and contiguous; `C` is
/// overwritten with `A·B`.
///
/// C is cut into `MR×NR` tiles (12×32 with AVX-512, 6×16 with AVX2, the
/// micro-kernels' shapes; 4×8 on the baseline target's 16 SSE registers).
/// Each tile's accumulators stay in registers for the whole `p` loop: per
/// step it loads one `NR`-wide row of B and `MR` scalars of A and does
/// `MR·NR` multiply-adds, so C is loaded and stored once per tile instead of
/// once per multiply-add. The operands are read where they lie, though: the
/// tile walks B down `k` rows `n` floats apart and A along `MR` separate
/// rows, strides that defeat the caches (with `n` a multiple of 512 floats
/// the B rows even map to the same few L1 sets) — what packing fixes.
///
/// PyTorch equivalent: `torch.matmul(a, b)` on 2-D tensors.
///
/// # Panics
///
/// If the slice lengths are not `m·k`, `k·n` and `m·n`.
pub fn step2_register_tile(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    check(m, k, n, a, b, c);
    if m == 0 || n == 0 {
        return;
    }
    let s = (m, k, n);
    match Isa::detect().f32() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the detected level guarantees AVX-512F, AVX2 and FMA.
        Level::Avx512 => unsafe { tiled_avx512(s, a, b, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the detected level guarantees AVX2 and FMA.
        Level::Avx2 => unsafe { tiled_avx2(s, a, b, c) },
        Level::Portable => tiled::<4, 8, false>(s, a, b, c),
    }
}

/// Step 3 of the ladder: packing, without cache blocking. `A` is `m×k`,
/// `B` is `k×n`, `C` is `m×n`, all row-major and contiguous; `C` is
/// overwritten with `A·B`.
///
/// All of A is first copied into `MR`-row panels (`A[i, p]` at
/// `p·MR + i` within its panel) and all of B into `NR`-column panels
/// (`B[p, j]` at `p·NR + j`), each panel the whole `k` deep, with the same
/// packing routines as [`super::matmul_packed::gemm_f32`]. Then the
/// micro-kernel computes every tile from two panels with purely sequential,
/// aligned loads. What is missing compared with the full kernel is the
/// blocking of `k` by `KC` (and of m, n by `MC`, `NC`): a panel here is
/// `k` floats deep, so for large `k` one A panel no longer fits L1 and the
/// B panels stream from further out than L2.
///
/// Uses the AVX-512 (12×32) or AVX2 (6×16) micro-kernel; on the baseline
/// target it packs 4×8 panels for step 2's portable tile.
///
/// PyTorch equivalent: `torch.matmul(a, b)` on 2-D tensors.
///
/// # Panics
///
/// If the slice lengths are not `m·k`, `k·n` and `m·n`.
pub fn step3_packed(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    check(m, k, n, a, b, c);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    match Isa::detect().f32() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            use super::microkernel_avx512 as mk;
            let kernel = Kernel {
                mr: mk::MR,
                nr: mk::NR,
                // SAFETY: AVX-512F was detected; the other requirements
                // are the caller's, as `Kernel` states (same for all three).
                pack_a: |kc, valid, src, ls, ps, dst| unsafe {
                    mk::pack_a(kc, valid, src, ls, ps, dst)
                },
                // SAFETY: as above.
                pack_b: |kc, valid, src, ls, ps, dst| unsafe {
                    mk::pack_b(kc, valid, src, ls, ps, dst)
                },
                // SAFETY: as above.
                tile: |kc, ap, bp, out| unsafe { mk::kernel(kc, ap, bp, out) },
            };
            // SAFETY: the kernel's instruction set is available.
            unsafe { packed_x86(&kernel, (m, k, n), a, b, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            use super::matmul_packed::pack_panel;
            use super::microkernel_avx2 as mk;
            let kernel = Kernel {
                mr: mk::MR,
                nr: mk::NR,
                // SAFETY: plain Rust; the requirements are the caller's,
                // as `Kernel` states.
                pack_a: |kc, valid, src, ls, ps, dst| unsafe {
                    pack_panel(mk::MR, kc, valid, src, ls, ps, dst)
                },
                // SAFETY: as above.
                pack_b: |kc, valid, src, ls, ps, dst| unsafe {
                    pack_panel(mk::NR, kc, valid, src, ls, ps, dst)
                },
                // SAFETY: AVX2 and FMA were detected; the rest as above.
                tile: |kc, ap, bp, out| unsafe { mk::kernel(kc, ap, bp, out) },
            };
            // SAFETY: the kernel's instruction set is available.
            unsafe { packed_x86(&kernel, (m, k, n), a, b, c) }
        }
        Level::Portable => packed_portable(m, k, n, a, b, c),
    }
}

/// A micro-kernel with its packers, as step 3 calls them.
///
/// `pack_a(kc, valid, src, ls, ps, dst)` / `pack_b(…)` pack one panel
/// (`dst[p·w + l] = src[l·ls + p·ps]`, `w` = `mr` / `nr`, zero lanes from
/// `valid`), like `pack_panel`, and need `src` readable there and `dst`
/// writable for `kc·w` floats (64-byte aligned for B); `tile(kc, a, b, out)`
/// computes one tile from two such panels into a `TileOut`.
#[cfg(target_arch = "x86_64")]
struct Kernel {
    mr: usize,
    nr: usize,
    pack_a: unsafe fn(usize, usize, *const f32, isize, isize, *mut f32),
    pack_b: unsafe fn(usize, usize, *const f32, isize, isize, *mut f32),
    tile: unsafe fn(usize, *const f32, *const f32, &super::matmul_packed::TileOut),
}

/// Step 3 on x86: packs every panel of A and B at full depth `k` into the
/// thread's 64-byte-aligned scratch buffers, then runs the micro-kernel over
/// every (A panel, B panel) pair.
///
/// # Safety
///
/// The CPU supports `kern`'s instruction set; `a`, `b`, `c` hold `m·k`,
/// `k·n`, `m·n` floats, and `m, k, n > 0`.
#[cfg(target_arch = "x86_64")]
unsafe fn packed_x86(kern: &Kernel, (m, k, n): Dims, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (mr, nr) = (kern.mr, kern.nr);
    let (mpanels, npanels) = (m.div_ceil(mr), n.div_ceil(nr));
    with_scratch(&PACK_A, mpanels * mr * k, |apack| {
        with_scratch(&PACK_B, npanels * nr * k, |bpack| {
            for ip in 0..mpanels {
                // A panel ip: rows ip·MR.. (lanes k apart), p unit-stride.
                let (valid, src) = (mr.min(m - ip * mr), a[ip * mr * k..].as_ptr());
                // SAFETY: rows < valid of A, k deep; panel ip of apack.
                unsafe { (kern.pack_a)(k, valid, src, k as isize, 1, apack.add(ip * mr * k)) };
            }
            for jp in 0..npanels {
                // B panel jp: columns jp·NR.. (unit-stride lanes), p n apart.
                let (valid, src) = (nr.min(n - jp * nr), b[jp * nr..].as_ptr());
                // SAFETY: columns < valid of B, k deep; panel jp of bpack,
                // at a multiple of NR·k floats from an aligned start, and
                // NR floats are a multiple of 32 bytes (AVX2) / 64 (AVX-512).
                unsafe { (kern.pack_b)(k, valid, src, 1, n as isize, bpack.add(jp * nr * k)) };
            }
            let cp = c.as_mut_ptr();
            for ip in 0..mpanels {
                for jp in 0..npanels {
                    let (i, j) = (ip * mr, jp * nr);
                    let out = super::matmul_packed::TileOut {
                        c: cp.wrapping_add(i * n + j),
                        rsc: n as isize,
                        csc: 1,
                        rows: mr.min(m - i),
                        cols: nr.min(n - j),
                        alpha: 1.0,
                        beta: 0.0,
                    };
                    let (ap, bp) = (
                        apack.wrapping_add(ip * mr * k),
                        bpack.wrapping_add(jp * nr * k),
                    );
                    // SAFETY: two panels packed above with depth k; the
                    // valid part of the tile lies inside C (row-major m×n).
                    unsafe { (kern.tile)(k, ap, bp, &out) };
                }
            }
        })
    })
}

/// Step 3 on the baseline target: 4×8 panels, packed into owned buffers,
/// then step 2's portable tile reading them with the panel strides.
fn packed_portable(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    const MR: usize = 4;
    const NR: usize = 8;
    let (mpanels, npanels) = (m.div_ceil(MR), n.div_ceil(NR));
    let mut apack = vec![0.0f32; mpanels * MR * k];
    let mut bpack = vec![0.0f32; npanels * NR * k];
    for (ip, panel) in apack.chunks_exact_mut(MR * k).enumerate() {
        for r in 0..MR.min(m - ip * MR) {
            let row = &a[(ip * MR + r) * k..][..k];
            for (p, &v) in row.iter().enumerate() {
                panel[p * MR + r] = v;
            }
        }
    }
    for (jp, panel) in bpack.chunks_exact_mut(NR * k).enumerate() {
        let cols = NR.min(n - jp * NR);
        for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
            dst[..cols].copy_from_slice(&b[p * n + jp * NR..][..cols]);
        }
    }
    for ip in 0..mpanels {
        for jp in 0..npanels {
            let (i, j) = (ip * MR, jp * NR);
            let src = TileIn {
                a: &apack[ip * MR * k..],
                ars: 1,
                aps: MR,
                b: &bpack[jp * NR * k..],
                bps: NR,
            };
            let size = (MR.min(m - i), NR.min(n - j));
            tile::<MR, NR, false>(k, src, size, &mut c[i * n + j..], n);
        }
    }
}

#[cfg(test)]
#[path = "matmul_steps_tests.rs"]
mod tests;
