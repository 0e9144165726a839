//! kiln-models: GPT-2 with Hugging Face weights, the exact GPT-2 tokenizer,
//! and generation with a key/value cache.
#![warn(missing_docs)]

mod error;
pub mod gpt2;
pub mod tokenizer;
pub mod train;

pub use error::{ModelError, Result};
