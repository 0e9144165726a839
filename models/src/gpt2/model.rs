//! The GPT-2 network: embeddings, a stack of pre-LayerNorm transformer
//! blocks, a final LayerNorm and the LM head tied to the token embedding.
//!
//! Letters: B batch, T positions, C width, V vocabulary.
//!
//! ```text
//! ids (B, T) ─ wte ─┐
//! positions ── wpe ─┴─ + ─ drop ─ h.0 … h.{L−1} ─ ln_f ─ · wteᵀ ─ logits (B, T, V)
//! block:  x ← x + attn(ln_1(x));  x ← x + mlp(ln_2(x))
//! ```
//!
//! Parameter names are the Hugging Face `GPT2Model` keys (`wte.weight`,
//! `h.0.attn.c_attn.weight`, `ln_f.bias`, …), so a checkpoint maps one to one.

use kiln_autograd::{checkpoint, is_grad_enabled, Var};
use kiln_nn::{
    join, CausalSelfAttention, Conv1D, Dropout, Embedding, Forward, KvCache, LayerNorm, Mlp,
    Module, NnError, ParamSource, RandomInit, VarBuilder,
};
use kiln_tensor::{DType, Tensor};

use super::config::Gpt2Config;
use crate::{ModelError, Result};

/// One transformer block: pre-LN attention and MLP, each with a residual.
#[derive(Debug, Clone)]
pub struct Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Causal self-attention.
    pub attn: CausalSelfAttention,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// Feed-forward block.
    pub mlp: Mlp,
}

impl Block {
    /// Builds block `vb.prefix()` (`h.{i}`): its parameters in the order
    /// GPT-2 has always drawn them, then its three dropout generators.
    fn build<E: From<NnError>>(
        cfg: &Gpt2Config,
        mut vb: VarBuilder<'_, E>,
    ) -> std::result::Result<Block, E> {
        let (c, inner, eps) = (cfg.n_embd, cfg.inner(), cfg.layer_norm_epsilon);
        let std = kiln_nn::init::GPT2_INIT_STD;
        let resid_std = kiln_nn::init::gpt2_residual_std(cfg.n_layer);
        let ln_1 = LayerNorm::build(vb.pp("ln_1"), c, eps)?;
        let c_attn = Conv1D::build(vb.pp("attn.c_attn"), c, 3 * c, std)?;
        let attn_proj = Conv1D::build(vb.pp("attn.c_proj"), c, c, resid_std)?;
        let ln_2 = LayerNorm::build(vb.pp("ln_2"), c, eps)?;
        let c_fc = Conv1D::build(vb.pp("mlp.c_fc"), c, inner, std)?;
        let mlp_proj = Conv1D::build(vb.pp("mlp.c_proj"), inner, c, resid_std)?;
        Ok(Block {
            ln_1,
            attn: CausalSelfAttention {
                c_attn,
                c_proj: attn_proj,
                n_head: cfg.n_head,
                attn_dropout: vb.dropout(cfg.attn_pdrop)?,
                resid_dropout: vb.dropout(cfg.resid_pdrop)?,
            },
            ln_2,
            mlp: Mlp {
                c_fc,
                c_proj: mlp_proj,
                dropout: vb.dropout(cfg.resid_pdrop)?,
            },
        })
    }

    /// `x: (B, T, C) → (B, T, C)`, optionally extending `cache`.
    ///
    /// # Errors
    /// Shape errors from the sub-modules.
    pub fn forward_with(
        &self,
        x: &Var,
        cache: Option<&mut KvCache>,
        key_padding: Option<&Tensor>,
    ) -> Result<Var> {
        let a = self
            .attn
            .forward_with(&self.ln_1.forward(x)?, cache, key_padding)?;
        let x = x.add(&a)?;
        let m = self.mlp.forward(&self.ln_2.forward(&x)?)?;
        Ok(x.add(&m)?)
    }
}

