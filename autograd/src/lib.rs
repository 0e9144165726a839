//! kiln-autograd: tape-based reverse-mode automatic differentiation over
//! kiln-tensor.
//!
//! Ops on [`Var`]s run eagerly (like PyTorch) and, while recording is on,
//! append a node to a thread-local tape (`tape.rs`). [`Var::backward`] walks
//! that tape in reverse, runs each op's backward rule once, accumulates
//! gradients into the leaves ([`Var::parameter`]) and frees the tape. The
//! tensor crate knows nothing of any of this.
//!
//! ```
//! use kiln_autograd::Var;
//! use kiln_tensor::{DType, Tensor};
//! // y = Σ (w·x)², so dy/dw = 2·(w·x)·x
//! let w = Var::parameter(Tensor::from_vec(vec![2.0f64], &[1])?);
//! let x = Var::constant(Tensor::from_vec(vec![3.0f64], &[1])?);
//! let y = w.mul(&x)?.powf(2.0)?.sum_all()?;
//! y.backward()?;
//! assert_eq!(w.grad().unwrap().to_vec::<f64>()?, vec![36.0]);
//! # Ok::<(), kiln_autograd::AutogradError>(())
//! ```
#![warn(missing_docs)]

mod autocast;
mod checkpoint;
mod custom;
mod dot;
mod error;
mod gradcheck;
mod ops;
mod tape;
pub mod trace;
mod var;

pub use autocast::{autocast_bf16, is_autocast_bf16};
pub use checkpoint::checkpoint;
pub use custom::custom_op;
pub use error::{AutogradError, Result};
pub use gradcheck::{gradcheck, GradMismatch, GradcheckOptions, GradcheckReport};
pub use tape::{
    backward_all, clear_tape, is_grad_enabled, no_grad, records, tape_len, unbroadcast, NoGradGuard,
};
pub use var::{GradHookHandle, Leaf, Var};
