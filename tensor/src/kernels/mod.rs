//! Raw compute kernels over slices and pointers, below the `Tensor` type.
//!
//! Everything here takes plain memory plus shapes and strides; the `ops`
//! modules check shapes and call in.
//!
//! Matrix multiply: every GEMM entry point takes one [`Gemm`] value (the
//! shapes, scalars and strided operands of a call).
//! [`matmul_packed::gemm_f32`] is Kiln's GEMM (packed,
//! cache-blocked, AVX-512 / AVX2 micro-kernels picked at run time, parallel
//! over blocks of C); it sends `m == 1` / `n == 1` products to
//! [`gemv::gemv_f32`]. [`matmul_naive`] is the readable reference, and
//! [`matmul_steps`] the teaching kernels between the two (the book's ladder).

/// One GEMM call, `C[m×n] = alpha · A[m×k] · B[k×n] + beta · C`: the
/// shapes, the scalars, and each operand as a pointer plus strides, so the
/// kernels take one value instead of fourteen arguments (BLAS's `?gemm`
/// order, and `matrixmultiply`'s). Element `(i, j)` of `X ∈ {A, B, C}` is
/// at `x.offset(i·rsx + j·csx)`; strides are in elements and may be any
/// value. Building one is safe; the `unsafe` kernel that takes it states
/// what the pointers must satisfy.
#[derive(Clone, Copy, Debug)]
pub struct Gemm<T> {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of A, rows of B: the length of each dot product.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
    /// The scale of the product.
    pub alpha: T,
    /// Element `(0, 0)` of A.
    pub a: *const T,
    /// A's row stride.
    pub rsa: isize,
    /// A's column stride.
    pub csa: isize,
    /// Element `(0, 0)` of B.
    pub b: *const T,
    /// B's row stride.
    pub rsb: isize,
    /// B's column stride.
    pub csb: isize,
    /// The scale of C's old value; 0 makes C write-only.
    pub beta: T,
    /// Element `(0, 0)` of C.
    pub c: *mut T,
    /// C's row stride.
    pub rsc: isize,
    /// C's column stride.
    pub csc: isize,
}

// SAFETY: the pointers are only dereferenced under the contract of the
// `unsafe fn` the value is passed to; threads write disjoint blocks of C.
unsafe impl<T> Send for Gemm<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Gemm<T> {}

impl<T: Copy> Gemm<T> {
    /// The same product transposed, `Cᵀ[n×m] = alpha · Bᵀ · Aᵀ + beta · Cᵀ`:
    /// the operands swap and each one's strides swap. It touches exactly the
    /// elements of the original, each computed by the same dot product.
    pub fn transposed(&self) -> Gemm<T> {
        Gemm {
            m: self.n,
            k: self.k,
            n: self.m,
            alpha: self.alpha,
            a: self.b,
            rsa: self.csb,
            csa: self.rsb,
            b: self.a,
            rsb: self.csa,
            csb: self.rsa,
            beta: self.beta,
            c: self.c,
            rsc: self.csc,
            csc: self.rsc,
        }
    }
}

pub mod fastmath;
pub mod gemv;
mod gemv_bf16;
pub mod isa;
pub mod matmul_bf16;
pub mod matmul_naive;
pub mod matmul_packed;
pub mod matmul_steps;
#[cfg(target_arch = "x86_64")]
mod microkernel_amx;
#[cfg(target_arch = "x86_64")]
mod microkernel_avx2;
#[cfg(target_arch = "x86_64")]
mod microkernel_avx512;
#[cfg(target_arch = "x86_64")]
mod microkernel_bf16;
#[cfg(target_arch = "x86_64")]
mod pack_bf16;
mod prepack_bf16;
mod scratch;
#[cfg(target_arch = "x86_64")]
mod stream_c;
