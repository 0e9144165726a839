//! AVX-512 GEMM micro-kernel: one `MR×32` tile of C from packed panels.
//!
//! Register budget (32 zmm registers): `MR × 2` accumulators (each row of
//! the tile is 32 floats = two zmm), two registers for the current row of the
//! B panel, and one for the A element, broadcast from memory (a load-port
//! op, no shuffle) and used by two FMAs. `MR = 12` uses 24 accumulators:
//! enough independent FMA chains to hide the 4-cycle FMA latency on two FMA
//! ports (which needs ≥ 8) while each loaded B vector feeds 12 FMAs, so the
//! load ports stay under-used (14 loads for 24 FMAs per `k` step). A
//! 14-row variant (28 accumulators) ran no faster, so the smaller edge
//! waste of 12 rows won (the kernel's figures are in `benches/README.md`).
//!
//! The packing routines for this kernel (16×16 register transposes) live
//! here too, since they share its tile geometry.

use std::arch::x86_64::*;

use super::matmul_packed::{store_tile_scalar, TileOut};

/// Width of a B micro-panel (columns of the C tile): two zmm registers.
pub(crate) const NR: usize = 32;

/// Rows of the C tile.
pub(crate) const MR: usize = 12;

/// How many `k` steps ahead the kernel prefetches the B panel (24 steps =
/// 3 KiB, a few hundred cycles: about an L2 round trip with margin).
const B_PREFETCH: usize = 24;

/// `C_tile = alpha · A_panel · B_panel + beta · C_tile` for one tile.
///
/// `a` is an `MR`-row A panel packed as `a[p·MR + i] = A[i, p]`, `b` a
/// 32-column B panel packed as `b[p·32 + j] = B[p, j]`, both `kc` long and
/// 64-byte aligned (`b` is read with aligned loads). The tile's valid part
/// (`out.rows × out.cols`) is written to C through its strides; the padding
/// rows and columns of the panels are computed and dropped.
///
/// The loop runs over `p` with the whole tile in registers, so each
/// `C[i, j]` is `Σ_p A[i,p]·B[p,j]` accumulated by FMA in `p` order,
/// independent of where the tile sits in C: that is what keeps results
/// bit-identical however C is split between threads.
///
/// # Safety
///
/// The CPU must support AVX-512F. `a` must be valid for `kc·MR` reads, `b`
/// for `kc·32` reads and 64-byte aligned, and `out` must satisfy
/// [`TileOut`]'s contract.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, out: &TileOut) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let mut ap = a;
    let mut bp = b;
    macro_rules! step {
        () => {
            // SAFETY: fewer than kc steps are taken, so both panels are in
            // bounds; b is 64-byte aligned and each row of it is 128 bytes.
            unsafe {
                // The B panel streams from L2; the hardware prefetchers
                // alone leave the loads waiting (measured ~6% slower).
                let pf = bp.wrapping_add(NR * B_PREFETCH).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(pf);
                _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(64));
                let b0 = _mm512_load_ps(bp);
                let b1 = _mm512_load_ps(bp.add(16));
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*ap.add(i));
                    row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
                }
                ap = ap.add(MR);
                bp = bp.add(NR);
            }
        };
    }
    if out.csc == 1 {
        // Start fetching the C tile; it arrives while the k loop runs.
        for i in 0..out.rows {
            let c = out.c.wrapping_offset(i as isize * out.rsc).cast::<i8>();
            _mm_prefetch::<_MM_HINT_T0>(c);
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(64));
        }
    }
    for _ in 0..kc {
        step!();
    }
    // Write-back, inline so that `acc` never has its address taken (an
    // escaping array would make LLVM keep it in memory inside the k loop).
    // A full tile with unit column stride goes straight from registers; any
    // other tile is spilled and written by the shared scalar routine, which
    // evaluates the same expression (`alpha·acc`, then `+ beta·c`, unfused)
    // so the bits do not depend on which path a tile took.
    if out.rows == MR && out.cols == NR && out.csc == 1 {
        let alpha = _mm512_set1_ps(out.alpha);
        let beta = _mm512_set1_ps(out.beta);
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: the tile is full and rows are contiguous, so 32 floats
            // from each row start are inside C (TileOut contract).
            unsafe {
                let c = out.c.offset(i as isize * out.rsc);
                for (h, &v) in row.iter().enumerate() {
                    let ch = c.add(16 * h);
                    let mut r = _mm512_mul_ps(alpha, v);
                    if out.beta != 0.0 {
                        r = _mm512_add_ps(r, _mm512_mul_ps(beta, _mm512_loadu_ps(ch)));
                    }
                    _mm512_storeu_ps(ch, r);
                }
            }
        }
    } else {
        let mut tmp = std::mem::MaybeUninit::<[f32; MR * NR]>::uninit();
        let t = tmp.as_mut_ptr().cast::<f32>();
        for (i, row) in acc.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                // SAFETY: 16 floats at i·NR + 16·h are inside tmp.
                unsafe { _mm512_storeu_ps(t.add(i * NR + 16 * h), v) };
            }
        }
        // SAFETY: every element of tmp was written above; out forwarded.
        unsafe { store_tile_scalar(tmp.assume_init_ref(), NR, out) }
    }
}

