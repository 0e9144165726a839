//! kiln-nn: modules with named parameters, losses, optimizers, learning-rate
//! schedules and safetensors state dicts.
//!
//! Parameters are [`kiln_autograd::Var`] leaves named by dotted paths that
//! equal the PyTorch / Hugging Face checkpoint keys.
//!
//! ```
//! use kiln_autograd::Var;
//! use kiln_nn::{Forward, Linear, Module, optim::{AdamW, AdamConfig, Optimizer, ParamGroup}};
//! use kiln_tensor::{DType, Rng, Tensor};
//! let mut rng = Rng::new(0);
//! let layer = Linear::new(4, 2, true, DType::F32, &mut rng)?;
//! let mut opt = AdamW::new(vec![ParamGroup::new(layer.named_parameters(), 1e-3, 0.01)], AdamConfig::default());
//! let x = Var::constant(Tensor::ones(&[3, 4], DType::F32));
//! let loss = layer.forward(&x)?.powf(2.0)?.mean_all()?;
//! loss.backward()?;
//! opt.step()?;
//! opt.zero_grad();
//! assert_eq!(layer.num_parameters(), 10);
//! # Ok::<(), kiln_nn::NnError>(())
//! ```
#![warn(missing_docs)]

mod attention;
mod dropout;
mod embedding;
mod error;
pub mod init;
mod kv_cache;
mod layer_norm;
mod linear;
mod lora;
pub mod loss;
mod mlp;
mod module;
pub mod optim;
pub mod prepack;
pub mod state_dict;
mod var_builder;

pub use attention::CausalSelfAttention;
pub use dropout::{Dropout, Gelu, Relu, Tanh};
pub use embedding::{ids_tensor, Embedding};
pub use error::{NnError, Result};
pub use kv_cache::KvCache;
pub use layer_norm::LayerNorm;
pub use linear::{Conv1D, Linear};
pub use lora::Lora;
pub use mlp::{Mlp, Sequential};
pub use module::{join, Forward, Module};
pub use prepack::{
    prepacked_bytes, set_weight_prepacking, weight_prepacking, PREPACK_MAX_ROWS, PREPACK_MIN_ROWS,
};
pub use state_dict::{LoadOptions, LoadReport, StateDict, StateDictError};
pub use var_builder::{Init, ParamSource, RandomInit, VarBuilder};
