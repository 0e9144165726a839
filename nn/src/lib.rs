//! kiln-nn: modules with named parameters, losses, optimizers, learning-rate
//! schedules and safetensors state dicts.
#![warn(missing_docs)]

mod error;
pub mod state_dict;

pub use error::{NnError, Result};
pub use state_dict::{LoadOptions, LoadReport, StateDict, StateDictError};
