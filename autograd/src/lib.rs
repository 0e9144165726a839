//! kiln-autograd.
#![warn(missing_docs)]