/// Transposes a 16×16 block held as 16 rows: afterwards `r[q]` holds
/// what was column `q`. Three rounds of in-lane and cross-lane shuffles
/// (64 shuffles for 256 floats), so packing a transposed operand costs a
/// fraction of a cycle per element instead of a scalar load and store each.
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    // Round 1: interleave row pairs → 2×2 blocks.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Round 2: 4×4 blocks; r[4g + c] now holds, in each 128-bit lane L,
    // column 4L + c of rows 4g..4g+4.
    for g in 0..4 {
        let (lo0, hi0, lo1, hi1) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        r[4 * g] = _mm512_shuffle_ps::<0x44>(lo0, lo1);
        r[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(lo0, lo1);
        r[4 * g + 2] = _mm512_shuffle_ps::<0x44>(hi0, hi1);
        r[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(hi0, hi1);
    }
    // Rounds 3 and 4: gather the 128-bit lanes across row groups.
    for c in 0..4 {
        t[c] = _mm512_shuffle_f32x4::<0x88>(r[c], r[4 + c]);
        t[4 + c] = _mm512_shuffle_f32x4::<0xDD>(r[c], r[4 + c]);
        t[8 + c] = _mm512_shuffle_f32x4::<0x88>(r[8 + c], r[12 + c]);
        t[12 + c] = _mm512_shuffle_f32x4::<0xDD>(r[8 + c], r[12 + c]);
    }
    for c in 0..8 {
        r[c] = _mm512_shuffle_f32x4::<0x88>(t[c], t[8 + c]);
        r[8 + c] = _mm512_shuffle_f32x4::<0xDD>(t[c], t[8 + c]);
    }
}

/// Mask of the first `n` of 16 lanes (`n ≤ 16`).
fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// Packs up to 16 lanes that are each contiguous along `p` (`ps == 1`):
/// `dst[p·ld + l] = src[l·ls + p]` for `l < valid` (zeros for
/// `valid ≤ l < width`), through 16×16 register transposes.
///
/// # Safety
///
/// AVX-512F; `src` readable for `l < valid`, `p < kc`; `dst` writable for
/// `p·ld + l`, `p < kc`, `l < width ≤ 16`.
#[target_feature(enable = "avx512f")]
unsafe fn pack_transposed16(
    kc: usize,
    valid: usize,
    width: usize,
    src: *const f32,
    ls: isize,
    dst: *mut f32,
    ld: usize,
) {
    let store = lanes(width);
    let mut p0 = 0;
    while p0 < kc {
        let pn = (kc - p0).min(16);
        let load = lanes(pn);
        let mut r = [_mm512_setzero_ps(); 16];
        for (l, row) in r.iter_mut().enumerate().take(valid) {
            // SAFETY: lane l < valid, elements p0..p0+pn (masked) of it.
            *row = unsafe { _mm512_maskz_loadu_ps(load, src.offset(l as isize * ls).add(p0)) };
        }
        transpose16(&mut r);
        for (q, col) in r.iter().enumerate().take(pn) {
            // SAFETY: row p0+q < kc of dst, lanes < width.
            unsafe { _mm512_mask_storeu_ps(dst.add((p0 + q) * ld), store, *col) };
        }
        p0 += pn;
    }
}

/// Packs an A micro-panel: `dst[p·MR + i] = A[i, p]` for `i < valid`, zero
/// rows below (edge panels), from `A[i, p] = src[i·ls + p·ps]`.
///
/// Row-major A (`ps == 1`) is transposed 16 values of `p` at a time in
/// registers; column-major A (`ls == 1`) is a masked row copy.
///
/// # Safety
///
/// AVX-512F; `src` readable for `i < valid ≤ MR`, `p < kc`; `dst` writable
/// for `kc·MR` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_a(
    kc: usize,
    valid: usize,
    src: *const f32,
    ls: isize,
    ps: isize,
    dst: *mut f32,
) {
    // SAFETY: (both branches) within the bounds of the contract.
    unsafe {
        if ps == 1 {
            pack_transposed16(kc, valid, MR, src, ls, dst, MR);
        } else if ls == 1 {
            let (load, store) = (lanes(valid), lanes(MR));
            for p in 0..kc {
                let v = _mm512_maskz_loadu_ps(load, src.offset(p as isize * ps));
                _mm512_mask_storeu_ps(dst.add(p * MR), store, v);
            }
        } else {
            super::matmul_packed::pack_panel(MR, kc, valid, src, ls, ps, dst);
        }
    }
}

