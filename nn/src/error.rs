//! The nn crate's error type.

use kiln_autograd::AutogradError;
use kiln_tensor::TensorError;

use crate::state_dict::StateDictError;

/// Errors from modules, losses, optimizers and state dicts.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A tensor op failed; the message names the op and shapes.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// Recording or playing back the tape failed.
    #[error(transparent)]
    Autograd(#[from] AutogradError),
    /// Reading or writing a state dict failed; names the file and tensor.
    #[error(transparent)]
    StateDict(#[from] StateDictError),
    /// A module was configured or called with values that do not fit.
    #[error("{module}: {msg}")]
    Config {
        /// The module or component.
        module: String,
        /// What was wrong.
        msg: String,
    },
}

/// Shorthand for nn results.
pub type Result<T> = std::result::Result<T, NnError>;
