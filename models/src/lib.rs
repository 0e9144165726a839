//! kiln-models: GPT-2 with Hugging Face weights ([`gpt2`]), the exact GPT-2
//! tokenizer ([`tokenizer`]), models and datasets by hub name through the
//! Hugging Face cache ([`hub`]), generation with a key/value cache
//! ([`gpt2::generate`]), and a trainer with crash-safe checkpoints and exact
//! resume ([`train`]) for GPT-2 or any model that implements
//! [`train::TrainModel`].
#![warn(missing_docs)]

mod error;
pub mod gpt2;
pub mod hub;
pub mod memory;
pub mod tokenizer;
pub mod train;

pub use error::{ModelError, Result};
