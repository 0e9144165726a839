//! Causal multi-head self-attention (GPT-2's `attn`), with an optional
//! key/value cache for incremental decoding ([`KvCache`], `kv_cache.rs`) and
//! an optional padding mask.
//!
//! Letters: B batch, T new positions, P cached (past) positions, C width,
//! NH heads, HS = C/NH head size.

use kiln_autograd::Var;
use kiln_tensor::{DType, Rng, Tensor};

use crate::dropout::Dropout;
use crate::kv_cache::KvCache;
use crate::linear::Conv1D;
use crate::module::{join, Forward, Module};
use crate::{NnError, Result};

/// GPT-2 attention: `c_attn` projects to q, k, v; scores `q·kᵀ/√HS` are
/// masked so position `i` sees only positions `≤ i`; softmax; weighted sum
/// of v; `c_proj` projects back.
#[derive(Debug, Clone)]
pub struct CausalSelfAttention {
    /// `[C, 3C]` projection to queries, keys and values (Conv1D layout).
    pub c_attn: Conv1D,
    /// `[C, C]` output projection.
    pub c_proj: Conv1D,
    /// Number of heads.
    pub n_head: usize,
    /// Dropout on the attention probabilities.
    pub attn_dropout: Dropout,
    /// Dropout on the output.
    pub resid_dropout: Dropout,
}

impl CausalSelfAttention {
    /// GPT-2 initialisation (`c_proj` with the residual scaling).
    ///
    /// # Errors
    /// [`NnError::Config`] if `n_embd` is not divisible by `n_head`.
    pub fn new(
        n_embd: usize,
        n_head: usize,
        n_layer: usize,
        dropout: f64,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Self> {
        if n_head == 0 || !n_embd.is_multiple_of(n_head) {
            return Err(NnError::Config {
                module: "CausalSelfAttention".into(),
                msg: format!("n_embd {n_embd} is not divisible by n_head {n_head}"),
            });
        }
        Ok(CausalSelfAttention {
            c_attn: Conv1D::new(n_embd, 3 * n_embd, crate::init::GPT2_INIT_STD, dtype, rng)?,
            c_proj: Conv1D::new(
                n_embd,
                n_embd,
                crate::init::gpt2_residual_std(n_layer),
                dtype,
                rng,
            )?,
            n_head,
            attn_dropout: Dropout::new(dropout, rng.next_u64())?,
            resid_dropout: Dropout::new(dropout, rng.next_u64())?,
        })
    }

    /// Attention over `x: [B, T, C]` → `[B, T, C]`.
    ///
    /// With a `cache`, the new keys/values are appended to it and the `T`
    /// new queries attend over all `P + T` positions (query `i` sits at
    /// absolute position `P + i`). `key_padding` is an optional bool mask
    /// `[B, P + T]`, true for positions to ignore (left padding of a batch
    /// of prompts with different lengths).
    ///
    /// Masked scores are set to the dtype's most negative finite value, as
    /// transformers does, so a row with every key masked yields a uniform
    /// distribution rather than NaN.
    ///
    /// # Errors
    /// [`NnError::Config`] if `x` is not `[B, T, C]` with `C` the layer's
    /// width or the mask does not fit; op errors otherwise.
    pub fn forward_with(
        &self,
        x: &Var,
        cache: Option<&mut KvCache>,
        key_padding: Option<&Tensor>,
    ) -> Result<Var> {
        let shape = x.shape();
        let c = self.c_attn.in_features();
        if shape.len() != 3 || shape[2] != c {
            return Err(NnError::Config {
                module: "CausalSelfAttention".into(),
                msg: format!("expected input [B, T, {c}], got {shape:?}"),
            });
        }
        let (b, t) = (shape[0], shape[1]);
        let (nh, hs) = (self.n_head, c / self.n_head);
        let qkv = self.c_attn.forward(x)?; // (B, T, 3C)
        let parts = qkv.split_sizes(&[c, c, c], 2)?;
        let heads = |v: &Var| -> Result<Var> { Ok(v.reshape(&[b, t, nh, hs])?.transpose(1, 2)?) }; // (B, NH, T, HS)
        let q = heads(&parts[0])?;
        let mut k = heads(&parts[1])?;
        let mut v = heads(&parts[2])?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        if let Some(cache) = cache {
            let (all_k, all_v) = cache.append(&k.value(), &v.value())?; // (B, NH, P+T, HS)
            if k.requires_grad() || v.requires_grad() {
                // Differentiating through a cached step: the new keys and
                // values stay on the tape, the cached ones are constants.
                if past > 0 {
                    let old =
                        |all: &Tensor| Var::constant(all.narrow(2, 0, past).expect("P ≤ P+T"));
                    k = Var::cat(&[&old(&all_k), &k], 2)?;
                    v = Var::cat(&[&old(&all_v), &v], 2)?;
                }
            } else {
                k = Var::constant(all_k);
                v = Var::constant(all_v);
            }
        }
        let total = past + t;
        let scores = q.matmul(&k.t()?)?; // (B, NH, T, P+T)
        let divisor = (hs as f64).sqrt();
        let att = match key_padding {
            // Query i (absolute position P+i) may not see keys j > P+i:
            // one fused pass (scale, causal mask, softmax).
            None => scores.causal_softmax(divisor, past)?,
            Some(pad) => {
                if pad.shape() != [b, total] {
                    return Err(NnError::Config {
                        module: "CausalSelfAttention".into(),
                        msg: format!(
                            "key padding mask must be [{b}, {total}], got {:?}",
                            pad.shape()
                        ),
                    });
                }
                let causal = Tensor::triu_mask(t, total, past as i64 + 1); // (T, P+T)
                let pad = pad.reshape(&[b, 1, 1, total])?;
                let mask = Tensor::where_(
                    &pad,
                    &Tensor::full(&[], 1.0, DType::Bool),
                    &causal.reshape(&[1, 1, t, total])?,
                )?; // (B, 1, T, P+T)
                let min = match x.dtype() {
                    DType::F64 => f64::MIN,
                    _ => f32::MIN as f64,
                };
                scores
                    .div_scalar(divisor)?
                    .masked_fill(&mask, min)?
                    .softmax(-1)?
            }
        };
        let att = self.attn_dropout.forward(&att)?;
        let y = att.matmul(&v)?; // (B, NH, T, HS)
        let y = y.transpose(1, 2)?.reshape(&[b, t, c])?; // (B, T, C)
        self.resid_dropout.forward(&self.c_proj.forward(&y)?)
    }
}

impl Module for CausalSelfAttention {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        self.c_attn.visit_params(&join(prefix, "c_attn"), f);
        self.c_proj.visit_params(&join(prefix, "c_proj"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.attn_dropout.set_training(training);
        self.resid_dropout.set_training(training);
        self.c_attn.set_training(training);
        self.c_proj.set_training(training);
    }
}

impl Forward for CausalSelfAttention {
    fn forward(&self, x: &Var) -> Result<Var> {
        self.forward_with(x, None, None)
    }
}
