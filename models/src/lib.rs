//! kiln-models.
#![warn(missing_docs)]

pub mod tokenizer;
