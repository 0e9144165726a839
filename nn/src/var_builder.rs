//! Where a model's parameters come from, and a prefix-scoped way to ask
//! for them: Kiln's answer to candle's `VarBuilder`.
//!
//! A model is built once, parameter by parameter, each asked for by its
//! checkpoint name and expected shape. The same building code then serves
//! a fresh model ([`RandomInit`]) and a loaded one (a source that takes the
//! tensors out of a state dict, such as GPT-2's checkpoint loader in
//! kiln-models), so the names a model is built with and the names its
//! checkpoint holds cannot drift apart.
//!
//! ```
//! use kiln_nn::{Conv1D, LayerNorm, RandomInit, VarBuilder};
//! let mut src = RandomInit::new(0, kiln_tensor::DType::F32);
//! let mut vb = VarBuilder::new(&mut src);
//! let mut block = vb.pp("h.0"); // names below start with "h.0."
//! let ln_1 = LayerNorm::build(block.pp("ln_1"), 8, 1e-5)?; // h.0.ln_1.weight, h.0.ln_1.bias
//! let c_attn = Conv1D::build(block.pp("attn.c_attn"), 8, 24, 0.02)?;
//! assert_eq!(c_attn.weight.shape(), [8, 24]);
//! assert_eq!(ln_1.weight.value().to_vec::<f32>()?, vec![1.0; 8]);
//! # Ok::<(), kiln_nn::NnError>(())
//! ```

use kiln_autograd::Var;
use kiln_tensor::{DType, Rng, Tensor};

use crate::dropout::Dropout;
use crate::module::join;
use crate::NnError;

/// How a parameter is initialised when it is not loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// `N(0, std²)` (`torch.nn.init.normal_(w, 0, std)`).
    Normal(f64),
    /// All zeros (biases).
    Zeros,
    /// All ones (LayerNorm weights).
    Ones,
}

/// Where parameters come from: fresh initialisation or a checkpoint.
///
/// `Error` is the source's own error type (a checkpoint loader's names the
/// file); it must absorb [`NnError`] so the modules built from the source
/// can report theirs through it.
pub trait ParamSource {
    /// What [`ParamSource::take`] fails with.
    type Error: From<NnError>;

    /// The tensor for parameter `name` (the full dotted name, as stored in
    /// a checkpoint) of shape `shape`; `init` says how a fresh one starts.
    ///
    /// # Errors
    /// A missing tensor or a shape that does not fit, naming both.
    fn take(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor, Self::Error>;

    /// A seed for the next dropout layer's generator.
    fn seed(&mut self) -> u64;
}

/// Fresh parameters from one seeded generator, drawn in the order they are
/// asked for (so a model built twice from one seed is the same model).
#[derive(Debug, Clone)]
pub struct RandomInit {
    /// The generator.
    pub rng: Rng,
    /// The dtype of every parameter (f32 or f64).
    pub dtype: DType,
}

impl RandomInit {
    /// A source drawing from `Rng::new(seed)` in `dtype`.
    pub fn new(seed: u64, dtype: DType) -> RandomInit {
        RandomInit {
            rng: Rng::new(seed),
            dtype,
        }
    }
}

impl ParamSource for RandomInit {
    type Error = NnError;

    fn take(&mut self, _name: &str, shape: &[usize], init: Init) -> Result<Tensor, NnError> {
        Ok(match init {
            Init::Normal(std) => Tensor::randn(shape, 0.0, std, self.dtype, &mut self.rng)?,
            Init::Zeros => Tensor::zeros(shape, self.dtype),
            Init::Ones => Tensor::ones(shape, self.dtype),
        })
    }

    fn seed(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

/// A [`ParamSource`] seen under a name prefix: `vb.pp("attn")` hands out
/// `attn.*` parameters, so each module writes its own names once and never
/// its parents'.
///
/// `E` is the source's error type ([`NnError`] for [`RandomInit`]).
pub struct VarBuilder<'a, E = NnError> {
    src: &'a mut dyn ParamSource<Error = E>,
    prefix: String,
}

impl<'a, E: From<NnError>> VarBuilder<'a, E> {
    /// A builder at the root of `src` (no prefix).
    pub fn new(src: &'a mut dyn ParamSource<Error = E>) -> VarBuilder<'a, E> {
        VarBuilder {
            src,
            prefix: String::new(),
        }
    }

    /// The builder for the sub-module `name`: every name it hands out is
    /// `"{prefix}.{name}.…"`. Like candle's `vb.pp(name)`.
    pub fn pp(&mut self, name: &str) -> VarBuilder<'_, E> {
        VarBuilder {
            prefix: join(&self.prefix, name),
            src: &mut *self.src,
        }
    }

    /// The prefix names are handed out under (empty at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The trainable parameter `"{prefix}.{name}"` of `shape`.
    ///
    /// # Errors
    /// Whatever the source reports for a missing or mis-shaped tensor.
    pub fn get(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var, E> {
        let full = join(&self.prefix, name);
        Ok(Var::parameter(self.src.take(&full, shape, init)?))
    }

    /// A dropout layer with probability `p`, seeded by the source.
    ///
    /// # Errors
    /// [`NnError::Config`] unless `0 ≤ p < 1`.
    pub fn dropout(&mut self, p: f64) -> Result<Dropout, E> {
        Ok(Dropout::new(p, self.src.seed())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the names asked for, to check the prefixes.
    struct Names(Vec<String>);

    impl ParamSource for Names {
        type Error = NnError;
        fn take(&mut self, name: &str, shape: &[usize], _: Init) -> Result<Tensor, NnError> {
            self.0.push(name.to_string());
            Ok(Tensor::zeros(shape, DType::F32))
        }
        fn seed(&mut self) -> u64 {
            0
        }
    }

    #[test]
    fn prefixes_nest_and_do_not_leak_to_siblings() {
        let mut src = Names(Vec::new());
        let mut vb = VarBuilder::new(&mut src);
        vb.get("wte.weight", &[2, 2], Init::Zeros).unwrap();
        {
            let mut h = vb.pp("h.0");
            h.pp("ln_1").get("weight", &[2], Init::Ones).unwrap();
            let mut attn = h.pp("attn");
            assert_eq!(attn.prefix(), "h.0.attn");
            attn.pp("c_attn").get("bias", &[6], Init::Zeros).unwrap();
        }
        vb.pp("ln_f").get("bias", &[2], Init::Zeros).unwrap();
        assert_eq!(
            src.0,
            [
                "wte.weight",
                "h.0.ln_1.weight",
                "h.0.attn.c_attn.bias",
                "ln_f.bias"
            ]
        );
    }

    #[test]
    fn random_init_draws_in_order_and_is_reproducible() {
        let draw = |seed| {
            let mut src = RandomInit::new(seed, DType::F32);
            let mut vb = VarBuilder::new(&mut src);
            let a = vb.get("a", &[3], Init::Normal(1.0)).unwrap().value();
            let b = vb.get("b", &[3], Init::Normal(1.0)).unwrap().value();
            (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap())
        };
        let (a, b) = draw(7);
        assert_eq!((a.clone(), b.clone()), draw(7));
        assert_ne!(a, b, "the second parameter continues the stream");
        let ones = RandomInit::new(0, DType::F64)
            .take("w", &[2], Init::Ones)
            .unwrap();
        assert_eq!(ones.to_vec::<f64>().unwrap(), vec![1.0, 1.0]);
    }
}
