//! GPT-2's feed-forward block, and `Sequential` for composing modules.

use kiln_autograd::Var;

use crate::dropout::{Dropout, Gelu};
use crate::linear::Conv1D;
use crate::module::{join, Forward, Module};
use crate::Result;

/// `c_fc` (C → 4C), GELU (`gelu_new`), `c_proj` (4C → C), dropout.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[C, 4C]` expansion.
    pub c_fc: Conv1D,
    /// `[4C, C]` projection back to the residual stream.
    pub c_proj: Conv1D,
    /// Dropout on the output.
    pub dropout: Dropout,
}

impl Module for Mlp {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        self.c_fc.visit_params(&join(prefix, "c_fc"), f);
        self.c_proj.visit_params(&join(prefix, "c_proj"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.dropout.set_training(training);
        self.c_fc.set_training(training);
        self.c_proj.set_training(training);
    }
}

impl Forward for Mlp {
    /// `x: [..., C] → [..., C]`.
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = Gelu.forward(&self.c_fc.forward(x)?)?; // (..., 4C)
        self.dropout.forward(&self.c_proj.forward(&h)?)
    }
}

/// Modules applied in order (`nn.Sequential`); parameters are named by
/// position: `0.weight`, `2.bias`, …
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Forward + Send + Sync>>,
}

impl Sequential {
    /// An empty stack.
    pub fn new() -> Sequential {
        Sequential { layers: Vec::new() }
    }

    /// Appends a layer (builder style).
    pub fn push(mut self, layer: impl Forward + Send + Sync + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit_params(&join(prefix, &i.to_string()), f);
        }
    }

    fn set_training(&mut self, training: bool) {
        for l in &mut self.layers {
            l.set_training(training);
        }
    }
}

impl Forward for Sequential {
    fn forward(&self, x: &Var) -> Result<Var> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        Ok(h)
    }
}
