//! LoRA on GPT-2 in PEFT's format: which layers get an adapter
//! ([`LoraConfig`], PEFT's `LoraConfig` fields and defaults for GPT-2), and
//! the adapter folder PEFT's `save_pretrained` writes and
//! `PeftModel.from_pretrained` reads — `adapter_config.json` and
//! `adapter_model.safetensors` with keys
//! `base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight`, ….

use std::path::Path;

use kiln_autograd::Var;
use kiln_nn::state_dict::StateDict;
use kiln_nn::{Conv1D, Lora, Module};
use kiln_tensor::{DType, Rng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::model::Gpt2;
use crate::{ModelError, Result};

/// The adapter's configuration file, as PEFT names it.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights, as PEFT names them.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The key prefix PEFT gives a causal-LM adapter's tensors.
pub const PEFT_PREFIX: &str = "base_model.model.transformer.";

/// Which layers get a LoRA adapter, and its shape: PEFT's `LoraConfig`
/// fields (`r`, `lora_alpha`, `lora_dropout`, `target_modules`) with PEFT's
/// defaults for GPT-2 (`r = 8`, `lora_alpha = 8`, no dropout, `c_attn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// Scale numerator: the update is multiplied by `alpha / r`.
    pub alpha: f64,
    /// Dropout on each adapter's input.
    pub dropout: f64,
    /// The base model's name or folder, recorded as PEFT's
    /// `base_model_name_or_path`.
    #[serde(default)]
    pub base_model: Option<String>,
    /// Layer names an adapter goes on: a name matches a layer whose full
    /// name equals it or ends with `.` + it, as in PEFT (`c_attn`,
    /// `c_proj` — both the attention's and the MLP's —, `attn.c_proj`,
    /// `c_fc`).
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            base_model: None,
            target_modules: vec!["c_attn".into()],
        }
    }
}

impl LoraConfig {
    fn targets(&self, layer: &str) -> bool {
        self.target_modules
            .iter()
            .any(|t| layer == t || layer.ends_with(&format!(".{t}")))
    }

    /// `adapter_config.json` as PEFT writes it for this adapter.
    pub fn to_peft_json(&self) -> serde_json::Value {
        json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": self.base_model,
            "bias": "none",
            "fan_in_fan_out": true,
            "inference_mode": true,
            "init_lora_weights": true,
            "layer_replication": null,
            "layers_pattern": null,
            "layers_to_transform": null,
            // PEFT's field is an int; keep whole values integers.
            "lora_alpha": if self.alpha.fract() == 0.0 && self.alpha.abs() < 1e15 {
                json!(self.alpha as i64)
            } else {
                json!(self.alpha)
            },
            "lora_bias": false,
            "lora_dropout": self.dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": self.r,
            "rank_pattern": {},
            "revision": null,
            "target_modules": self.target_modules,
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": false,
        })
    }

    /// Reads `adapter_config.json`; a PEFT variant Kiln does not compute
    /// (DoRA, rsLoRA, per-layer ranks, trained biases, a regex target) is
    /// an error naming the field, never silently ignored.
    ///
    /// # Errors
    /// [`ModelError::Io`] / [`ModelError::Config`] naming the file.
    pub fn from_peft_file(path: &Path) -> Result<LoraConfig> {
        let text = std::fs::read(path).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let bad = |msg: String| ModelError::Config {
            path: path.to_path_buf(),
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        if v["peft_type"] != "LORA" {
            return Err(bad(format!(
                "peft_type is {}, only LORA adapters are supported",
                v["peft_type"]
            )));
        }
        for (key, fine) in [
            ("use_dora", v["use_dora"].as_bool() != Some(true)),
            ("use_rslora", v["use_rslora"].as_bool() != Some(true)),
            ("bias", v["bias"].is_null() || v["bias"] == "none"),
            (
                "rank_pattern",
                v["rank_pattern"].as_object().is_none_or(|m| m.is_empty()),
            ),
            (
                "alpha_pattern",
                v["alpha_pattern"].as_object().is_none_or(|m| m.is_empty()),
            ),
            ("modules_to_save", v["modules_to_save"].is_null()),
        ] {
            if !fine {
                return Err(bad(format!(
                    "{key} = {} is not supported (Kiln computes plain LoRA on GPT-2's Conv1D layers)",
                    v[key]
                )));
            }
        }
        let r = v["r"]
            .as_u64()
            .filter(|&r| r > 0)
            .ok_or_else(|| bad(format!("r must be a positive integer, got {}", v["r"])))?;
        let alpha = v["lora_alpha"].as_f64().ok_or_else(|| {
            bad(format!(
                "lora_alpha must be a number, got {}",
                v["lora_alpha"]
            ))
        })?;
        let target_modules = match &v["target_modules"] {
            serde_json::Value::Array(a) => a
                .iter()
                .map(|t| t.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("target_modules must be a list of names".into()))?,
            other => {
                return Err(bad(format!(
                    "target_modules must be a list of names (a regular expression is not supported), got {other}"
                )))
            }
        };
        Ok(LoraConfig {
            r: r as usize,
            alpha,
            dropout: v["lora_dropout"].as_f64().unwrap_or(0.0),
            base_model: v["base_model_name_or_path"].as_str().map(String::from),
            target_modules,
        })
    }
}