impl Module for Block {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        self.ln_1.visit_params(&join(prefix, "ln_1"), f);
        self.attn.visit_params(&join(prefix, "attn"), f);
        self.ln_2.visit_params(&join(prefix, "ln_2"), f);
        self.mlp.visit_params(&join(prefix, "mlp"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.attn.set_training(training);
        self.mlp.set_training(training);
    }
}

/// GPT-2 with its language-modelling head (`GPT2LMHeadModel`).
#[derive(Debug, Clone)]
pub struct Gpt2 {
    /// The hyper-parameters.
    pub config: Gpt2Config,
    /// Token embedding `[V, C]`, also the LM head.
    pub wte: Embedding,
    /// Position embedding `[n_positions, C]`.
    pub wpe: Embedding,
    /// Dropout on the summed embeddings.
    pub drop: Dropout,
    /// The blocks.
    pub h: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// Recompute each block's internals during backward instead of keeping
    /// them ([`Gpt2::gradient_checkpointing_enable`]).
    pub gradient_checkpointing: bool,
    /// The LoRA adapters' configuration, when the model carries adapters
    /// ([`Gpt2::add_lora`], [`Gpt2::load_adapter`]).
    pub lora: Option<super::LoraConfig>,
}

/// Optional inputs of a forward pass.
#[derive(Debug, Default)]
pub struct ForwardOptions<'a> {
    /// One cache per layer; extended in place (incremental decoding).
    pub cache: Option<&'a mut Vec<KvCache>>,
    /// Explicit position ids `(B, T)` (i64); default `P + 0..T` where P is
    /// the cached length. Needed for left-padded batches.
    pub positions: Option<&'a Tensor>,
    /// Bool `(B, P + T)`, true at padding positions keys must ignore.
    pub key_padding: Option<&'a Tensor>,
}

impl Gpt2 {
    /// A freshly initialised model (GPT-2 initialisation, seeded), f32.
    ///
    /// # Errors
    /// [`ModelError::Config`] if the config is inconsistent;
    /// [`ModelError::Input`] with the estimate if its weights would not fit
    /// in the memory still available.
    pub fn new(config: Gpt2Config, seed: u64) -> Result<Gpt2> {
        config.validate().map_err(|msg| ModelError::Config {
            path: "config".into(),
            msg,
        })?;
        let params = crate::memory::gpt2_parameters(&config).unwrap_or(u128::MAX);
        crate::memory::ensure_fits(
            params.saturating_mul(4),
            &format!("a model of {params} parameters"),
            "choose smaller n_layer / n_embd / vocab_size",
        )?;
        Gpt2::build(config, &mut RandomInit::new(seed, DType::F32))
    }

    /// Builds the network taking each parameter, by its Hugging Face name
    /// and expected shape, from `src`: [`RandomInit`] for a fresh model, a
    /// checkpoint's tensors for a loaded one ([`super::load_model_dir`]).
    /// The names are asked for through a [`VarBuilder`], one module prefix
    /// at a time, like candle's `VarBuilder` and nanoGPT's `model.py`.
    ///
    /// # Errors
    /// [`ModelError::Config`] for an inconsistent config, or whatever `src`
    /// reports for a missing or mis-shaped tensor.
    pub fn build<E>(config: Gpt2Config, src: &mut dyn ParamSource<Error = E>) -> Result<Gpt2>
    where
        E: From<NnError>,
        ModelError: From<E>,
    {
        config.validate().map_err(|msg| ModelError::Config {
            path: "config".into(),
            msg,
        })?;
        Ok(Gpt2::build_from(config, VarBuilder::new(src))?)
    }

    /// The body of [`Gpt2::build`], in the source's error type.
    fn build_from<E: From<NnError>>(
        config: Gpt2Config,
        mut vb: VarBuilder<'_, E>,
    ) -> std::result::Result<Gpt2, E> {
        let (v, c) = (config.vocab_size, config.n_embd);
        let std = kiln_nn::init::GPT2_INIT_STD;
        let wte = Embedding::build(vb.pp("wte"), v, c, std)?;
        let wpe = Embedding::build(vb.pp("wpe"), config.n_positions, c, std)?;
        let drop = vb.dropout(config.embd_pdrop)?;
        let h = (0..config.n_layer)
            .map(|i| Block::build(&config, vb.pp(&format!("h.{i}"))))
            .collect::<std::result::Result<_, E>>()?;
        let ln_f = LayerNorm::build(vb.pp("ln_f"), c, config.layer_norm_epsilon)?;
        Ok(Gpt2 {
            config,
            wte,
            wpe,
            drop,
            h,
            ln_f,
            gradient_checkpointing: false,
            lora: None,
        })
    }

