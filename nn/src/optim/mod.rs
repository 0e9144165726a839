//! Optimizers with PyTorch semantics, learning-rate schedules and gradient
//! clipping.
//!
//! An optimizer owns [`ParamGroup`]s of shared parameter handles; `step()`
//! reads each parameter's accumulated gradient and updates its value in
//! place (copy-on-write if anything else still holds the old storage).
//! Parameters without a gradient are skipped, as in PyTorch.

mod adamw;
mod clip;
mod schedule;
mod sgd;

use std::collections::BTreeMap;

use kiln_autograd::Var;
use kiln_tensor::Tensor;

pub use adamw::{Adam, AdamConfig, AdamW};
pub use clip::clip_grad_norm;
pub use schedule::{LrSchedule, ScheduleKind};
pub use sgd::{Sgd, SgdConfig};

use crate::Result;

/// Parameters that share hyper-parameters (PyTorch's `param_groups`).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Named parameters (names key the optimizer state in checkpoints).
    pub params: Vec<(String, Var)>,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (L2 for SGD/Adam, decoupled for AdamW).
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group with the given learning rate and weight decay.
    pub fn new(params: Vec<(String, Var)>, lr: f64, weight_decay: f64) -> ParamGroup {
        ParamGroup {
            params,
            lr,
            weight_decay,
        }
    }
}

/// Splits parameters into two groups the way transformers' `Trainer` and
/// nanoGPT do: matrices (weights of Linear/Conv1D/embeddings, rank ≥ 2) get
/// `weight_decay`; biases and LayerNorm weights (rank 1) get none.
pub fn decay_groups(params: Vec<(String, Var)>, lr: f64, weight_decay: f64) -> Vec<ParamGroup> {
    let (decay, no_decay): (Vec<_>, Vec<_>) =
        params.into_iter().partition(|(_, p)| p.shape().len() >= 2);
    vec![
        ParamGroup::new(decay, lr, weight_decay),
        ParamGroup::new(no_decay, lr, 0.0),
    ]
}

/// What every optimizer offers.
pub trait Optimizer {
    /// Applies one update from the current gradients.
    ///
    /// # Errors
    /// Dtype or shape problems between a parameter and its gradient/state.
    fn step(&mut self) -> Result<()>;

    /// The parameter groups.
    fn param_groups(&self) -> &[ParamGroup];

    /// Mutable parameter groups (to change hyper-parameters).
    fn param_groups_mut(&mut self) -> &mut [ParamGroup];

    /// The optimizer's state as named tensors (`{param}.exp_avg`, …, and a
    /// scalar `{param}.step`), for checkpoints.
    fn state_tensors(&self) -> BTreeMap<String, Tensor>;

    /// Restores state saved by [`Optimizer::state_tensors`].
    ///
    /// # Errors
    /// [`crate::NnError::Config`] naming a missing or mis-shaped entry.
    fn load_state_tensors(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()>;

    /// Sets the learning rate of every group.
    fn set_lr(&mut self, lr: f64) {
        for g in self.param_groups_mut() {
            g.lr = lr;
        }
    }

    /// The first group's learning rate.
    fn lr(&self) -> f64 {
        self.param_groups().first().map_or(0.0, |g| g.lr)
    }

    /// Clears the gradients of every parameter (`optimizer.zero_grad()`).
    fn zero_grad(&self) {
        for g in self.param_groups() {
            for (_, p) in &g.params {
                p.zero_grad();
            }
        }
    }
}

/// A state entry, or a config error naming it.
pub(crate) fn state_entry<'a>(
    state: &'a BTreeMap<String, Tensor>,
    key: &str,
    like: &Tensor,
) -> Result<&'a Tensor> {
    let t = state.get(key).ok_or_else(|| crate::NnError::Config {
        module: "optimizer state".into(),
        msg: format!("missing entry {key}"),
    })?;
    if t.shape() != like.shape() {
        return Err(crate::NnError::Config {
            module: "optimizer state".into(),
            msg: format!("{key}: expected {:?}, found {:?}", like.shape(), t.shape()),
        });
    }
    Ok(t)
}

/// Reads a scalar step counter from state.
pub(crate) fn state_step(state: &BTreeMap<String, Tensor>, key: &str) -> Result<u64> {
    let t = state.get(key).ok_or_else(|| crate::NnError::Config {
        module: "optimizer state".into(),
        msg: format!("missing entry {key}"),
    })?;
    Ok(t.to_dtype(kiln_tensor::DType::F64).item::<f64>()? as u64)
}