/// Whether a parameter name belongs to a LoRA adapter.
pub fn is_lora_param(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

impl Gpt2 {
    /// GPT-2's Conv1D layers by their Hugging Face names
    /// (`h.{i}.attn.c_attn`, `h.{i}.attn.c_proj`, `h.{i}.mlp.c_fc`,
    /// `h.{i}.mlp.c_proj`).
    fn conv1ds_mut(&mut self) -> Vec<(String, &mut Conv1D)> {
        let mut out = Vec::new();
        for (i, b) in self.h.iter_mut().enumerate() {
            out.push((format!("h.{i}.attn.c_attn"), &mut b.attn.c_attn));
            out.push((format!("h.{i}.attn.c_proj"), &mut b.attn.c_proj));
            out.push((format!("h.{i}.mlp.c_fc"), &mut b.mlp.c_fc));
            out.push((format!("h.{i}.mlp.c_proj"), &mut b.mlp.c_proj));
        }
        out
    }

    /// PEFT's `get_peft_model(model, LoraConfig(...))`: freezes every
    /// weight of the model and puts a fresh adapter (`A` uniform, `B`
    /// zero, [`kiln_nn::Lora::new`]) on each targeted layer; returns the
    /// number of adapted layers. Only the adapters then require grad, so an
    /// optimizer over the trainable parameters trains just them.
    ///
    /// # Errors
    /// [`ModelError::Config`] when no layer matches `target_modules` (as
    /// PEFT refuses) or the rank or dropout is invalid.
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<usize> {
        let mut rng = Rng::new(seed);
        self.attach(
            cfg,
            |_, conv, rng| {
                Ok(Lora::new(
                    conv.in_features(),
                    conv.out_features(),
                    cfg.r,
                    cfg.alpha,
                    cfg.dropout,
                    DType::F32,
                    rng,
                )?)
            },
            &mut rng,
        )
    }

    fn attach(
        &mut self,
        cfg: &LoraConfig,
        mut make: impl FnMut(&str, &Conv1D, &mut Rng) -> Result<Lora>,
        rng: &mut Rng,
    ) -> Result<usize> {
        for (_, p) in self.named_parameters() {
            p.set_requires_grad(false)?;
        }
        let training = self.drop.is_training();
        let mut n = 0;
        for (name, conv) in self.conv1ds_mut() {
            if cfg.targets(&name) {
                let mut lora = make(&name, conv, rng)?;
                lora.dropout.set_training(training);
                conv.lora = Some(lora);
                n += 1;
            }
        }
        if n == 0 {
            return Err(ModelError::Config {
                path: ADAPTER_CONFIG.into(),
                msg: format!(
                    "target_modules {:?} match no layer of GPT-2 (its layers: c_attn, c_proj, c_fc; or e.g. attn.c_proj)",
                    cfg.target_modules
                ),
            });
        }
        self.lora = Some(cfg.clone());
        Ok(n)
    }

    /// Writes the adapters as PEFT's `save_pretrained` does:
    /// `adapter_config.json` (with [`LoraConfig::base_model`] as
    /// `base_model_name_or_path`) and `adapter_model.safetensors`.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the model has no adapter; I/O errors
    /// naming the file.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        let Some(cfg) = &self.lora else {
            return Err(ModelError::Input(
                "the model has no LoRA adapter to save".into(),
            ));
        };
        std::fs::create_dir_all(dir).map_err(|error| ModelError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        let mut dict = StateDict::new();
        for (name, p) in self.named_parameters() {
            if is_lora_param(&name) {
                dict.insert(format!("{PEFT_PREFIX}{name}"), p.value());
            }
        }
        dict.metadata_mut().insert("format".into(), "pt".into());
        dict.save(dir.join(ADAPTER_WEIGHTS))
            .map_err(kiln_nn::NnError::from)?;
        let text = serde_json::to_string_pretty(&cfg.to_peft_json()).expect("JSON serialises");
        super::write_atomic(&dir.join(ADAPTER_CONFIG), text.as_bytes())
    }

    /// Loads a PEFT adapter folder onto this (base) model, as
    /// `PeftModel.from_pretrained(model, dir)`: reads its config, freezes
    /// the base weights and attaches the saved `A`/`B` to each targeted
    /// layer. `trainable` leaves the adapters requiring grad (PEFT's
    /// `is_trainable=True`).
    ///
    /// # Errors
    /// [`ModelError::Config`] for an unsupported config;
    /// [`ModelError::Weights`] naming the file and tensor for a missing or
    /// mis-shaped one, or a tensor that belongs to no adapted layer.
    pub fn load_adapter(&mut self, dir: &Path, trainable: bool) -> Result<LoraConfig> {
        let cfg = LoraConfig::from_peft_file(&dir.join(ADAPTER_CONFIG))?;
        let file = dir.join(ADAPTER_WEIGHTS);
        let dict = StateDict::load(&file).map_err(kiln_nn::NnError::from)?;
        let weight_err = |tensor: String, msg: String| ModelError::Weights {
            file: file.clone(),
            tensor,
            msg,
        };
        let mut rng = Rng::new(0);
        self.attach(
            &cfg,
            |name, conv, rng| {
                let get = |which: &str, shape: [usize; 2]| {
                    let key = format!("{PEFT_PREFIX}{name}.{which}.weight");
                    let t = dict
                        .get(&key)
                        .ok_or_else(|| weight_err(key.clone(), "missing".into()))?;
                    if t.shape() != shape {
                        return Err(weight_err(
                            key,
                            format!("shape {:?}, expected {shape:?}", t.shape()),
                        ));
                    }
                    Ok(t.to_dtype(DType::F32).contiguous())
                };
                let a = get("lora_A", [cfg.r, conv.in_features()])?;
                let b = get("lora_B", [conv.out_features(), cfg.r])?;
                Ok(Lora::from_weights(
                    a,
                    b,
                    cfg.alpha,
                    cfg.dropout,
                    rng.next_u64(),
                )?)
            },
            &mut rng,
        )?;
        let adapted: std::collections::BTreeSet<String> = self
            .named_parameters()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| is_lora_param(n))
            .collect();
        if let Some(extra) = dict
            .keys()
            .find(|k| !adapted.contains(k.strip_prefix(PEFT_PREFIX).unwrap_or(k)))
        {
            return Err(weight_err(
                extra.to_string(),
                "belongs to no layer the config targets".into(),
            ));
        }
        for (name, p) in self.named_parameters() {
            if is_lora_param(&name) {
                p.set_requires_grad(trainable)?;
            }
        }
        Ok(cfg)
    }

    /// Folds every adapter into its layer's weight (`W += (α/r)·AᵀBᵀ`,
    /// PEFT's `merge_and_unload`) and removes it, so the model is a plain
    /// GPT-2 again that `save_model_dir` writes in full. The weights stay
    /// frozen; call `set_requires_grad` to train them.
    ///
    /// # Errors
    /// Tensor errors (not expected for a valid adapter).
    pub fn merge_lora(&mut self) -> Result<()> {
        for (_, conv) in self.conv1ds_mut() {
            if let Some(l) = conv.lora.take() {
                let w = conv.weight.value().add(&l.merged_delta()?)?;
                let frozen = Var::parameter(w);
                frozen.set_requires_grad(false)?;
                conv.weight = frozen;
            }
        }
        self.lora = None;
        Ok(())
    }
}
