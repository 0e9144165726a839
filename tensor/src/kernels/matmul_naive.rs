//! The readable reference matrix multiply: three loops, no blocking, no SIMD.
//!
//! It is the oracle the fast kernels are tested against and the baseline
//! the `matmul` benchmark shows beside them. It reads every operand through
//! its strides, so any view (transposed, sliced, negative strides) works.

use super::Gemm;

/// Generates the naive kernel for one float type, so f32 and f64 share one text.
macro_rules! naive_gemm {
    ($(#[$doc:meta])* $name:ident, $t:ty) => {
        $(#[$doc])*
        ///
        /// Shapes (the fields of [`Gemm`]): `A` is `m×k`, `B` is `k×n`, `C` is `m×n`. Element `(i, j)` of
        /// `X` lives at `x.offset(i * rsx + j * csx)`; strides are in elements and
        /// may be any value, including zero or negative.
        ///
        /// `C = alpha · A·B + beta · C`. When `beta == 0`, `C` is write-only: it
        /// is never read, so NaN or uninitialised garbage in it is ignored.
        ///
        /// Each dot product is accumulated in the natural order `p = 0, 1, …,
        /// k-1` in the element type, one rounding per multiply and per add, which
        /// makes the result easy to reason about. The `i, j, p` loop order favours
        /// readability over speed: this is the oracle, not a fast path.
        ///
        /// # Safety
        ///
        /// For every `i < m`, `j < n`, `p < k`, the offsets above must stay
        /// inside the allocations behind `a`, `b` and `c` and be valid for
        /// reads (`a`, `b`) and writes (`c`, plus reads when `beta != 0`).
        /// `C` must not overlap `A` or `B`, and no two `(i, j)` of `C` may map
        /// to the same element (a zero stride in `C` with `m` or `n` > 1 is a
        /// data race with itself).
        pub unsafe fn $name(g: Gemm<$t>) {
            let Gemm { m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc } = g;
            // C[m×n] = alpha · A[m×k] · B[k×n] + beta · C[m×n]
            for i in 0..m {
                for j in 0..n {
                    let mut acc: $t = 0.0;
                    for p in 0..k {
                        // SAFETY: in bounds by the caller's contract.
                        let aip = unsafe { *a.offset(i as isize * rsa + p as isize * csa) };
                        // SAFETY: in bounds by the caller's contract.
                        let bpj = unsafe { *b.offset(p as isize * rsb + j as isize * csb) };
                        acc += aip * bpj;
                    }
                    // SAFETY: in bounds by the caller's contract.
                    let cij = unsafe { &mut *c.offset(i as isize * rsc + j as isize * csc) };
                    *cij = if beta == 0.0 { alpha * acc } else { alpha * acc + beta * *cij };
                }
            }
        }
    };
}

naive_gemm!(
    /// Naive single-precision GEMM: `C[m×n] = alpha · A[m×k] · B[k×n] + beta · C`.
    gemm_f32,
    f32
);

naive_gemm!(
    /// Naive double-precision GEMM: `C[m×n] = alpha · A[m×k] · B[k×n] + beta · C`.
    gemm_f64,
    f64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_by_hand() {
        // [1 2 3; 4 5 6] · [7 8; 9 10; 11 12] = [58 64; 139 154]
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [f32::NAN; 4];
        // SAFETY: 2×3 and 3×2 row-major inputs, a 2×2 output, as strided.
        unsafe {
            gemm_f32(Gemm {
                m: 2,
                k: 3,
                n: 2,
                alpha: 1.0,
                a: a.as_ptr(),
                rsa: 3,
                csa: 1,
                b: b.as_ptr(),
                rsb: 2,
                csb: 1,
                beta: 0.0,
                c: c.as_mut_ptr(),
                rsc: 2,
                csc: 1,
            });
        }
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
        // Transposed B read through strides, beta = 1 accumulates.
        let bt = [7.0f64, 9.0, 11.0, 8.0, 10.0, 12.0];
        let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        let mut c64 = [1.0f64; 4];
        // SAFETY: the same shapes, B read through transposed strides.
        unsafe {
            gemm_f64(Gemm {
                m: 2,
                k: 3,
                n: 2,
                alpha: 2.0,
                a: a64.as_ptr(),
                rsa: 3,
                csa: 1,
                b: bt.as_ptr(),
                rsb: 1,
                csb: 3,
                beta: 1.0,
                c: c64.as_mut_ptr(),
                rsc: 2,
                csc: 1,
            });
        }
        assert_eq!(c64, [117.0, 129.0, 279.0, 309.0]);
    }
}
