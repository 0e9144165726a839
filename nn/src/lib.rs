//! kiln-nn.
#![warn(missing_docs)]
