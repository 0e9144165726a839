//! The models crate's error type.

use std::path::PathBuf;

use kiln_nn::NnError;

use crate::tokenizer::TokenizerError;

/// Errors loading, saving or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file or directory could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// `config.json` is missing a field, malformed, or inconsistent.
    #[error("{}: {msg}", path.display())]
    Config {
        /// The config file (or preset name).
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A weight in the checkpoint does not fit the config.
    #[error("{}: {tensor}: {msg}", file.display())]
    Weights {
        /// The weights file.
        file: PathBuf,
        /// The tensor's name in the file.
        tensor: String,
        /// What is wrong (expected and found shapes, …).
        msg: String,
    },
    /// Invalid input to the model (ids out of range, sequence too long…).
    #[error("{0}")]
    Input(String),
    /// A module, op or state-dict error.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// A tokenizer error.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A data-parallel (multi-rank) error.
    #[error(transparent)]
    Distributed(#[from] kiln_distributed::DistributedError),
    /// Resolving or downloading a hub model or dataset failed (boxed: it
    /// is large and rare).
    #[error(transparent)]
    Hub(Box<crate::hub::HubError>),
}

impl From<crate::hub::HubError> for ModelError {
    fn from(e: crate::hub::HubError) -> Self {
        ModelError::Hub(Box::new(e))
    }
}

impl From<kiln_tensor::TensorError> for ModelError {
    fn from(e: kiln_tensor::TensorError) -> Self {
        ModelError::Nn(e.into())
    }
}

impl From<kiln_autograd::AutogradError> for ModelError {
    fn from(e: kiln_autograd::AutogradError) -> Self {
        ModelError::Nn(e.into())
    }
}

/// Shorthand for model results.
pub type Result<T> = std::result::Result<T, ModelError>;
