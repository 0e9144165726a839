//! `kiln merge-lora`: fold a PEFT LoRA adapter into its base model and write
//! a plain GPT-2 folder (PEFT's `merge_and_unload()` + `save_pretrained`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kiln_models::gpt2::{load_model_dir_with, save_model_dir};

use super::{load_options, resolve_model, tokenizer_for};

/// Arguments of `kiln merge-lora`.
#[derive(Args)]
pub struct MergeLoraArgs {
    /// The base model: a folder or a hub id.
    #[arg(long, value_name = "DIR|ID")]
    pub model: PathBuf,
    /// The adapter folder (`adapter_config.json`,
    /// `adapter_model.safetensors`), as PEFT or `kiln train --lora-r`
    /// writes it.
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Where the merged model goes (config.json, model.safetensors, the
    /// tokenizer files).
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
}

/// Runs `kiln merge-lora`.
pub fn run(args: &MergeLoraArgs) -> Result<()> {
    let base = resolve_model(&args.model, true)?;
    let mut model = load_model_dir_with(&base, load_options(true), kiln_tensor::DType::F32)?;
    let cfg = model.load_adapter(&args.adapter, false)?;
    model.merge_lora()?;
    save_model_dir(&model, &args.output_dir)?;
    // The adapter run's tokenizer when it saved one, else the base's.
    let tokenizer = match kiln_models::tokenizer::Tokenizer::from_dir(&args.adapter) {
        Ok(t) => t,
        Err(_) => tokenizer_for(&base)?,
    };
    tokenizer.save_pretrained(&args.output_dir, model.config.n_positions)?;
    eprintln!(
        "merged a rank-{} adapter on {} into {}",
        cfg.r,
        cfg.target_modules.join(", "),
        args.output_dir.display()
    );
    Ok(())
}
