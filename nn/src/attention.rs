//! Causal multi-head self-attention (GPT-2's `attn`), with an optional
//! key/value cache for incremental decoding ([`KvCache`], `kv_cache.rs`) and
//! an optional padding mask.
//!
//! Letters: B batch, T new positions, P cached (past) positions, C width,
//! NH heads, HS = C/NH head size.

use kiln_autograd::Var;
use kiln_tensor::{DType, Tensor};

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
        // A bf16 model (bf16 weights: transformers' `model.to(bfloat16)`)
        // multiplies queries, keys, weights and values on bf16 operands too,
        // as the peer's bf16 attention does; accumulation stays f32, and so
        // do the scores and the softmax. A decode step (one query row) stays
        // f32: its products are too small for packing them to pay.
        let bf16 = self.c_attn.weight.value().dtype() == DType::BF16 && t > 1;
        let mm = |a: &Var, b: &Var| -> Result<Var> {
            Ok(if bf16 {
                kiln_autograd::autocast_bf16(|| a.matmul(b))?
            } else {
                a.matmul(b)?
            })
        };
        let divisor = (hs as f64).sqrt();
        let dropout_off = !self.attn_dropout.is_training() || self.attn_dropout.p == 0.0;
        if bf16 && key_padding.is_none() && !kiln_autograd::records(&[&q, &k, &v]) && dropout_off {
            let y = causal_blocks(&q, &k, &v, past, divisor, mm)?; // (B, NH, T, HS)
            let y = y.transpose(1, 2)?.reshape(&[b, t, c])?;
            return self.resid_dropout.forward(&self.c_proj.forward(&y)?);
        }
        let scores = mm(&q, &k.t()?)?; // (B, NH, T, P+T)
        let att = match key_padding {
            // Query i (absolute position P+i) may not see keys j > P+i:
            // one fused pass (scale, causal mask, softmax).
            None => scores.causal_softmax(divisor, past)?,
            Some(pad) => {
                let mask = hidden_keys(pad, b, t, past)?; // (B, 1, T, P+T)
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
        let y = mm(&att, &v)?; // (B, NH, T, HS)
        let y = y.transpose(1, 2)?.reshape(&[b, t, c])?; // (B, T, C)
        self.resid_dropout.forward(&self.c_proj.forward(&y)?)
    }
}

/// Queries per block of [`causal_blocks`].
const QUERY_BLOCK: usize = 256;

/// `softmax(q·kᵀ / divisor, causal) · v` with the queries in blocks of
/// [`QUERY_BLOCK`], each against only the keys it may see: block `r0..r1`
/// (absolute positions `P + r0..P + r1`) takes keys and values `0..P + r1`.
/// This skips most of the masked upper triangle of both products and of
/// the softmax — a quarter of their work at T = 512, three eighths at
/// T = 1024 — where the full product computes it and the mask then zeroes
/// it. (Blocks of 256 measured faster than 128 or 64 on a 512-token
/// prefill: the smaller products lose more to their fixed costs.) The
/// sums are the same ones in the same order (the skipped terms are the
/// mask's zeros), so on the AMX kernel the bits are those of the full
/// product; other kernels may round a last bit differently where K blocks
/// split the sum elsewhere.
///
/// `q`: `(B, NH, T, HS)`; `k`, `v`: `(B, NH, P + T, HS)`.
fn causal_blocks(
    q: &Var,
    k: &Var,
    v: &Var,
    past: usize,
    divisor: f64,
    mm: impl Fn(&Var, &Var) -> Result<Var>,
) -> Result<Var> {
    let t = q.shape()[2];
    let mut ys = Vec::with_capacity(t.div_ceil(QUERY_BLOCK));
    for r0 in (0..t).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(t - r0);
        let keys = past + r0 + rows;
        let scores = mm(&q.narrow(2, r0, rows)?, &k.narrow(2, 0, keys)?.t()?)?;
        let att = scores.causal_softmax(divisor, past + r0)?;
        ys.push(mm(&att, &v.narrow(2, 0, keys)?)?);
    }
    Ok(Var::cat(&ys.iter().collect::<Vec<_>>(), 2)?)
}

