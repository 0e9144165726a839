//! Adam and AdamW, step by step as `torch.optim.Adam` / `AdamW` compute them
//! (the single-tensor CPU path), so results match PyTorch to rounding:
//!
//! ```text
//! AdamW: p ← p·(1 − lr·wd)                  (decoupled weight decay)
//! Adam:  g ← g + wd·p                       (L2 penalty in the gradient)
//! m ← m + (1 − β₁)·(g − m)                  (lerp toward g)
//! v ← β₂·v + (1 − β₂)·g²
//! p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)   (ε outside the root)
//! ```
//!
//! The update is one fused pass over each parameter's contiguous buffer,
//! split across threads in fixed chunks: elementwise, so the result does not
//! depend on the thread count.

use std::collections::BTreeMap;

use kiln_tensor::parallel::{for_each_chunk, SharedMut};
use kiln_tensor::{DType, FloatElement, Tensor};

use super::{state_entry, state_step, Optimizer, ParamGroup};
use crate::{NnError, Result};

/// Adam hyper-parameters (PyTorch defaults: lr 1e-3, betas (0.9, 0.999),
/// eps 1e-8; weight decay 0 for Adam, 0.01 for AdamW).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// β₁, the first-moment decay.
    pub beta1: f64,
    /// β₂, the second-moment decay.
    pub beta2: f64,
    /// ε, added outside the square root.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

#[derive(Debug, Clone)]
struct Moments {
    step: u64,
    m: Tensor,
    v: Tensor,
}

/// Shared engine of Adam and AdamW.
#[derive(Debug, Clone)]
struct AdamCore {
    groups: Vec<ParamGroup>,
    cfg: AdamConfig,
    decoupled: bool,
    state: BTreeMap<String, Moments>,
}

const CHUNK: usize = 1 << 16;

#[allow(clippy::too_many_arguments)]
fn update<T: FloatElement>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    lr: f64,
    wd: f64,
    cfg: &AdamConfig,
    step: u64,
    decoupled: bool,
) {
    let bc1 = 1.0 - cfg.beta1.powi(step as i32);
    let bc2 = 1.0 - cfg.beta2.powi(step as i32);
    let step_size = T::from_f64(lr / bc1);
    let bc2_sqrt = T::from_f64(bc2.sqrt());
    let decay = T::from_f64(1.0 - lr * wd);
    let wd_t = T::from_f64(wd);
    let (w1, b2, w2, eps) = (
        T::from_f64(1.0 - cfg.beta1),
        T::from_f64(cfg.beta2),
        T::from_f64(1.0 - cfg.beta2),
        T::from_f64(cfg.eps),
    );
    // One chunk of (param, grad, exp_avg, exp_avg_sq).
    let body = |p: &mut [T], g: &[T], m: &mut [T], v: &mut [T]| {
        for i in 0..p.len() {
            let mut gi = g[i];
            if wd != 0.0 {
                if decoupled {
                    p[i] *= decay;
                } else {
                    gi += wd_t * p[i];
                }
            }
            m[i] += w1 * (gi - m[i]);
            v[i] = v[i] * b2 + w2 * gi * gi;
            let denom = v[i].sqrt() / bc2_sqrt + eps;
            p[i] -= step_size * (m[i] / denom);
        }
    };
    // p's chunks come from for_each_chunk (one chunk runs inline, with no
    // hand-off to the pool); m's and v's are the same ranges.
    let (ms, vs) = (SharedMut::new(m), SharedMut::new(v));
    for_each_chunk(p, CHUNK, |r, pc| {
        // SAFETY: for_each_chunk hands each range to one call only, so
        // these chunks of m and v are touched by this call alone.
        let (mc, vc) = unsafe { (ms.range(r.clone()), vs.range(r.clone())) };
        body(pc, &g[r], mc, vc);
    });
}

