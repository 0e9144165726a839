//! Raw compute kernels over slices and pointers, below the `Tensor` type.
//!
//! Everything here takes plain memory plus shapes and strides; the `ops`
//! modules check shapes and call in.
