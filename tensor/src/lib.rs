//! kiln-tensor: a strided CPU tensor.
//!
//! A [`Tensor`] is shared [`Storage`] plus a [`Layout`] (shape, strides in
//! elements, offset). View ops never copy; math ops read any strided input
//! and write a new contiguous tensor. Binary ops broadcast like NumPy. Every
//! fallible op returns [`Result`] with a [`TensorError`] naming the op and
//! the shapes. Parallel kernels run on Kiln's own thread pool
//! ([`parallel::set_num_threads`]) and give bit-identical results at any
//! thread count.
//!
//! ```
//! use kiln_tensor::{DType, Tensor};
//! let x = Tensor::arange(0.0, 6.0, 1.0, DType::F32)?.reshape(&[2, 3])?;
//! let y = x.t()?;                       // a view: no copy
//! assert!(y.shares_storage(&x));
//! let s = x.matmul(&y)?.softmax(-1)?;   // [2, 2]
//! assert_eq!(s.shape(), &[2, 2]);
//! # Ok::<(), kiln_tensor::TensorError>(())
//! ```
#![warn(missing_docs)]

mod display;
pub mod dtype;
mod error;
pub mod kernels;
mod layout;
pub mod memory;
pub mod ops;
pub mod parallel;
mod random;
pub mod shape;
mod storage;
mod strided;
mod tensor;
pub mod testing;
mod uninit;

pub use dtype::{DType, Element, FloatElement};
pub use error::{Result, TensorError};
pub use layout::Layout;
pub use ops::cross_entropy::CrossEntropyStats;
pub use ops::matmul::PackedRhs;
pub use ops::norm::LayerNormStats;
pub use random::Rng;
pub use shape::Dim;
pub use storage::Storage;
pub use tensor::Tensor;
