//! GPT-2: config, network, Hugging Face weights, generation.

mod config;
mod generate;
mod lora;
mod model;
mod token_ids;
mod weights;

pub use config::Gpt2Config;
pub use generate::{generate, GenerationConfig, TokenSampling};
pub use kiln_nn::{Init, ParamSource, RandomInit};
pub use lora::{is_lora_param, LoraConfig, ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX};
pub use model::{Block, ForwardOptions, Gpt2};
pub use token_ids::TokenIds;
pub(crate) use weights::write_atomic;
pub use weights::{load_model_dir, load_model_dir_with, save_model_dir};