    /// Gradient checkpointing, as transformers'
    /// `model.gradient_checkpointing_enable()`: in a recorded forward pass
    /// (training, no KV cache) each block keeps only its input and is
    /// recomputed during backward ([`kiln_autograd::checkpoint`]), so the
    /// activations kept grow by one block input per layer instead of one
    /// block's internals per layer. Gradients are bit-identical, dropout
    /// included; backward costs one more forward pass.
    pub fn gradient_checkpointing_enable(&mut self) {
        self.gradient_checkpointing = true;
    }

    /// Turns gradient checkpointing off again.
    pub fn gradient_checkpointing_disable(&mut self) {
        self.gradient_checkpointing = false;
    }

    /// One empty cache per layer, for [`ForwardOptions::cache`].
    pub fn new_cache(&self) -> Vec<KvCache> {
        vec![KvCache::default(); self.config.n_layer]
    }

    fn check_ids(&self, ids: &Tensor, past: usize) -> Result<(usize, usize)> {
        if ids.rank() != 2 || ids.dtype() != DType::I64 {
            return Err(ModelError::Input(format!(
                "token ids must be an i64 tensor of shape [batch, time], got {:?} {}",
                ids.shape(),
                ids.dtype()
            )));
        }
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        if past + t > self.config.n_positions {
            return Err(ModelError::Input(format!(
                "sequence of {} tokens ({past} cached + {t} new) exceeds the model's context of {} positions",
                past + t,
                self.config.n_positions
            )));
        }
        let v = self.config.vocab_size as i64;
        if let Some(bad) = ids.to_vec::<i64>()?.into_iter().find(|&i| i < 0 || i >= v) {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the vocabulary 0..{v}"
            )));
        }
        Ok((b, t))
    }

    /// The final hidden states `(B, T, C)` (after `ln_f`) for ids `(B, T)`.
    ///
    /// # Errors
    /// [`ModelError::Input`] for ids out of range, a sequence longer than
    /// the context, or masks of the wrong shape.
    pub fn hidden_states(&self, ids: &Tensor, opts: ForwardOptions<'_>) -> Result<Var> {
        let ForwardOptions {
            mut cache,
            positions,
            key_padding,
        } = opts;
        if let Some(c) = cache.as_deref() {
            if c.len() != self.h.len() {
                return Err(ModelError::Input(format!(
                    "cache has {} layers, the model {}",
                    c.len(),
                    self.h.len()
                )));
            }
        }
        let past = cache
            .as_deref()
            .and_then(|c| c.first())
            .map_or(0, |c| c.len());
        let (b, t) = self.check_ids(ids, past)?;
        let pos = match positions {
            Some(p) => {
                if p.shape() != [b, t] {
                    return Err(ModelError::Input(format!(
                        "position ids must be [{b}, {t}], got {:?}",
                        p.shape()
                    )));
                }
                p.clone()
            }
            None => {
                Tensor::arange(past as f64, (past + t) as f64, 1.0, DType::I64)?.reshape(&[1, t])?
            }
        };
        let tok = self.wte.forward(ids)?; // (B, T, C)
        let pe = self.wpe.forward(&pos)?; // (B or 1, T, C)
        let mut x = self.drop.forward(&tok.add(&pe)?)?;
        let checkpointed = self.gradient_checkpointing && cache.is_none() && is_grad_enabled();
        for (i, block) in self.h.iter().enumerate() {
            x = if checkpointed {
                // The replay is cloned before the forward runs, so its
                // dropout generators draw the same masks again.
                let replay = block.clone();
                let pad = key_padding.cloned();
                checkpoint(
                    std::slice::from_ref(&x),
                    |xs| block.forward_with(&xs[0], None, key_padding),
                    move |xs| replay.forward_with(&xs[0], None, pad.as_ref()),
                )?
            } else {
                let layer_cache = cache.as_deref_mut().map(|c| &mut c[i]);
                block.forward_with(&x, layer_cache, key_padding)?
            };
        }
        Ok(self.ln_f.forward(&x)?)
    }

    /// Logits `(B, T, V)` for ids `(B, T)`: the hidden states times `wteᵀ`
    /// (the tied LM head, read through a transposed view — no copy). The ids
    /// are an i64 tensor or `u32` ids as the tokenizer gives them
    /// ([`super::TokenIds`]): `model.forward(&tokenizer.encode(text), …)`.
    ///
    /// # Errors
    /// As [`Gpt2::hidden_states`]; a batch of sequences of different lengths.
    pub fn forward(
        &self,
        ids: &(impl super::TokenIds + ?Sized),
        opts: ForwardOptions<'_>,
    ) -> Result<Var> {
        let ids = ids.to_tensor()?;
        let h = self.hidden_states(&ids, opts)?;
        Ok(h.matmul(&self.wte.weight.t()?)?)
    }

    /// Logits and the language-modelling loss, as transformers computes it
    /// with `labels`: logits at position `t` predict `labels[t + 1]`; the
    /// loss is the mean cross-entropy over positions whose label is not
    /// −100.
    ///
    /// # Errors
    /// As [`Gpt2::forward`], plus [`ModelError::Input`] if `labels` is not
    /// shaped like `ids`.
    pub fn forward_with_loss(&self, ids: &Tensor, labels: &Tensor) -> Result<(Var, Var)> {
        if labels.shape() != ids.shape() {
            return Err(ModelError::Input(format!(
                "labels {:?} must have the shape of the ids {:?}",
                labels.shape(),
                ids.shape()
            )));
        }
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        if t < 2 {
            return Err(ModelError::Input(
                "a loss needs at least 2 positions (one to predict)".into(),
            ));
        }
        let logits = self.forward(ids, ForwardOptions::default())?;
        // Shift the labels, not the logits: position t is scored against
        // labels[t + 1] and the last position against nothing (−100). Same
        // mean as transformers' shifted loss, without copying the
        // (B, T−1, V) logits.
        let l = labels.to_vec::<i64>()?;
        let mut targets = Vec::with_capacity(b * t);
        for row in l.chunks(t) {
            targets.extend_from_slice(&row[1..]);
            targets.push(kiln_nn::loss::IGNORE_INDEX);
        }
        let targets = Tensor::from_vec(targets, &[b, t])?;
        let loss = logits.cross_entropy(&targets, kiln_nn::loss::IGNORE_INDEX)?;
        Ok((logits, loss))
    }
}

