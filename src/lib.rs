//! Kiln: a from-scratch deep-learning stack in Rust.
//!
//! This crate re-exports the layers: [`tensor`], [`autograd`], [`nn`], [`models`].
#![warn(missing_docs)]

pub use kiln_autograd as autograd;
pub use kiln_models as models;
pub use kiln_nn as nn;
pub use kiln_tensor as tensor;
