//! Raw compute kernels over slices and pointers, below the `Tensor` type.
//!
//! Everything here takes plain memory plus shapes and strides; the `ops`
//! modules check shapes and call in.
//!
//! Matrix multiply: [`matmul_packed::gemm_f32`] is Kiln's GEMM (packed,
//! cache-blocked, AVX-512 / AVX2 micro-kernels picked at run time, parallel
//! over blocks of C); it sends `m == 1` / `n == 1` products to
//! [`gemv::gemv_f32`]. [`matmul_naive`] is the readable reference.

pub mod fastmath;
pub mod gemv;
mod gemv_bf16;
pub mod isa;
pub mod matmul_bf16;
pub mod matmul_naive;
pub mod matmul_packed;
#[cfg(target_arch = "x86_64")]
mod microkernel_amx;
#[cfg(target_arch = "x86_64")]
mod microkernel_avx2;
#[cfg(target_arch = "x86_64")]
mod microkernel_avx512;
#[cfg(target_arch = "x86_64")]
mod microkernel_bf16;
mod scratch;