impl Gpt2 {
    /// Sets every dropout probability (embedding, attention, residual) to
    /// `p`, in the config too.
    ///
    /// # Errors
    /// [`ModelError::Config`] unless `0 ≤ p < 1`.
    pub fn set_dropout(&mut self, p: f64) -> Result<()> {
        if !(0.0..1.0).contains(&p) {
            return Err(ModelError::Config {
                path: "dropout".into(),
                msg: format!("dropout must be in [0, 1), got {p}"),
            });
        }
        self.config.set_dropout(p);
        self.drop.p = p;
        for b in &mut self.h {
            b.attn.attn_dropout.p = p;
            b.attn.resid_dropout.p = p;
            b.mlp.dropout.p = p;
        }
        Ok(())
    }

    /// Every dropout layer, in a fixed order (embedding, then per block:
    /// attention probabilities, attention output, MLP output). The trainer
    /// reseeds them for every micro-batch, so a run's masks do not depend on
    /// how its steps were split across processes or resumes.
    pub fn dropouts(&self) -> Vec<&Dropout> {
        let mut out = vec![&self.drop];
        for b in &self.h {
            out.extend([&b.attn.attn_dropout, &b.attn.resid_dropout, &b.mlp.dropout]);
        }
        out
    }
}

impl Module for Gpt2 {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        self.wte.visit_params(&join(prefix, "wte"), f);
        self.wpe.visit_params(&join(prefix, "wpe"), f);
        for (i, block) in self.h.iter().enumerate() {
            block.visit_params(&join(prefix, &format!("h.{i}")), f);
        }
        self.ln_f.visit_params(&join(prefix, "ln_f"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.drop.set_training(training);
        for b in &mut self.h {
            b.set_training(training);
        }
    }
}
