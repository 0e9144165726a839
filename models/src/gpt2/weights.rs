//! Hugging Face model directories: `config.json` + `model.safetensors`, as
//! `save_pretrained` and the hub write them.
//!
//! Loading maps the safetensors file (kiln-nn state dicts) and builds the
//! network from it tensor by tensor. It accepts names with or without the
//! `transformer.` prefix, checks every shape against the config (naming the
//! tensor and both shapes — Conv1D weights are stored `[in, out]`), ignores
//! the non-parameter attention buffers (`attn.bias`, `attn.masked_bias`)
//! and the tied `lm_head.weight`, and converts f16/bf16 checkpoints to f32.

use std::path::{Path, PathBuf};

use kiln_nn::state_dict::{LoadOptions, StateDict};
use kiln_nn::Module;
use kiln_tensor::{DType, Tensor};

use super::config::Gpt2Config;
use super::model::Gpt2;
use crate::{ModelError, Result};
use kiln_nn::{Init, ParamSource};

/// Takes parameters out of a loaded state dict, checking shapes.
struct CheckpointSource {
    file: PathBuf,
    dict: StateDict,
    prefix: &'static str,
    seeds: u64,
    /// The dtype of the weight matrices (f32 or bf16); vectors are f32.
    dtype: DType,
}

impl CheckpointSource {
    fn err(&self, tensor: &str, msg: String) -> ModelError {
        ModelError::Weights {
            file: self.file.clone(),
            tensor: tensor.to_string(),
            msg,
        }
    }
}

impl ParamSource for CheckpointSource {
    type Error = ModelError;

