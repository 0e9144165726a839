//! AVX512-BF16 GEMM micro-kernel: one `MR×32` f32 tile of C from panels of
//! bf16 pairs, with `vdpbf16ps`.
//!
//! `vdpbf16ps acc, a, b` treats each 32-bit lane of `a` and `b` as two bf16
//! numbers and adds both products to the f32 lane of `acc`:
//! `acc[j] += a[j].lo·b[j].lo + a[j].hi·b[j].hi` (each product of two bf16
//! is exact in f32). So the packed panels hold **pairs along k**: a B
//! micro-panel is `b[q·32 + j] = (B[2q, j], B[2q+1, j])`, and an A panel
//! `a[q·MR + i] = (A[i, 2q], A[i, 2q+1])`, one `u32` each. One k-pair step
//! loads two zmm of B (32 columns × 2 k), broadcasts one `u32` of A per row
//! and issues 2·MR dot products: 64 multiply-adds per instruction, twice the
//! f32 FMA's 32.
//!
//! Register budget as in the f32 kernel: `MR = 12` rows × 2 = 24
//! accumulators, 2 for B, 1 for the broadcast A pair.

use std::arch::x86_64::*;

use super::matmul_packed::{store_tile_scalar, TileOut};

/// Columns of the C tile (two zmm of 16 f32 lanes).
pub(crate) const NR: usize = 32;

/// Rows of the C tile.
pub(crate) const MR: usize = 12;

/// `C_tile = alpha · A_panel · B_panel + beta · C_tile` over `kp` k-pairs.
///
/// The sum for each `C[i, j]` runs over the pairs in order, so it does not
/// depend on where the tile sits in C or how C is split between threads.
///
/// # Safety
///
/// The CPU must support AVX-512F and AVX512-BF16. `a` must be valid for
/// `kp·MR` reads, `b` for `kp·32` reads and 64-byte aligned, and `out` must
/// satisfy [`TileOut`]'s contract.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn kernel(kp: usize, a: *const u32, b: *const u32, out: &TileOut) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for q in 0..kp {
        // SAFETY: q < kp, so both panels are in bounds; b is 64-byte aligned
        // and each of its rows is 128 bytes.
        unsafe {
            let bp = b.add(q * NR);
            _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(NR * 16).cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(NR * 16 + 16).cast::<i8>());
            let b0: __m512bh = std::mem::transmute(_mm512_load_si512(bp.cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_load_si512(bp.add(16).cast()));
            let ap = a.add(q * MR);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
            }
        }
    }
    // Write-back as the f32 kernel does it (`alpha·acc`, then `+ beta·c`,
    // unfused), full tiles straight from registers.
    if out.rows == MR && out.cols == NR && out.csc == 1 {
        let alpha = _mm512_set1_ps(out.alpha);
        let beta = _mm512_set1_ps(out.beta);
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: a full tile with contiguous rows: 32 floats from each
            // row start are inside C (TileOut contract).
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
