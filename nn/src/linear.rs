//! Affine layers in both layouts GPT-2 code meets: PyTorch's `nn.Linear`
//! (weight `[out, in]`, `y = x·Wᵀ + b`) and Hugging Face's `Conv1D` (weight
//! `[in, out]`, `y = x·W + b`), which GPT-2 checkpoints use.

use kiln_autograd::Var;
use kiln_tensor::{DType, Rng};

use crate::init::{normal, uniform};
use crate::lora::Lora;
use crate::module::{join, Forward, Module};
use crate::var_builder::{Init, VarBuilder};
use crate::{NnError, Result};

/// `torch.nn.Linear`: `y = x·Wᵀ + b`, weight `[out, in]`, bias `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Var,
    /// `[out_features]`, if any.
    pub bias: Option<Var>,
}

impl Linear {
    /// PyTorch's default initialisation: weight and bias from
    /// `U(−1/√in, 1/√in)` (what `kaiming_uniform_(a=√5)` reduces to).
    ///
    /// # Errors
    /// A dtype error unless `dtype` is f32/f64.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Linear> {
        let bound = 1.0 / (in_features as f64).sqrt();
        let weight = Var::parameter(uniform(
            &[out_features, in_features],
            -bound,
            bound,
            dtype,
            rng,
        )?);
        let bias = if bias {
            Some(Var::parameter(uniform(
                &[out_features],
                -bound,
                bound,
                dtype,
                rng,
            )?))
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Wraps existing parameters, checking that their shapes fit.
    ///
    /// # Errors
    /// [`NnError::Config`] if weight is not 2-D or bias is not `[out]`.
    pub fn from_params(weight: Var, bias: Option<Var>) -> Result<Linear> {
        let ws = weight.shape();
        if ws.len() != 2 || bias.as_ref().is_some_and(|b| b.shape() != [ws[0]]) {
            return Err(NnError::Config {
                module: "Linear".into(),
                msg: format!(
                    "weight {ws:?} and bias {:?} do not fit [out, in] and [out]",
                    bias.map(|b| b.shape())
                ),
            });
        }
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        f(join(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(join(prefix, "bias"), b);
        }
    }
}

impl Forward for Linear {
    /// `x: [..., in] → [..., out]`.
    fn forward(&self, x: &Var) -> Result<Var> {
        let y = x.matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }
}

/// Hugging Face's `Conv1D` (GPT-2's projections): `y = x·W + b` with weight
/// stored `[in, out]` — the transpose of `nn.Linear`, for historical reasons
/// (it began as a 1×1 convolution in OpenAI's TensorFlow code).
#[derive(Debug, Clone)]
pub struct Conv1D {
    /// `[in_features, out_features]`.
    pub weight: Var,
    /// `[out_features]`.
    pub bias: Var,
    /// A LoRA adapter added to the output, if any (its parameters are
    /// named `lora_A.weight` and `lora_B.weight` under this layer's, as
    /// PEFT names them).
    pub lora: Option<Lora>,
}

impl Conv1D {
    /// GPT-2 initialisation: weight `N(0, std²)`, bias zero.
    ///
    /// # Errors
    /// A dtype error unless `dtype` is f32/f64.
    pub fn new(
        in_features: usize,
        out_features: usize,
        std: f64,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Conv1D> {
        Ok(Conv1D {
            weight: Var::parameter(normal(&[in_features, out_features], 0.0, std, dtype, rng)?),
            bias: Var::parameter(kiln_tensor::Tensor::zeros(&[out_features], dtype)),
            lora: None,
        })
    }

    /// `weight` `[in, out]` and `bias` `[out]` from `vb` (`N(0, std²)` and
    /// zeros when fresh), named `{prefix}.weight` and `{prefix}.bias`.
    ///
    /// # Errors
    /// Whatever the source reports for a missing or mis-shaped tensor.
    pub fn build<E: From<NnError>>(
        mut vb: VarBuilder<'_, E>,
        in_features: usize,
        out_features: usize,
        std: f64,
    ) -> std::result::Result<Conv1D, E> {
        Ok(Conv1D {
            weight: vb.get("weight", &[in_features, out_features], Init::Normal(std))?,
            bias: vb.get("bias", &[out_features], Init::Zeros)?,
            lora: None,
        })
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[1]
    }
}

impl Module for Conv1D {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        f(join(prefix, "weight"), &self.weight);
        f(join(prefix, "bias"), &self.bias);
        if let Some(l) = &self.lora {
            f(join(prefix, "lora_A.weight"), &l.a);
            f(join(prefix, "lora_B.weight"), &l.b);
        }
    }

    fn set_training(&mut self, training: bool) {
        if let Some(l) = &mut self.lora {
            l.dropout.set_training(training);
        }
    }
}

impl Forward for Conv1D {
    /// `x: [..., in] → [..., out]`; with an adapter, plus its low-rank
    /// update ([`Lora::delta`]). A bf16 weight that inference forwards
    /// keep multiplying by long inputs is packed once and kept packed
    /// ([`crate::prepack`]; the same bits as packing it per call).
    fn forward(&self, x: &Var) -> Result<Var> {
        let y = match crate::prepack::packed_weight(&self.weight, x)? {
            Some(w) => Var::constant(x.value().matmul_prepacked(&w)?),
            None => x.matmul(&self.weight)?,
        };
        let y = y.add(&self.bias)?;
        match &self.lora {
            Some(l) => Ok(y.add(&l.delta(x)?)?),
            None => Ok(y),
        }
    }
}
