//! Layer normalisation over the last dim.

use kiln_autograd::Var;
use kiln_tensor::{DType, Tensor};

use crate::module::{join, Forward, Module};
use crate::var_builder::{Init, VarBuilder};
use crate::{NnError, Result};

/// `torch.nn.LayerNorm(dim, eps)`: normalise the last dim, then scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// `[dim]`, initialised to ones.
    pub weight: Var,
    /// `[dim]`, initialised to zeros.
    pub bias: Var,
    /// Added to the variance (GPT-2: 1e-5).
    pub eps: f64,
}

impl LayerNorm {
    /// Unit weight, zero bias.
    pub fn new(dim: usize, eps: f64, dtype: DType) -> LayerNorm {
        LayerNorm {
            weight: Var::parameter(Tensor::ones(&[dim], dtype)),
            bias: Var::parameter(Tensor::zeros(&[dim], dtype)),
            eps,
        }
    }

    /// `weight` and `bias` of shape `[dim]` from `vb` (ones and zeros when
    /// fresh), named `{prefix}.weight` and `{prefix}.bias`.
    ///
    /// # Errors
    /// Whatever the source reports for a missing or mis-shaped tensor.
    pub fn build<E: From<NnError>>(
        mut vb: VarBuilder<'_, E>,
        dim: usize,
        eps: f64,
    ) -> std::result::Result<LayerNorm, E> {
        Ok(LayerNorm {
            weight: vb.get("weight", &[dim], Init::Ones)?,
            bias: vb.get("bias", &[dim], Init::Zeros)?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        f(join(prefix, "weight"), &self.weight);
        f(join(prefix, "bias"), &self.bias);
    }
}

impl Forward for LayerNorm {
    /// `x: [..., dim] → [..., dim]`.
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.layer_norm(Some(&self.weight), Some(&self.bias), self.eps)?)
    }
}
