//! The autograd crate's error type.

use kiln_tensor::TensorError;

/// Errors from recording or playing back a tape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AutogradError {
    /// A tensor op failed (shapes, dtypes…); the message names op and shapes.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// `backward()` without an explicit gradient needs a one-element output.
    #[error("backward: output has shape {shape:?}; only a one-element output can start backward without an explicit gradient")]
    NotScalar {
        /// The output's shape.
        shape: Vec<usize>,
    },
    /// `backward()` on a value that nothing upstream requires gradients for.
    #[error("backward: this value does not require grad (it is a constant, was detached, or was computed under no_grad)")]
    NoGrad,
    /// The value was recorded on a tape that has since been played back and
    /// freed (each tape supports one backward pass).
    #[error(
        "{op}: the value was recorded on a tape that was already freed by backward(); recompute it (to differentiate several losses of one forward pass, use backward_all(&[&loss1, &loss2]))"
    )]
    StaleTape {
        /// Where the stale value was used.
        op: &'static str,
    },
    /// A gradient of the wrong shape was supplied.
    #[error("{op}: gradient shape {got:?} does not match value shape {expected:?}")]
    GradShape {
        /// Where.
        op: &'static str,
        /// The value's shape.
        expected: Vec<usize>,
        /// The gradient's shape.
        got: Vec<usize>,
    },
    /// Any other invalid argument.
    #[error("{op}: {msg}")]
    Invalid {
        /// Where.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
}

/// Shorthand for autograd results.
pub type Result<T> = std::result::Result<T, AutogradError>;
