//! kiln-models.
#![warn(missing_docs)]
