//! `GPT2Config`: the hyper-parameters of a GPT-2 model, read from a Hugging
//! Face `config.json` or taken from a built-in preset.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// GPT-2 hyper-parameters, with Hugging Face's field names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size V (50257 for GPT-2).
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Context length: the most positions the model can attend over.
    #[serde(default = "default_positions")]
    pub n_positions: usize,
    /// Width C of the residual stream.
    #[serde(default = "default_embd")]
    pub n_embd: usize,
    /// Number of transformer blocks.
    #[serde(default = "default_layer")]
    pub n_layer: usize,
    /// Attention heads per block (C must divide by it).
    #[serde(default = "default_head")]
    pub n_head: usize,
    /// Hidden width of the MLP; `null` means 4·C.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Activation; only GPT-2's `gelu_new` (tanh approximation) is supported.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Dropout on the residual branches.
    #[serde(default = "default_pdrop")]
    pub resid_pdrop: f64,
    /// Dropout on the embeddings.
    #[serde(default = "default_pdrop")]
    pub embd_pdrop: f64,
    /// Dropout on the attention probabilities.
    #[serde(default = "default_pdrop")]
    pub attn_pdrop: f64,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Id of `<|endoftext|>` used as beginning of text.
    #[serde(default = "default_eot")]
    pub bos_token_id: u32,
    /// Id of `<|endoftext|>` used as end of text.
    #[serde(default = "default_eot")]
    pub eos_token_id: u32,
    /// Whether the LM head shares the token embedding (GPT-2: always).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Model family tag written into `config.json`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Divide attention scores by √HS (GPT-2: true; false is unsupported).
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Also divide scores by the layer index (unsupported; must be false).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Upcast attention to f32 in a different order (unsupported; must be false).
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
}

fn default_vocab() -> usize {
    50257
}
fn default_positions() -> usize {
    1024
}
fn default_embd() -> usize {
    768
}
fn default_layer() -> usize {
    12
}
fn default_head() -> usize {
    12
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_pdrop() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-5
}
fn default_eot() -> u32 {
    50256
}
fn default_true() -> bool {
    true
}
fn default_model_type() -> String {
    "gpt2".into()
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Gpt2Config::gpt2()
    }
}