    fn take(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Tensor> {
        let key = format!("{}{name}", self.prefix);
        let t = self.dict.remove(&key).ok_or_else(|| {
            self.err(
                &key,
                format!("missing from the checkpoint (expected shape {shape:?})"),
            )
        })?;
        if t.shape() != shape {
            let hint = if name.ends_with(".weight")
                && t.rank() == 2
                && t.shape().iter().rev().eq(shape.iter())
            {
                " (GPT-2 Conv1D weights are stored [in, out]; this one looks transposed)"
            } else {
                ""
            };
            return Err(self.err(
                &key,
                format!("expected {shape:?}, found {:?}{hint}", t.shape()),
            ));
        }
        if !matches!(t.dtype(), DType::F32 | DType::BF16 | DType::F16) {
            return Err(self.err(
                &key,
                format!("dtype {} cannot be used as a parameter", t.dtype()),
            ));
        }
        // Matrices in the requested dtype (read in place when the file
        // already has it); biases and layer norms always f32.
        let want = if t.rank() == 2 {
            self.dtype
        } else {
            DType::F32
        };
        Ok(if t.dtype() == want {
            t
        } else {
            t.to_dtype(want)
        })
    }

    fn seed(&mut self) -> u64 {
        self.seeds += 1;
        self.seeds
    }
}

/// Whether a checkpoint key is a non-parameter buffer that old GPT-2 files carry.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// Loads a GPT-2 model from a Hugging Face directory holding `config.json`
/// and `model.safetensors`. Like `from_pretrained`, the model is returned in
/// eval mode; call `train()` before fine-tuning.
///
/// # Errors
/// [`ModelError::Io`] for a missing directory or file,
/// [`ModelError::Config`] for a malformed config, [`ModelError::Weights`]
/// naming the file and tensor for a missing, extra or mis-shaped tensor, and
/// the state-dict error (naming the file) for a corrupt safetensors file.
pub fn load_model_dir(dir: impl AsRef<Path>) -> Result<Gpt2> {
    load_model_dir_with(dir, LoadOptions::default(), DType::F32)
}

/// [`load_model_dir`] with explicit options.
///
/// `options.copy` reads the weights into memory Kiln owns instead of
/// mapping the file, for files that may be truncated or rewritten in place
/// while the model is in use (a mapped file changed that way ends the
/// process with `SIGBUS`). `dtype` is the dtype of the weight matrices:
/// `F32` (what training needs), or `BF16` for bf16 inference at half the
/// memory — a bf16 checkpoint's matrices are then used as stored (mapped,
/// no copy), f32 and f16 ones are rounded to bf16
/// (`model.to(torch.bfloat16)`). Biases and layer norms are always f32,
/// and so are the activations: each matrix product rounds its operands to
/// bf16 and accumulates in f32 ([`kiln_tensor::Tensor::matmul_bf16`]).
/// `options.keep_dtype` and `options.cast_matrices` are ignored: `dtype`
/// decides, and each matrix is cast as it is read (the peak is the model in
/// `dtype`, not in the file's dtype).
///
/// # Errors
/// As [`load_model_dir`]; [`ModelError::Config`] for a `dtype` other than
/// f32 or bf16.
pub fn load_model_dir_with(
    dir: impl AsRef<Path>,
    options: LoadOptions,
    dtype: DType,
) -> Result<Gpt2> {
    // Matrices are cast while the file is read, one at a time, so a bf16
    // load of an f32 checkpoint never holds the f32 model.
    let options = LoadOptions {
        keep_dtype: true,
        cast_matrices: Some(dtype),
        ..options
    };
    let dir = dir.as_ref();
    if !matches!(dtype, DType::F32 | DType::BF16) {
        return Err(ModelError::Config {
            path: dir.to_path_buf(),
            msg: format!("models load as f32 or bf16, not {dtype}"),
        });
    }
    if !dir.is_dir() {
        return Err(ModelError::Io {
            path: dir.to_path_buf(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
        });
    }
    let config = Gpt2Config::from_file(dir.join("config.json"))?;
    if !config.tie_word_embeddings {
        return Err(ModelError::Config {
            path: dir.join("config.json"),
            msg: "tie_word_embeddings = false is not supported: GPT-2's LM head is the token embedding".into(),
        });
    }
    let file = dir.join("model.safetensors");
    if !file.is_file() {
        let hint = if dir.join("pytorch_model.bin").is_file() {
            " (only safetensors is supported; convert pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))"
        } else {
            ""
        };
        return Err(ModelError::Io {
            path: file,
            error: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("weights file not found{hint}"),
            ),
        });
    }
    let dict = StateDict::load_with(&file, options).map_err(kiln_nn::NnError::from)?;
    let prefix = if dict.contains_key("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let mut src = CheckpointSource {
        file: file.clone(),
        dict,
        prefix,
        seeds: 0,
        dtype,
    };
    let mut model = Gpt2::build(config, &mut src)?;
    // Like `from_pretrained`, a loaded model starts in eval mode (no dropout).
    model.eval();
    // What is left must be buffers or the tied head.
    let leftover: Vec<String> = src
        .dict
        .keys()
        .filter(|k| !is_buffer(k) && *k != "lm_head.weight")
        .map(str::to_string)
        .collect();
    if let Some(extra) = leftover.first() {
        return Err(ModelError::Weights {
            file,
            tensor: extra.clone(),
            msg: format!(
                "unexpected tensor in the checkpoint ({} unexpected in all); is this a GPT-2 model with this config?",
                leftover.len()
            ),
        });
    }
    if let Some(head) = src.dict.get("lm_head.weight") {
        let wte = model.wte.weight.value();
        if head.shape() != wte.shape() {
            return Err(ModelError::Weights {
                file,
                tensor: "lm_head.weight".into(),
                msg: format!(
                    "expected {:?} (tied to wte), found {:?}",
                    wte.shape(),
                    head.shape()
                ),
            });
        }
    }
    Ok(model)
}

impl Gpt2 {
    /// A copy whose weight matrices are in `dtype` (`model.to(dtype)` for
    /// the matrices; biases and layer norms stay f32): `BF16` halves the
    /// memory and runs every matrix product on the bf16 kernels, `F32`
    /// widens back exactly. See [`load_model_dir_with`].
    ///
    /// # Errors
    /// [`ModelError::Config`] for a `dtype` other than f32 or bf16.
    pub fn to_dtype(&self, dtype: DType) -> Result<Gpt2> {
        if !matches!(dtype, DType::F32 | DType::BF16) {
            return Err(ModelError::Config {
                path: "dtype".into(),
                msg: format!("models hold f32 or bf16 weights, not {dtype}"),
            });
        }
        let mut dict = StateDict::new();
        for (name, p) in self.named_parameters() {
            dict.insert(name, p.value());
        }
        let mut src = CheckpointSource {
            file: "model".into(),
            dict,
            prefix: "",
            seeds: 0,
            dtype,
        };
        let mut out = Gpt2::build(self.config.clone(), &mut src)?;
        // Same dropout generators and mode as the original.
        for (d, o) in out.dropouts().into_iter().zip(self.dropouts()) {
            d.set_rng_state(o.rng_state());
        }
        if !self.drop.is_training() {
            out.eval();
        } else {
            out.train();
        }
        Ok(out)
    }
}

/// Writes `model` as a Hugging Face directory that
/// `GPT2LMHeadModel.from_pretrained(dir)` loads unchanged: `config.json`,
/// `model.safetensors` with `transformer.`-prefixed names (the LM head is
/// tied, so it is not stored) and `generation_config.json` (the BOS and EOS
/// ids, as `model.save_pretrained` writes it for `pipeline` and
/// `generate`). Each file is written atomically.
///
/// # Errors
/// [`ModelError::Io`] naming the path if the directory cannot be created or
/// a file cannot be written.
pub fn save_model_dir(model: &Gpt2, dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|error| ModelError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let mut dict = StateDict::new();
    // LoRA adapters are not part of the model's own weights: they go to
    // their own files (`Gpt2::save_adapter`), or into the weights by
    // `Gpt2::merge_lora`.
    for (name, p) in model.named_parameters() {
        if !super::lora::is_lora_param(&name) {
            dict.insert(format!("transformer.{name}"), p.value());
        }
    }
    dict.metadata_mut().insert("format".into(), "pt".into());
    dict.save(dir.join("model.safetensors"))
        .map_err(kiln_nn::NnError::from)?;
    write_atomic(&dir.join("config.json"), model.config.to_json().as_bytes())?;
    let generation = serde_json::json!({
        "_from_model_config": true,
        "bos_token_id": model.config.bos_token_id,
        "eos_token_id": model.config.eos_token_id,
    });
    let text = serde_json::to_string_pretty(&generation).expect("JSON serialises") + "\n";
    write_atomic(&dir.join("generation_config.json"), text.as_bytes())
}

/// Writes a file via a temporary sibling and a rename, so readers never see
/// a half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    };
    // A name of this process's own, so two writers of the same file (two
    // runs tokenising into one cache) never share a temporary file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}-{n}.kiln-tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(())
    })();
    match written.and_then(|()| std::fs::rename(&tmp, path).map_err(io)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
