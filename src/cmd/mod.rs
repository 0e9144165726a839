//! The subcommands of the `kiln` program, one file each, and the helpers
//! they share.

pub mod eval;
pub mod generate;
pub mod merge_lora;
pub mod plot_loss;
pub mod tokenize;
pub mod train;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_models::gpt2::{load_model_dir_with, Gpt2, ADAPTER_CONFIG};
use kiln_models::hub::{Hub, RepoId, RepoType};
use kiln_models::tokenizer::{Tokenizer, TokenizerError};

/// Reads a whole file as UTF-8 text, with errors that name the file.
pub fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not valid UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Prints `[1,2,3]` and a newline on stdout. A closed pipe (`| head`) is not
/// an error.
pub fn print_json_array(ids: &[u32]) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(ids.len() * 6 + 3);
    line.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        write!(line, "{id}").expect("writing to a String cannot fail");
    }
    line.push_str("]\n");
    let mut out = std::io::stdout().lock();
    match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

/// `--dtype` of `generate` and `eval`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats (the default).
    F32,
    /// bfloat16 weight matrices, f32 activations.
    Bf16,
}

impl From<DtypeArg> for kiln_tensor::DType {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::F32 => kiln_tensor::DType::F32,
            DtypeArg::Bf16 => kiln_tensor::DType::BF16,
        }
    }
}

/// How to read a model's weights: mapped (the default: loading is nearly
/// free) or, with `--no-mmap`, copied into memory, so that the file being
/// overwritten in place cannot end the process with `SIGBUS`.
pub fn load_options(no_mmap: bool) -> kiln_nn::state_dict::LoadOptions {
    kiln_nn::state_dict::LoadOptions {
        copy: no_mmap,
        ..Default::default()
    }
}

/// The folder of `--model`: the directory itself when it exists, else a hub
/// id (`gpt2`, `org/name`, `org/name@revision`) resolved through the
/// Hugging Face cache, downloading what is missing unless `HF_HUB_OFFLINE`
/// is set ([`kiln_models::hub`]).
pub fn resolve_model(spec: &Path, progress: bool) -> Result<PathBuf> {
    if spec.exists() {
        return Ok(spec.to_path_buf());
    }
    match spec.to_str().map(|s| RepoId::parse(s, RepoType::Model)) {
        Some(Ok(id)) => {
            let mut hub = Hub::from_env();
            hub.progress = progress;
            Ok(hub.model_dir(&id)?)
        }
        // Not an id either: loading names the missing directory.
        _ => Ok(spec.to_path_buf()),
    }
}

/// The tokenizer for a model directory: its own `tokenizer.json`, else
/// `vocab.json` + `merges.txt` (or `encoder.json` + `vocab.bpe`), else the
/// built-in GPT-2 one. A tokenizer file that cannot be used is an error,
/// never a reason to fall back to GPT-2's.
pub fn tokenizer_for(dir: &Path) -> Result<Tokenizer> {
    match Tokenizer::from_dir(dir) {
        Err(TokenizerError::NotFound { .. }) => Ok(Tokenizer::gpt2()),
        other => Ok(other?),
    }
}

/// The model options `generate` and `eval` share.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Hugging Face GPT-2 directory (config.json + model.safetensors), or
    /// a hub id (gpt2, org/name, org/name@revision) looked up in the
    /// Hugging Face cache and downloaded into it if missing.
    #[arg(long, value_name = "DIR|ID")]
    pub model: PathBuf,
    /// Dtype of the weight matrices: f32, or bf16 (half the memory; a
    /// bf16 checkpoint is used as stored, an f32 one rounded).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Read the weights into memory instead of mapping the file (slower to
    /// load; safe if the file may be overwritten in place meanwhile).
    #[arg(long)]
    pub no_mmap: bool,
    /// With bf16 weights, keep no packed copy of the matrices that long
    /// inputs reuse (eval's windows): those forwards are slower, and the
    /// process holds one copy of the matrices less.
    #[arg(long)]
    pub no_prepack: bool,
}

impl ModelArgs {
    /// The model and its tokenizer, as [`load_for_inference`] reads them.
    pub fn load(&self) -> Result<(Gpt2, Tokenizer)> {
        kiln_nn::set_weight_prepacking(!self.no_prepack);
        load_for_inference(&self.model, self.no_mmap, self.dtype.into())
    }
}

/// The model of `--model` for inference, and its tokenizer: a model folder
/// or hub id ([`resolve_model`]), or a PEFT LoRA adapter folder (a LoRA
/// run's `final/`), whose base (`base_model_name_or_path`) is loaded and
/// the adapter merged into it, as `AutoPeftModelForCausalLM` would. The
/// tokenizer is the folder's own, else the base's, else GPT-2's.
pub fn load_for_inference(
    spec: &Path,
    no_mmap: bool,
    dtype: kiln_tensor::DType,
) -> Result<(Gpt2, Tokenizer)> {
    let dir = resolve_model(spec, true)?;
    if !dir.join(ADAPTER_CONFIG).is_file() {
        let model = load_model_dir_with(&dir, load_options(no_mmap), dtype)?;
        return Ok((model, tokenizer_for(&dir)?));
    }
    let (base, mut model) = load_adapter_base(&dir)?;
    model.load_adapter(&dir, false)?;
    model.merge_lora()?;
    let model = if dtype == kiln_tensor::DType::F32 {
        model
    } else {
        model.to_dtype(dtype)?
    };
    let tokenizer = match Tokenizer::from_dir(&dir) {
        Err(TokenizerError::NotFound { .. }) => tokenizer_for(&base)?,
        other => other?,
    };
    Ok((model, tokenizer))
}

/// The base model an adapter folder names, loaded in f32 (copied, as it
/// will be changed): (its folder, the model).
pub fn load_adapter_base(adapter: &Path) -> Result<(PathBuf, Gpt2)> {
    let cfg = kiln_models::gpt2::LoraConfig::from_peft_file(&adapter.join(ADAPTER_CONFIG))?;
    let base = cfg.base_model.with_context(|| {
        format!(
            "{} names no base_model_name_or_path; merge it with `kiln merge-lora --model BASE --adapter {}`",
            adapter.join(ADAPTER_CONFIG).display(),
            adapter.display()
        )
    })?;
    let base = resolve_model(Path::new(&base), true)?;
    let model = load_model_dir_with(&base, load_options(true), kiln_tensor::DType::F32)?;
    Ok((base, model))
}
