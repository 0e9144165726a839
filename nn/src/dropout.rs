//! Dropout and the activation modules.

use std::sync::Mutex;

use kiln_autograd::Var;
use kiln_tensor::Rng;

use crate::module::{Forward, Module};
use crate::{NnError, Result};

/// `torch.nn.Dropout(p)`: in training, zeroes each element with probability
/// `p` and scales the rest by `1/(1−p)`; in eval mode, the identity. Masks
/// come from the module's own seeded generator, so runs are reproducible
/// (and its state can be checkpointed with [`Dropout::rng_state`]).
#[derive(Debug)]
pub struct Dropout {
    /// Drop probability.
    pub p: f64,
    training: bool,
    rng: Mutex<Rng>,
}

impl Dropout {
    /// A dropout layer in training mode.
    ///
    /// # Errors
    /// [`NnError::Config`] unless `0 ≤ p < 1`.
    pub fn new(p: f64, seed: u64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(NnError::Config {
                module: "Dropout".into(),
                msg: format!("p must be in [0, 1), got {p}"),
            });
        }
        Ok(Dropout {
            p,
            training: true,
            rng: Mutex::new(Rng::new(seed)),
        })
    }

    /// Whether dropout is active.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The generator's state, for checkpoints.
    pub fn rng_state(&self) -> Rng {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Restores the generator from a checkpoint.
    pub fn set_rng_state(&self, rng: Rng) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = rng;
    }
}

impl Clone for Dropout {
    fn clone(&self) -> Self {
        Dropout {
            p: self.p,
            training: self.training,
            rng: Mutex::new(self.rng_state()),
        }
    }
}

impl Module for Dropout {
    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(String, &Var)) {}

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

impl Forward for Dropout {
    fn forward(&self, x: &Var) -> Result<Var> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        Ok(x.dropout(self.p, &mut rng)?)
    }
}

/// GELU with the tanh approximation: GPT-2's `gelu_new`
/// (`nn.GELU(approximate="tanh")`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gelu;

impl Module for Gelu {
    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(String, &Var)) {}
}

impl Forward for Gelu {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.gelu()?)
    }
}

/// `nn.ReLU`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relu;

impl Module for Relu {
    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(String, &Var)) {}
}

impl Forward for Relu {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.relu()?)
    }
}

/// `nn.Tanh`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tanh;

impl Module for Tanh {
    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(String, &Var)) {}
}

impl Forward for Tanh {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.tanh()?)
    }
}
