//! Stochastic gradient descent with momentum, as `torch.optim.SGD`:
//!
//! ```text
//! g ← g + wd·p                         (weight decay)
//! b ← g on the first step, else b ← μ·b + (1 − dampening)·g
//! g ← g + μ·b if nesterov, else b      (with momentum μ ≠ 0)
//! p ← p − lr·g
//! ```

use std::collections::BTreeMap;

use kiln_autograd::Var;
use kiln_tensor::Tensor;

use super::{state_entry, Optimizer, ParamGroup};
use crate::Result;

/// SGD hyper-parameters beyond lr and weight decay (PyTorch defaults: all 0 / false).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor μ.
    pub momentum: f64,
    /// Dampening of the momentum update.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// `torch.optim.SGD`.
#[derive(Debug, Clone)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    cfg: SgdConfig,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// An optimizer over `groups`.
    pub fn new(groups: Vec<ParamGroup>, cfg: SgdConfig) -> Sgd {
        Sgd {
            groups,
            cfg,
            buffers: BTreeMap::new(),
        }
    }

    fn step_param(&mut self, name: &str, p: &Var, lr: f64, wd: f64) -> Result<()> {
        let Some(mut g) = p.grad() else { return Ok(()) };
        let value = p.value();
        if wd != 0.0 {
            g = g.add(&value.mul_scalar(wd)?)?;
        }
        if self.cfg.momentum != 0.0 {
            let buf = match self.buffers.get(name) {
                None => g.contiguous(),
                Some(b) => b
                    .mul_scalar(self.cfg.momentum)?
                    .add(&g.mul_scalar(1.0 - self.cfg.dampening)?)?,
            };
            self.buffers.insert(name.to_string(), buf.clone());
            g = if self.cfg.nesterov {
                g.add(&buf.mul_scalar(self.cfg.momentum)?)?
            } else {
                buf
            };
        }
        p.set_value(value.sub(&g.mul_scalar(lr)?)?)?;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let groups = self.groups.clone();
        for group in &groups {
            for (name, p) in &group.params {
                self.step_param(name, p, group.lr, group.weight_decay)?;
            }
        }
        Ok(())
    }

    fn param_groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    fn param_groups_mut(&mut self) -> &mut [ParamGroup] {
        &mut self.groups
    }

    fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        self.buffers
            .iter()
            .map(|(k, v)| (format!("{k}.momentum_buffer"), v.clone()))
            .collect()
    }

    fn load_state_tensors(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut fresh = BTreeMap::new();
        for group in &self.groups {
            for (name, p) in &group.params {
                let key = format!("{name}.momentum_buffer");
                if state.contains_key(&key) {
                    fresh.insert(name.clone(), state_entry(state, &key, &p.value())?.clone());
                }
            }
        }
        self.buffers = fresh;
        Ok(())
    }
}
