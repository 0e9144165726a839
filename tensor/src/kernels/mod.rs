//! Raw compute kernels over slices and pointers, below the `Tensor` type.
//!
//! Everything here takes plain memory plus shapes and strides; the `ops`
//! modules check shapes and call in.

pub mod fastmath;

/// `C[m×n] = alpha · A[m×k] · B[k×n] + beta · C` in f32, any strides.
///
/// # Safety
/// Every element `a + i·rsa + p·csa` (i < m, p < k), `b + p·rsb + j·csb`
/// (p < k, j < n) and `c + i·rsc + j·csc` must be valid; `c` must not alias
/// `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f32(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
}

/// `C[m×n] = alpha · A[m×k] · B[k×n] + beta · C` in f64, any strides.
///
/// # Safety
/// As [`gemm_f32`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f64(
    m: usize,
    k: usize,
    n: usize,
    alpha: f64,
    a: *const f64,
    rsa: isize,
    csa: isize,
    b: *const f64,
    rsb: isize,
    csb: isize,
    beta: f64,
    c: *mut f64,
    rsc: isize,
    csc: isize,
) {
    matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
}
