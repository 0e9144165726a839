//! kiln-tensor: a strided CPU tensor.
#![warn(missing_docs)]

pub mod kernels;
pub mod parallel;