impl AdamCore {
    fn step(&mut self) -> Result<()> {
        for group in &self.groups {
            for (name, param) in &group.params {
                let Some(grad) = param.grad() else { continue };
                let grad = grad.contiguous();
                // `value` shares the parameter's storage: it must be dropped
                // before `update_value`, or `data_mut` would see a second
                // owner and copy all 124 M elements (copy-on-write) each step.
                let value = param.value();
                if grad.shape() != value.shape() || grad.dtype() != value.dtype() {
                    return Err(NnError::Config {
                        module: "Adam".into(),
                        msg: format!(
                            "{name}: gradient {:?} {} does not match parameter {:?} {}",
                            grad.shape(),
                            grad.dtype(),
                            value.shape(),
                            value.dtype()
                        ),
                    });
                }
                let st = self.state.entry(name.clone()).or_insert_with(|| Moments {
                    step: 0,
                    m: value.zeros_like(),
                    v: value.zeros_like(),
                });
                drop(value);
                st.step += 1;
                let (lr, wd, cfg, step, decoupled) = (
                    group.lr,
                    group.weight_decay,
                    self.cfg,
                    st.step,
                    self.decoupled,
                );
                let Moments { m, v, .. } = st;
                param.update_value(|p| {
                    match p.dtype() {
                        DType::F32 => update(
                            p.data_mut::<f32>()?,
                            grad.as_slice::<f32>()?,
                            m.data_mut::<f32>()?,
                            v.data_mut::<f32>()?,
                            lr,
                            wd,
                            &cfg,
                            step,
                            decoupled,
                        ),
                        DType::F64 => update(
                            p.data_mut::<f64>()?,
                            grad.as_slice::<f64>()?,
                            m.data_mut::<f64>()?,
                            v.data_mut::<f64>()?,
                            lr,
                            wd,
                            &cfg,
                            step,
                            decoupled,
                        ),
                        other => {
                            return Err(kiln_tensor::TensorError::DType {
                                op: "adam",
                                got: other,
                                expected: "f32 or f64".into(),
                            }
                            .into())
                        }
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, st) in &self.state {
            out.insert(format!("{name}.exp_avg"), st.m.clone());
            out.insert(format!("{name}.exp_avg_sq"), st.v.clone());
            out.insert(format!("{name}.step"), Tensor::scalar(st.step as f64));
        }
        out
    }

    fn load_state_tensors(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut fresh = BTreeMap::new();
        for group in &self.groups {
            for (name, param) in &group.params {
                if !state.contains_key(&format!("{name}.step")) {
                    continue; // never stepped (no gradient yet)
                }
                let value = param.value();
                fresh.insert(
                    name.clone(),
                    Moments {
                        step: state_step(state, &format!("{name}.step"))?,
                        m: state_entry(state, &format!("{name}.exp_avg"), &value)?
                            .to_dtype(value.dtype())
                            .contiguous(),
                        v: state_entry(state, &format!("{name}.exp_avg_sq"), &value)?
                            .to_dtype(value.dtype())
                            .contiguous(),
                    },
                );
            }
        }
        self.state = fresh;
        Ok(())
    }
}

macro_rules! adam_type {
    ($(#[$doc:meta])* $name:ident, $decoupled:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            core: AdamCore,
        }

        impl $name {
            /// An optimizer over `groups` (each with its own lr and weight decay).
            pub fn new(groups: Vec<ParamGroup>, cfg: AdamConfig) -> $name {
                $name {
                    core: AdamCore {
                        groups,
                        cfg,
                        decoupled: $decoupled,
                        state: BTreeMap::new(),
                    },
                }
            }

            /// The hyper-parameters.
            pub fn config(&self) -> AdamConfig {
                self.core.cfg
            }
        }

        impl Optimizer for $name {
            fn step(&mut self) -> Result<()> {
                self.core.step()
            }
            fn param_groups(&self) -> &[ParamGroup] {
                &self.core.groups
            }
            fn param_groups_mut(&mut self) -> &mut [ParamGroup] {
                &mut self.core.groups
            }
            fn state_tensors(&self) -> BTreeMap<String, Tensor> {
                self.core.state_tensors()
            }
            fn load_state_tensors(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
                self.core.load_state_tensors(state)
            }
        }
    };
}

adam_type!(
    /// `torch.optim.Adam`: weight decay is an L2 term added to the gradient.
    Adam,
    false
);
adam_type!(
    /// `torch.optim.AdamW`: decoupled weight decay `p ← p·(1 − lr·wd)`
    /// applied before the Adam update (Loshchilov & Hutter).
    AdamW,
    true
);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_autograd::Var;

    fn data_ptr(p: &Var) -> usize {
        p.value().as_slice::<f32>().unwrap().as_ptr() as usize
    }

    /// The step writes into the parameter's own buffer: a copy-on-write
    /// copy of every parameter per step would double the optimizer's cost.
    #[test]
    fn step_updates_parameters_in_place() {
        let p = Var::parameter(Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3]).unwrap());
        p.set_grad(Some(
            Tensor::from_vec(vec![0.5f32, 0.5, -0.5], &[3]).unwrap(),
        ))
        .unwrap();
        let before = data_ptr(&p);
        let mut opt = AdamW::new(
            vec![ParamGroup::new(vec![("w".into(), p.clone())], 0.1, 0.01)],
            AdamConfig::default(),
        );
        for _ in 0..3 {
            opt.step().unwrap();
            assert_eq!(data_ptr(&p), before);
        }
        assert!(p.value().as_slice::<f32>().unwrap()[0] < 1.0);
    }
}
