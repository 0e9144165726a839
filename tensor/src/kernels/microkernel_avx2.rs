//! AVX2 + FMA GEMM micro-kernel: one `6×16` tile of C from packed panels.
//!
//! Register budget (16 ymm registers): 12 accumulators (6 rows × two ymm of
//! 8 floats), two for the current B row and one for the broadcast A element.
//! Twelve independent FMA chains cover the FMA latency × two ports.

use std::arch::x86_64::*;

use super::matmul_packed::{store_tile_scalar, TileOut};

/// Width of a B micro-panel (columns of the C tile): two ymm registers.
pub(crate) const NR: usize = 16;

/// Rows of the C tile.
pub(crate) const MR: usize = 6;

/// `C_tile = alpha · A_panel · B_panel + beta · C_tile` for one `6×16` tile.
///
/// Same packing and meaning as the AVX-512 kernel, with `MR = 6`, `NR = 16`:
/// `a[p·6 + i] = A[i, p]`, `b[p·16 + j] = B[p, j]`; each `C[i, j]` is
/// accumulated by FMA in `p` order.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA. `a` must be valid for `kc·6` reads,
/// `b` for `kc·16` reads and 32-byte aligned, and `out` must satisfy
/// [`TileOut`]'s contract.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, out: &TileOut) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        // SAFETY: p < kc keeps both panels in bounds; b is 32-byte aligned.
        unsafe {
            let b0 = _mm256_load_ps(bp);
            let b1 = _mm256_load_ps(bp.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*ap.add(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    if out.rows == MR && out.cols == NR && out.csc == 1 {
        let alpha = _mm256_set1_ps(out.alpha);
        let beta = _mm256_set1_ps(out.beta);
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: full tile with contiguous rows (TileOut contract).
            unsafe {
                let c = out.c.offset(i as isize * out.rsc);
                for (h, &v) in row.iter().enumerate() {
                    let ch = c.add(8 * h);
                    // Same expression as the scalar path: alpha·acc, then + beta·c.
                    let mut r = _mm256_mul_ps(alpha, v);
                    if out.beta != 0.0 {
                        r = _mm256_add_ps(r, _mm256_mul_ps(beta, _mm256_loadu_ps(ch)));
                    }
                    _mm256_storeu_ps(ch, r);
                }
            }
        }
    } else {
        // Spill through an uninitialised scratch tile (no memset, and `acc`
        // never has its address taken, so it stays in registers).
        let mut tmp = std::mem::MaybeUninit::<[f32; MR * NR]>::uninit();
        let t = tmp.as_mut_ptr().cast::<f32>();
        for (i, row) in acc.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                // SAFETY: 8 floats at i·NR + 8·h are inside tmp.
                unsafe { _mm256_storeu_ps(t.add(i * NR + 8 * h), v) };
            }
        }
        // SAFETY: every element of tmp was written above; out forwarded.
        unsafe { store_tile_scalar(tmp.assume_init_ref(), NR, out) }
    }
}
