//! Token and position embeddings: a `[num, dim]` table looked up by id.

use kiln_autograd::Var;
use kiln_tensor::{DType, Rng, Tensor};

use crate::init::normal;
use crate::module::{join, Module};
use crate::var_builder::{Init, VarBuilder};
use crate::{NnError, Result};

/// `torch.nn.Embedding`: row `i` of `weight` for each id `i`.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Var,
}

impl Embedding {
    /// Initialised from `N(0, std²)` (GPT-2 uses 0.02; PyTorch's default is 1).
    ///
    /// # Errors
    /// A dtype error unless `dtype` is f32/f64.
    pub fn new(num: usize, dim: usize, std: f64, dtype: DType, rng: &mut Rng) -> Result<Embedding> {
        Ok(Embedding {
            weight: Var::parameter(normal(&[num, dim], 0.0, std, dtype, rng)?),
        })
    }

    /// `weight` of shape `[num, dim]` from `vb` (`N(0, std²)` when fresh),
    /// named `{prefix}.weight`.
    ///
    /// # Errors
    /// Whatever the source reports for a missing or mis-shaped tensor.
    pub fn build<E: From<NnError>>(
        mut vb: VarBuilder<'_, E>,
        num: usize,
        dim: usize,
        std: f64,
    ) -> std::result::Result<Embedding, E> {
        Ok(Embedding {
            weight: vb.get("weight", &[num, dim], Init::Normal(std))?,
        })
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Looks up `ids` (i64, any shape `[...]`) → `[..., dim]`. The gradient
    /// is a scatter-add into the rows that were used.
    ///
    /// # Errors
    /// [`NnError::Config`] for an id outside the table (naming it), or a
    /// dtype error if `ids` is not i64.
    pub fn forward(&self, ids: &Tensor) -> Result<Var> {
        let dim = self.weight.shape()[1];
        let flat = ids.flatten_all();
        let out = self
            .weight
            .index_select(0, &flat)
            .map_err(|e| NnError::Config {
                module: "Embedding".into(),
                msg: format!(
                    "lookup of ids {:?} in a table of {} rows failed: {e}",
                    ids.shape(),
                    self.num_embeddings()
                ),
            })?;
        let mut shape = ids.shape().to_vec();
        shape.push(dim);
        // A bf16 / f16 table (a bf16 model) gives f32 activations.
        let out = match out.value().dtype() {
            kiln_tensor::DType::BF16 | kiln_tensor::DType::F16 => {
                out.to_dtype(kiln_tensor::DType::F32)?
            }
            _ => out,
        };
        Ok(out.reshape(&shape)?)
    }
}

impl Module for Embedding {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        f(join(prefix, "weight"), &self.weight);
    }
}

/// Ids as an i64 tensor, from token ids of any integer type.
///
/// # Errors
/// A shape error if `shape` does not match the number of ids.
pub fn ids_tensor(ids: &[u32], shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        ids.iter().map(|&i| i as i64).collect::<Vec<i64>>(),
        shape,
    )?)
}