/// Packs a B micro-panel: `dst[p·NR + j] = B[p, j]` for `j < valid`, zero
/// columns right of it, from `B[p, j] = src[j·ls + p·ps]`.
///
/// Row-major B (`ls == 1`) is two (masked) vector copies per `p`;
/// column-major B (`ps == 1`, e.g. `wteᵀ`) is transposed in 16×16 blocks.
///
/// # Safety
///
/// AVX-512F; `src` readable for `j < valid ≤ NR`, `p < kc`; `dst` writable
/// for `kc·NR` floats and 64-byte aligned.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_b(
    kc: usize,
    valid: usize,
    src: *const f32,
    ls: isize,
    ps: isize,
    dst: *mut f32,
) {
    // SAFETY: (all branches) within the bounds of the contract.
    unsafe {
        if ls == 1 {
            // One panel of row-major B: the block packer with one panel.
            pack_b_rows(kc, valid, src, ps, dst);
        } else if ps == 1 {
            for h in 0..NR / 16 {
                let v = valid.saturating_sub(16 * h).min(16);
                let s = src.wrapping_offset((16 * h) as isize * ls);
                pack_transposed16(kc, v, 16, s, ls, dst.add(16 * h), NR);
            }
        } else {
            super::matmul_packed::pack_panel(NR, kc, valid, src, ls, ps, dst);
        }
    }
}

