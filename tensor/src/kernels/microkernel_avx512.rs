//! AVX-512 GEMM micro-kernel: one `MR×32` tile of C from packed panels.
//!
//! Register budget (32 zmm registers): `MR × 2` accumulators (each row of
//! the tile is 32 floats = two zmm), two registers for the current row of the
//! B panel, and the A element broadcast straight from memory as the FMA's
//! `{1to16}` operand. `MR = 12` uses 24 accumulators: enough independent FMA
//! chains to hide the 4-cycle FMA latency on two FMA ports (which needs ≥ 8)
//! while each loaded B vector feeds 12 FMAs, so the two load ports stay
//! under-used (14 loads for 24 FMAs per `k` step).

use std::arch::x86_64::*;

use super::matmul_packed::{store_tile_scalar, TileOut};

/// Width of a B micro-panel (columns of the C tile): two zmm registers.
pub(crate) const NR: usize = 32;

/// Rows of the C tile.
pub(crate) const MR: usize = 12;

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
    for _ in 0..kc {
        // SAFETY: p < kc, so both panels are in bounds; b is 64-byte aligned
        // and each row of it is 128 bytes.
        unsafe {
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
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { write_back(&acc, out) }
}

/// Writes the accumulators to C as `alpha · acc + beta · C`.
///
/// A full tile with unit column stride goes straight from registers; any
/// other tile is spilled and written by the shared scalar routine, which
/// evaluates the same expression (`alpha·acc`, then `+ beta·c` without
/// fusion) so the bits do not depend on which path a tile took.
#[target_feature(enable = "avx512f")]
unsafe fn write_back(acc: &[[__m512; 2]; MR], out: &TileOut) {
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
        let mut tmp = [0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                // SAFETY: 16 floats at i·NR + 16·h are inside tmp.
                unsafe { _mm512_storeu_ps(tmp.as_mut_ptr().add(i * NR + 16 * h), v) };
            }
        }
        // SAFETY: forwarded from this function's contract.
        unsafe { store_tile_scalar(&tmp, NR, out) }
    }
}
