//! Affine layers in both layouts GPT-2 code meets: PyTorch's `nn.Linear`
//! (weight `[out, in]`, `y = x·Wᵀ + b`) and Hugging Face's `Conv1D` (weight
//! `[in, out]`, `y = x·W + b`), which GPT-2 checkpoints use.

use std::sync::Arc;

use kiln_autograd::Var;
use kiln_tensor::{DType, PackedRhs, Rng};

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

/// Rows of input from which a bf16 [`Conv1D`] packs its weight once and
/// keeps it packed (a prefill, an evaluation batch), rather than packing
/// it again on every product. Decode steps (one row) and short prompts
/// stay below it: they read the weight as it is stored, and nothing
/// extra is kept.
pub const PREPACK_MIN_ROWS: usize = 64;

impl Conv1D {
    /// The weight packed for the bf16 matrix kernel, when this product is
    /// one worth keeping it for: a bf16 weight, f32 activations of at
    /// least [`PREPACK_MIN_ROWS`] rows, and no gradient to record (an
    /// inference forward). The packed copy is kept with the weight
    /// ([`Var::derived`]) until its value changes.
    fn packed_weight(&self, x: &Var) -> Result<Option<Arc<PackedRhs>>> {
        let rows = x.shape().iter().rev().skip(1).product::<usize>();
        let records =
            kiln_autograd::is_grad_enabled() && (x.requires_grad() || self.weight.requires_grad());
        if self.weight.dtype() != DType::BF16
            || x.dtype() != DType::F32
            || records
            || rows < PREPACK_MIN_ROWS
        {
            return Ok(None);
        }
        Ok(Some(self.weight.derived(|w| w.prepack_rhs())?))
    }
}

impl Forward for Conv1D {
    /// `x: [..., in] → [..., out]`; with an adapter, plus its low-rank
    /// update ([`Lora::delta`]). A bf16 weight multiplying a long f32
    /// input without recording gradients is packed once and kept packed
    /// (see [`PREPACK_MIN_ROWS`]; the same bits as packing it per call,
    /// for a second copy of the matrix in memory).
    fn forward(&self, x: &Var) -> Result<Var> {
        let y = match self.packed_weight(x)? {
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

#[cfg(test)]
mod tests {
    use kiln_autograd::no_grad;
    use kiln_tensor::Tensor;

    use super::*;

    fn bf16_conv(rng: &mut Rng) -> Conv1D {
        let mut c = Conv1D::new(96, 80, 0.5, DType::F32, rng).unwrap();
        c.weight = Var::parameter(c.weight.value().to_dtype(DType::BF16));
        c.bias = Var::parameter(Tensor::randn(&[80], 0.0, 1.0, DType::F32, rng).unwrap());
        c
    }

    /// An inference forward of a bf16 Conv1D over enough rows packs the
    /// weight once, keeps it, and gives the bits of the unpacked product
    /// (a forward that records gradients); a new weight value is packed
    /// afresh.
    #[test]
    fn a_bf16_weight_is_packed_once_and_follows_its_value() {
        let mut rng = Rng::new(1);
        let conv = bf16_conv(&mut rng);
        let x = Var::constant(
            Tensor::randn(
                &[2, PREPACK_MIN_ROWS / 2 + 3, 96],
                0.0,
                1.0,
                DType::F32,
                &mut rng,
            )
            .unwrap(),
        );
        let plain = conv.forward(&x).unwrap().value();
        let packed = no_grad(|| conv.forward(&x)).unwrap().value();
        assert_eq!(
            packed.to_vec::<f32>().unwrap(),
            plain.to_vec::<f32>().unwrap()
        );
        // Kept: asking again does not pack.
        let kept = conv
            .weight
            .derived(|_| -> Result<PackedRhs> { panic!("the packed weight was not kept") })
            .unwrap();
        assert_eq!(kept.tensor().shape(), &[96, 80]);
        // A new value drops it; the next forward packs the new weight.
        let w2 = Tensor::randn(&[96, 80], 0.0, 1.0, DType::F32, &mut rng)
            .unwrap()
            .to_dtype(DType::BF16);
        conv.weight.set_value(w2.clone()).unwrap();
        let after = no_grad(|| conv.forward(&x)).unwrap().value();
        let want = x
            .value()
            .matmul(&w2)
            .unwrap()
            .add(&conv.bias.value())
            .unwrap();
        assert_eq!(
            after.to_vec::<f32>().unwrap(),
            want.to_vec::<f32>().unwrap()
        );
    }

    /// Short inputs (decode steps) and f32 weights keep nothing.
    #[test]
    fn short_inputs_and_f32_weights_are_not_packed() {
        let mut rng = Rng::new(2);
        let conv = bf16_conv(&mut rng);
        let x = Var::constant(Tensor::zeros(&[1, PREPACK_MIN_ROWS - 1, 96], DType::F32));
        no_grad(|| conv.forward(&x)).unwrap();
        let f32_conv = Conv1D::new(96, 80, 0.5, DType::F32, &mut rng).unwrap();
        let long = Var::constant(Tensor::zeros(&[1, PREPACK_MIN_ROWS, 96], DType::F32));
        no_grad(|| f32_conv.forward(&long)).unwrap();
        for c in [&conv, &f32_conv] {
            // Nothing was kept: this computes.
            let mut ran = false;
            c.weight
                .derived(|w| {
                    ran = true;
                    w.to_dtype(DType::BF16).prepack_rhs()
                })
                .unwrap();
            assert!(ran);
        }
    }
}
