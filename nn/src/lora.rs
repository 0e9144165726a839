//! LoRA (Hu et al., 2021, "Low-Rank Adaptation") as PEFT implements it: a
//! frozen projection `y = x·W + b` gains a trainable low-rank update,
//!
//! ```text
//!   y = x·W + b + (α / r) · dropout(x) · Aᵀ · Bᵀ      A: [r, in], B: [out, r]
//! ```
//!
//! so fine-tuning trains `r·(in + out)` numbers per layer instead of
//! `in·out`. `A` starts like `nn.Linear(in, r)` (uniform ±1/√in, PEFT's
//! `kaiming_uniform_(a=√5)`) and `B` at zero, so training starts from the
//! base model exactly. The names and shapes are PEFT's (`lora_A.weight`
//! `[r, in]`, `lora_B.weight` `[out, r]`), so an adapter file maps one to
//! one.

use kiln_autograd::Var;
use kiln_tensor::{DType, Rng, Tensor};

use crate::dropout::Dropout;
use crate::init::uniform;
use crate::module::Forward;
use crate::{NnError, Result};

/// One layer's low-rank adapter.
#[derive(Debug, Clone)]
pub struct Lora {
    /// `lora_A.weight`, `[r, in]`.
    pub a: Var,
    /// `lora_B.weight`, `[out, r]`.
    pub b: Var,
    /// `lora_alpha / r`.
    pub scaling: f64,
    /// Dropout on the adapter's input (`lora_dropout`).
    pub dropout: Dropout,
}

impl Lora {
    /// A fresh adapter for a layer of `in_features → out_features`: `A`
    /// uniform in ±1/√in, `B` zero.
    ///
    /// # Errors
    /// [`NnError::Config`] for `r = 0` or a dropout outside [0, 1); dtype
    /// errors unless `dtype` is f32/f64.
    pub fn new(
        in_features: usize,
        out_features: usize,
        r: usize,
        alpha: f64,
        dropout: f64,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Lora> {
        if r == 0 {
            return Err(NnError::Config {
                module: "Lora".into(),
                msg: "r (--lora-r) must be at least 1".into(),
            });
        }
        let bound = 1.0 / (in_features as f64).sqrt();
        let a = uniform(&[r, in_features], -bound, bound, dtype, rng)?;
        Lora::from_weights(
            a,
            Tensor::zeros(&[out_features, r], dtype),
            alpha,
            dropout,
            rng.next_u64(),
        )
    }

    /// An adapter from given `A` `[r, in]` and `B` `[out, r]` (a PEFT
    /// file), scaled by `alpha / r`.
    ///
    /// # Errors
    /// [`NnError::Config`] when the shapes do not share `r` or the dropout
    /// is outside [0, 1).
    pub fn from_weights(a: Tensor, b: Tensor, alpha: f64, dropout: f64, seed: u64) -> Result<Lora> {
        let r = a.shape().first().copied().unwrap_or(0);
        if a.rank() != 2 || b.rank() != 2 || b.shape()[1] != r || r == 0 {
            return Err(NnError::Config {
                module: "Lora".into(),
                msg: format!(
                    "lora_A must be [r, in] and lora_B [out, r] with the same r ≥ 1, got {:?} and {:?}",
                    a.shape(),
                    b.shape()
                ),
            });
        }
        Ok(Lora {
            a: Var::parameter(a),
            b: Var::parameter(b),
            scaling: alpha / r as f64,
            dropout: Dropout::new(dropout, seed)?,
        })
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.shape()[0]
    }

    /// `(α / r) · dropout(x) · Aᵀ · Bᵀ`: `x [..., in] → [..., out]`.
    ///
    /// # Errors
    /// Shape errors naming the op.
    pub fn delta(&self, x: &Var) -> Result<Var> {
        let h = self.dropout.forward(x)?;
        Ok(h.matmul(&self.a.t()?)?
            .matmul(&self.b.t()?)?
            .mul_scalar(self.scaling)?)
    }

    /// The update in `Conv1D`'s `[in, out]` layout, `(α / r) · Aᵀ·Bᵀ`, to
    /// add to the frozen weight when merging (PEFT's `merge_and_unload`).
    ///
    /// # Errors
    /// Shape errors (not expected for a valid adapter).
    pub fn merged_delta(&self) -> Result<Tensor> {
        let a = self.a.value();
        let b = self.b.value();
        Ok(a.t()?.matmul(&b.t()?)?.mul_scalar(self.scaling)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::Conv1D;

    #[test]
    fn starts_as_the_base_layer_and_merges_exactly() {
        let mut rng = Rng::new(1);
        let mut conv = Conv1D::new(6, 5, 0.2, DType::F64, &mut rng).unwrap();
        let x = Var::constant(
            Tensor::rand_uniform(&[2, 3, 6], -1.0, 1.0, DType::F64, &mut rng).unwrap(),
        );
        let base = conv.forward(&x).unwrap().value();
        conv.lora = Some(Lora::new(6, 5, 2, 4.0, 0.0, DType::F64, &mut rng).unwrap());
        let start = conv.forward(&x).unwrap().value();
        assert_eq!(
            base.to_vec::<f64>().unwrap(),
            start.to_vec::<f64>().unwrap()
        );
        // A non-zero B: merging gives the same outputs as the adapter.
        conv.lora.as_mut().unwrap().b =
            Var::parameter(Tensor::rand_uniform(&[5, 2], -1.0, 1.0, DType::F64, &mut rng).unwrap());
        let adapted = conv.forward(&x).unwrap().value();
        let lora = conv.lora.as_ref().unwrap();
        let merged = Conv1D {
            weight: Var::parameter(
                conv.weight
                    .value()
                    .add(&lora.merged_delta().unwrap())
                    .unwrap(),
            ),
            bias: conv.bias.clone(),
            lora: None,
        };
        let got = merged.forward(&x).unwrap().value();
        for (a, b) in adapted
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .zip(got.to_vec::<f64>().unwrap())
        {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(2);
        let lora = Lora::from_weights(
            Tensor::rand_uniform(&[2, 4], -1.0, 1.0, DType::F64, &mut rng).unwrap(),
            Tensor::rand_uniform(&[3, 2], -1.0, 1.0, DType::F64, &mut rng).unwrap(),
            4.0,
            0.0,
            0,
        )
        .unwrap();
        let x = Tensor::rand_uniform(&[5, 4], -1.0, 1.0, DType::F64, &mut rng).unwrap();
        let report = kiln_autograd::gradcheck(
            |v: &[Var]| {
                let l = Lora {
                    a: v[1].clone(),
                    b: v[2].clone(),
                    ..lora.clone()
                };
                let d = l
                    .delta(&v[0])
                    .map_err(|e| kiln_autograd::AutogradError::Invalid {
                        op: "lora",
                        msg: e.to_string(),
                    })?;
                d.mul(&d)?.sum_all()
            },
            &[x, lora.a.value(), lora.b.value()],
            &Default::default(),
        )
        .unwrap();
        assert!(report.passed(), "{report:?}");
    }
}