/// The attention mask: which keys each query must not see, as a bool
/// `(B, 1, T, P+T)` tensor, true where hidden. Query `i` sits at absolute
/// position `P + i` (after `past` cached positions) and may not see a key
/// `j > P + i` (the future; `Tensor::triu_mask(T, P+T, P+1)`), nor a key
/// that `key_padding` (`[B, P+T]`, true at padding) marks.
///
/// Without padding the causal part alone is applied inside the fused
/// [`kiln_autograd::Var::causal_softmax`], which builds no mask at all.
///
/// # Errors
/// [`NnError::Config`] if `key_padding` is not `[B, P+T]`.
fn hidden_keys(key_padding: &Tensor, b: usize, t: usize, past: usize) -> Result<Tensor> {
    let total = past + t;
    if key_padding.shape() != [b, total] {
        return Err(NnError::Config {
            module: "CausalSelfAttention".into(),
            msg: format!(
                "key padding mask must be [{b}, {total}], got {:?}",
                key_padding.shape()
            ),
        });
    }
    let future = Tensor::triu_mask(t, total, past as i64 + 1); // (T, P+T)
    let pad = key_padding.reshape(&[b, 1, 1, total])?;
    Ok(Tensor::where_(
        &pad,
        &Tensor::full(&[], 1.0, DType::Bool),
        &future.reshape(&[1, 1, t, total])?,
    )?)
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

#[cfg(test)]
mod tests {
    use kiln_autograd::no_grad;
    use kiln_tensor::Rng;

    use super::*;

    /// A bf16 attention layer of width 64, 4 heads, no dropout.
    fn bf16_attention(rng: &mut Rng) -> CausalSelfAttention {
        let conv = |i: usize, o: usize, rng: &mut Rng| {
            let mut c = Conv1D::new(i, o, 0.2, DType::F32, rng).unwrap();
            c.weight = Var::parameter(c.weight.value().to_dtype(DType::BF16));
            c
        };
        CausalSelfAttention {
            c_attn: conv(64, 192, rng),
            c_proj: conv(64, 64, rng),
            n_head: 4,
            attn_dropout: Dropout::new(0.0, 0).unwrap(),
            resid_dropout: Dropout::new(0.0, 0).unwrap(),
        }
    }

    fn assert_same(what: &str, got: &Tensor, want: &Tensor) {
        let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        if kiln_tensor::kernels::isa::Isa::detect().has_amx() {
            assert!(g == w, "{what}: the blocked attention changed the bits");
        }
        let worst = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{what}: relative difference {worst:e}");
    }

    /// A bf16 prefill that records nothing runs the queries in blocks
    /// against only the keys they may see; it gives what the full product
    /// and mask give (the bits, on AMX), with and without cached keys and
    /// for a ragged last block.
    #[test]
    fn blocked_causal_attention_equals_the_full_product() {
        let mut rng = Rng::new(5);
        let attn = bf16_attention(&mut rng);
        let x = Tensor::randn(
            &[2, 2 * QUERY_BLOCK + 44, 64],
            0.0,
            1.0,
            DType::F32,
            &mut rng,
        )
        .unwrap();
        let t = x.shape()[1];
        // Recording gradients (the weights are parameters): the full path.
        let full = attn.forward(&Var::constant(x.clone())).unwrap().value();
        let blocked = no_grad(|| attn.forward(&Var::constant(x.clone())))
            .unwrap()
            .value();
        assert_same("no cache", &blocked, &full);
        // The same positions in two calls, the second after 100 cached.
        let (first, rest) = (
            x.narrow(1, 0, 100).unwrap(),
            x.narrow(1, 100, t - 100).unwrap(),
        );
        let run = |record: bool| {
            let mut cache = KvCache::default();
            let mut step = |x: &Tensor| {
                let x = Var::constant(x.clone());
                let mut f = || attn.forward_with(&x, Some(&mut cache), None);
                if record { f() } else { no_grad(f) }.unwrap().value()
            };
            step(&first);
            step(&rest)
        };
        assert_same("after 100 cached", &run(false), &run(true));
        assert_same(
            "cached vs one call",
            &run(false),
            &full.narrow(1, 100, t - 100).unwrap().contiguous(),
        );
    }
}