impl Gpt2Config {
    fn sized(n_layer: usize, n_head: usize, n_embd: usize) -> Gpt2Config {
        Gpt2Config {
            vocab_size: default_vocab(),
            n_positions: default_positions(),
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            activation_function: default_activation(),
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            layer_norm_epsilon: 1e-5,
            bos_token_id: 50256,
            eos_token_id: 50256,
            tie_word_embeddings: true,
            model_type: default_model_type(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
        }
    }

    /// GPT-2 small: 12 layers, 12 heads, width 768 (124 M parameters).
    pub fn gpt2() -> Gpt2Config {
        Self::sized(12, 12, 768)
    }

    /// GPT-2 medium: 24 layers, 16 heads, width 1024 (355 M).
    pub fn gpt2_medium() -> Gpt2Config {
        Self::sized(24, 16, 1024)
    }

    /// GPT-2 large: 36 layers, 20 heads, width 1280 (774 M).
    pub fn gpt2_large() -> Gpt2Config {
        Self::sized(36, 20, 1280)
    }

    /// GPT-2 XL: 48 layers, 25 heads, width 1600 (1.5 B).
    pub fn gpt2_xl() -> Gpt2Config {
        Self::sized(48, 25, 1600)
    }

    /// nanoGPT's CPU "baby GPT": 4 layers, 4 heads, width 128, context 64,
    /// with the full GPT-2 vocabulary and no dropout.
    pub fn baby() -> Gpt2Config {
        let mut c = Self::sized(4, 4, 128);
        c.n_positions = 64;
        c.set_dropout(0.0);
        c
    }

    /// A tiny model for tests: 2 layers, 2 heads, width 32, context 64.
    pub fn tiny() -> Gpt2Config {
        let mut c = Self::sized(2, 2, 32);
        c.n_positions = 64;
        c
    }

    /// The preset called `name`: `gpt2`, `gpt2-medium`, `gpt2-large`,
    /// `gpt2-xl`, `baby`, `tiny`.
    ///
    /// # Errors
    /// [`ModelError::Config`] listing the presets for an unknown name.
    pub fn preset(name: &str) -> Result<Gpt2Config> {
        Ok(match name {
            "gpt2" => Self::gpt2(),
            "gpt2-medium" => Self::gpt2_medium(),
            "gpt2-large" => Self::gpt2_large(),
            "gpt2-xl" => Self::gpt2_xl(),
            "baby" => Self::baby(),
            "tiny" => Self::tiny(),
            other => return Err(ModelError::Config {
                path: other.into(),
                msg: "unknown preset; choose gpt2, gpt2-medium, gpt2-large, gpt2-xl, baby or tiny"
                    .into(),
            }),
        })
    }

    /// Sets all three dropout probabilities.
    pub fn set_dropout(&mut self, p: f64) {
        self.resid_pdrop = p;
        self.embd_pdrop = p;
        self.attn_pdrop = p;
    }

    /// The MLP's hidden width (`n_inner`, default 4·C).
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Head size C / NH.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// Reads and validates a Hugging Face `config.json`.
    ///
    /// # Errors
    /// [`ModelError::Io`] if unreadable, [`ModelError::Config`] naming the
    /// file if malformed or inconsistent.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Gpt2Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let cfg: Gpt2Config = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            msg: format!("malformed config: {e}"),
        })?;
        cfg.validate().map_err(|msg| ModelError::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    /// Checks the sizes fit together.
    ///
    /// # Errors
    /// A description of the first problem found.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.n_layer == 0
            || self.n_head == 0
            || self.n_embd == 0
            || self.vocab_size == 0
            || self.n_positions == 0
        {
            return Err(format!(
                "n_layer ({}), n_head ({}), n_embd ({}), vocab_size ({}) and n_positions ({}) must all be positive",
                self.n_layer, self.n_head, self.n_embd, self.vocab_size, self.n_positions
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(format!(
                "activation_function {:?} is not supported (GPT-2 uses gelu_new)",
                self.activation_function
            ));
        }
        if !self.scale_attn_weights
            || self.scale_attn_by_inverse_layer_idx
            || self.reorder_and_upcast_attn
        {
            return Err("only GPT-2's standard attention is supported: scale_attn_weights = true, scale_attn_by_inverse_layer_idx = false, reorder_and_upcast_attn = false".into());
        }
        if self.n_inner == Some(0) {
            return Err("n_inner must be positive (or null for 4·n_embd)".into());
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon.is_finite()) {
            return Err(format!(
                "layer_norm_epsilon must be a positive finite number, got {}",
                self.layer_norm_epsilon
            ));
        }
        // A count that overflows, or needs more than 2^48 elements, is no
        // model this machine (or any) can hold.
        match crate::memory::gpt2_parameters(self) {
            Some(n) if n < 1 << 48 => {}
            _ => {
                return Err(format!(
                    "the sizes (vocab_size {}, n_positions {}, n_embd {}, n_layer {}, n_inner {:?}) give an impossibly large model",
                    self.vocab_size, self.n_positions, self.n_embd, self.n_layer, self.n_inner
                ))
            }
        }
        for (name, p) in [
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        Ok(())
    }

    /// The config as Hugging Face `config.json` text (with the
    /// `architectures` entry `from_pretrained` looks for).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serialises");
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "architectures".into(),
                serde_json::json!(["GPT2LMHeadModel"]),
            );
            o.insert("n_ctx".into(), serde_json::json!(self.n_positions));
        }
        serde_json::to_string_pretty(&v).expect("json value serialises")
    }
}