/// Packs a block of row-major B (`csb == 1`) into consecutive 32-column
/// panels — the layout [`pack_b`] builds panel by panel — filling it in
/// the order B lies in memory: `dst[jp·NR·kc + p·NR + j] = B[p, jp·NR + j]`
/// for `j < ncur − jp·NR`, zero columns right of the block's edge.
///
/// # Safety
///
/// AVX-512F; `src.offset(p·ps + j)` readable for `p < kc`, `j < ncur`;
/// `dst` writable for `ncur.div_ceil(NR)·NR·kc` floats and 64-byte aligned.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_b_rows(
    kc: usize,
    ncur: usize,
    src: *const f32,
    ps: isize,
    dst: *mut f32,
) {
    let panels = ncur.div_ceil(NR);
    for p in 0..kc {
        // SAFETY: row p < kc of the block, columns < ncur (masked).
        unsafe {
            let s = src.offset(p as isize * ps);
            let d = dst.add(p * NR);
            for jp in 0..panels {
                let valid = ncur - jp * NR;
                let (m0, m1) = (
                    lanes(valid.min(16)),
                    lanes(valid.saturating_sub(16).min(16)),
                );
                let (sj, dj) = (s.add(jp * NR), d.add(jp * NR * kc));
                _mm512_store_ps(dj, _mm512_maskz_loadu_ps(m0, sj));
                _mm512_store_ps(dj.add(16), _mm512_maskz_loadu_ps(m1, sj.wrapping_add(16)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul_packed::pack_panel;
    use crate::kernels::scratch::Line;

    /// Packing a row-major B block row by row gives the panels the scalar
    /// packer builds one by one, ragged last panel included.
    #[test]
    fn row_order_packing_matches_panel_packing() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let (ps, src): (usize, Vec<f32>) = (100, (0..100 * 40).map(|i| i as f32).collect());
        for kc in [1, 17, 40] {
            for ncur in [1usize, 31, 32, 33, 70, 96] {
                let panels = ncur.div_ceil(NR);
                let len = panels * NR * kc;
                let mut want = vec![Line([f32::NAN; 16]); len / 16 + 1];
                let mut got = vec![Line([f32::NAN; 16]); len / 16 + 1];
                let (wp, gp) = (
                    want.as_mut_ptr().cast::<f32>(),
                    got.as_mut_ptr().cast::<f32>(),
                );
                // SAFETY: reads stay inside the 40 rows of 100; destinations
                // hold `len` floats, 64-byte aligned.
                unsafe {
                    for jp in 0..panels {
                        let valid = NR.min(ncur - jp * NR);
                        pack_panel(
                            NR,
                            kc,
                            valid,
                            src.as_ptr().add(jp * NR),
                            1,
                            ps as isize,
                            wp.add(jp * NR * kc),
                        );
                    }
                    pack_b_rows(kc, ncur, src.as_ptr(), ps as isize, gp);
                    let want = std::slice::from_raw_parts(wp, len);
                    let got = std::slice::from_raw_parts(gp, len);
                    assert_eq!(want, got, "kc {kc} ncur {ncur}");
                }
            }
        }
    }

    /// The SIMD packers produce exactly what the scalar reference packer
    /// does, for every layout branch, ragged depths and partial panels.
    #[test]
    fn simd_packing_matches_scalar() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let src: Vec<f32> = (0..4000).map(|i| i as f32).collect();
        for kc in [1, 15, 16, 17, 40] {
            // (lane stride, p stride): p-contiguous, lane-contiguous, neither.
            for (ls, ps) in [(70isize, 1isize), (1, 70), (2, 80)] {
                for (w, valid_max) in [(MR, MR), (NR, NR)] {
                    for valid in [1, 5, valid_max - 1, valid_max] {
                        let mut want = vec![Line([f32::NAN; 16]); kc * w / 16 + 1];
                        let mut got = vec![Line([f32::NAN; 16]); kc * w / 16 + 1];
                        let (wp, gp) = (
                            want.as_mut_ptr().cast::<f32>(),
                            got.as_mut_ptr().cast::<f32>(),
                        );
                        // SAFETY: reads stay below 4000 elements for these
                        // strides; destinations hold kc·w floats, 64-aligned.
                        unsafe {
                            pack_panel(w, kc, valid, src.as_ptr(), ls, ps, wp);
                            if w == MR {
                                pack_a(kc, valid, src.as_ptr(), ls, ps, gp);
                            } else {
                                pack_b(kc, valid, src.as_ptr(), ls, ps, gp);
                            }
                            let want = std::slice::from_raw_parts(wp, kc * w);
                            let got = std::slice::from_raw_parts(gp, kc * w);
                            assert_eq!(want, got, "w {w} kc {kc} valid {valid} ls {ls} ps {ps}");
                        }
                    }
                }
            }
        }
    }
}
