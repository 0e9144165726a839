//! Text generation with a key/value cache: the prompt is run once
//! (*prefill*), then each new token is one forward pass over a single
//! position that attends to the cache (*decode*).
//!
//! Token choice follows transformers' `generate` order: repetition penalty,
//! then temperature, top-k and top-p, then a draw from the softmax (or
//! argmax when greedy). Prompts of different lengths are left-padded; a
//! padding mask hides the pads and position ids skip them, as transformers
//! does, so each row generates what it would alone.

use kiln_autograd::no_grad;
use kiln_nn::KvCache;
use kiln_tensor::{DType, Rng, Tensor};

use super::model::{ForwardOptions, Gpt2};
use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenSampling {
    /// Always the most likely token (ties: the lowest id).
    Greedy,
    /// A random draw from the (reshaped) distribution.
    Sample {
        /// Divides the logits; below 1 sharpens, above 1 flattens.
        temperature: f64,
        /// Keep only the `k` most likely tokens; `Some(0)` keeps all, as
        /// transformers' `top_k=0` does.
        top_k: Option<usize>,
        /// Keep the smallest set of most likely tokens whose probability
        /// reaches `p` (nucleus sampling).
        top_p: Option<f64>,
    },
}

/// Generation settings (transformers' `GenerationConfig` names).
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// Most tokens to add after the prompt.
    pub max_new_tokens: usize,
    /// Greedy or sampling.
    pub sampling: TokenSampling,
    /// Above 1, discourages tokens already present (CTRL's penalty:
    /// positive logits divided, negative multiplied). 1 disables it; it
    /// must be positive and finite.
    pub repetition_penalty: f64,
    /// Seed of the sampling generator.
    pub seed: u64,
    /// Stop a row when it produces this token (GPT-2: `<|endoftext|>`).
    pub eos_token_id: Option<u32>,
    /// Stop a row once its generated text contains one of these strings
    /// (the tokens that complete it are kept). Needs a tokenizer.
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 50,
            sampling: TokenSampling::Greedy,
            repetition_penalty: 1.0,
            seed: 0,
            eos_token_id: Some(50256),
            stop_strings: Vec::new(),
        }
    }
}

/// Applies penalty, temperature, top-k and top-p to one row of logits and
/// picks a token.
fn choose(logits: &mut [f32], seen: &[u32], cfg: &GenerationConfig, rng: &mut Rng) -> u32 {
    if cfg.repetition_penalty != 1.0 {
        let p = cfg.repetition_penalty as f32;
        let mut uniq: Vec<u32> = seen.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        for &id in &uniq {
            let l = &mut logits[id as usize];
            *l = if *l < 0.0 { *l * p } else { *l / p };
        }
    }
    let (temperature, top_k, top_p) = match cfg.sampling {
        TokenSampling::Greedy => {
            let mut best = 0;
            for (i, &v) in logits.iter().enumerate() {
                if v > logits[best] {
                    best = i;
                }
            }
            return best as u32;
        }
        TokenSampling::Sample {
            temperature,
            top_k,
            top_p,
        } => (temperature, top_k, top_p),
    };
    let t = temperature.max(1e-6) as f32;
    for l in logits.iter_mut() {
        *l /= t;
    }
    // Candidates sorted by logit, best first (stable: ties keep id order).
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    // transformers: top_k = 0 means no top-k filtering.
    if let Some(k) = top_k.filter(|&k| k > 0) {
        order.truncate(k);
    }
    let m = logits[order[0] as usize] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| (logits[i as usize] as f64 - m).exp())
        .collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    if let Some(p) = top_p {
        // Keep the smallest prefix whose mass reaches p (at least one).
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, q) in probs.iter().enumerate() {
            acc += q;
            if acc >= p {
                keep = i + 1;
                break;
            }
        }
        order.truncate(keep);
        probs.truncate(keep);
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= z);
    }
    let u = rng.uniform();
    let mut acc = 0.0;
    for (i, q) in probs.iter().enumerate() {
        acc += q;
        if u < acc {
            return order[i];
        }
    }
    *order.last().expect("at least one candidate")
}

/// Generates continuations of `prompts` (token ids, any lengths ≥ 1) and
/// returns the new ids of each (prompt excluded). `on_token(row, id)` is
/// called for every generated token as soon as it is chosen (streaming).
///
/// A row stops at `eos_token_id` (which is kept), at a stop string, after
/// `max_new_tokens`, or when the context (`n_positions`) is full.
///
/// # Errors
/// [`ModelError::Input`] for an empty prompt, a prompt longer than the
/// context, ids outside the vocabulary, stop strings without a tokenizer,
/// or a setting out of range (repetition penalty or temperature not
/// positive and finite, top-p outside (0, 1]).
pub fn generate(
    model: &Gpt2,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    tokenizer: Option<&Tokenizer>,
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>> {
    no_grad(|| generate_inner(model, prompts, cfg, tokenizer, on_token))
}

fn generate_inner(
    model: &Gpt2,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    tokenizer: Option<&Tokenizer>,
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>> {
    let ctx = model.config.n_positions;
    let p = cfg.repetition_penalty;
    if !(p > 0.0 && p.is_finite()) {
        return Err(ModelError::Input(format!(
            "repetition penalty must be a positive number (1 disables it), got {p}"
        )));
    }
    if let TokenSampling::Sample {
        temperature, top_p, ..
    } = cfg.sampling
    {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(ModelError::Input(format!(
                "temperature must be a positive number, got {temperature}"
            )));
        }
        if let Some(q) = top_p.filter(|q| !(*q > 0.0 && *q <= 1.0)) {
            return Err(ModelError::Input(format!(
                "top-p must be in (0, 1], got {q}"
            )));
        }
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(ModelError::Input(format!(
            "prompt {i} is empty; give at least one token (e.g. <|endoftext|>)"
        )));
    }
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    if longest > ctx {
        return Err(ModelError::Input(format!(
            "the prompt has {longest} tokens but the model's context is {ctx} positions"
        )));
    }
    if !cfg.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(ModelError::Input(
            "stop strings need a tokenizer to decode with".into(),
        ));
    }
    let b = prompts.len();
    let pad = cfg.eos_token_id.unwrap_or(0);
    // Left-pad to the longest prompt.
    let mut ids = Vec::with_capacity(b * longest);
    let mut padding = Vec::with_capacity(b * longest);
    let mut positions = Vec::with_capacity(b * longest);
    for p in prompts {
        let n_pad = longest - p.len();
        for j in 0..longest {
            let is_pad = j < n_pad;
            ids.push(if is_pad { pad } else { p[j - n_pad] } as i64);
            padding.push(is_pad);
            // transformers: cumsum(mask) − 1, with pads at 1
            positions.push(if is_pad { 1 } else { (j - n_pad) as i64 });
        }
    }
    let any_pad = padding.iter().any(|&p| p);
    let mut cache: Vec<KvCache> = model.new_cache();
    let mut rng = Rng::new(cfg.seed);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut next_pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
    let mut step_ids = Tensor::from_vec(ids, &[b, longest])?;
    let mut step_pos = Tensor::from_vec(positions, &[b, longest])?;
    let mut total = longest;
    let mut texts = vec![String::new(); b];
    let mut decoders: Vec<_> = (0..b)
        .map(|_| tokenizer.map(|t| t.stream_decoder()))
        .collect();
    for _ in 0..cfg.max_new_tokens {
        if total > ctx {
            break;
        }
        let pad_mask = if any_pad {
            Some(Tensor::from_vec(padding.clone(), &[b, total])?)
        } else {
            None
        };
        let h = model.hidden_states(
            &step_ids,
            ForwardOptions {
                cache: Some(&mut cache),
                positions: Some(&step_pos),
                key_padding: pad_mask.as_ref(),
            },
        )?; // (B, T, C)
            // Only the last position picks a token: the LM head (a third of a
            // long prefill's FLOPs) runs for it alone.
        let t = h.shape()[1];
        let last = h
            .narrow(1, t - 1, 1)?
            .matmul(&model.wte.weight.t()?)?
            .value()
            .to_dtype(DType::F32)
            .contiguous(); // (B, 1, V)
        let v = last.shape()[2];
        let rows = last.as_slice::<f32>()?;
        let mut next = Vec::with_capacity(b);
        for r in 0..b {
            if done[r] {
                next.push(pad as i64);
                continue;
            }
            let mut row = rows[r * v..(r + 1) * v].to_vec();
            let mut seen = prompts[r].clone();
            seen.extend(&out[r]);
            let id = choose(&mut row, &seen, cfg, &mut rng);
            out[r].push(id);
            on_token(r, id);
            if cfg.eos_token_id == Some(id) {
                done[r] = true;
            }
            if let Some(Some(dec)) = decoders.get_mut(r) {
                texts[r].push_str(dec.push(id)?);
                if cfg
                    .stop_strings
                    .iter()
                    .any(|s| texts[r].contains(s.as_str()))
                {
                    done[r] = true;
                }
            }
            next.push(id as i64);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        step_ids = Tensor::from_vec(next, &[b, 1])?;
        step_pos = Tensor::from_vec(next_pos.clone(), &[b, 1])?;
        for p in &mut next_pos {
            *p += 1;
        }
        // The new column is a real token for every row.
        let mut grown = Vec::with_capacity(b * (total + 1));
        for r in 0..b {
            grown.extend_from_slice(&padding[r * total..(r + 1) * total]);
            grown.push(false);
        }
        padding = grown;
        total += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_is_greedy() {
        let mut rng = Rng::new(0);
        let cfg = GenerationConfig {
            sampling: TokenSampling::Sample {
                temperature: 1.0,
                top_k: Some(1),
                top_p: None,
            },
            ..Default::default()
        };
        let mut logits = vec![0.1f32, 3.0, 2.9, -1.0];
        assert_eq!(choose(&mut logits, &[], &cfg, &mut rng), 1);
    }

    #[test]
    fn repetition_penalty_follows_ctrl() {
        let cfg = GenerationConfig {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut logits = vec![4.0f32, 3.0, -1.0];
        // token 0 seen: 4 → 2, so token 1 (3.0) wins greedy
        assert_eq!(choose(&mut logits, &[0], &cfg, &mut Rng::new(0)), 1);
        assert_eq!(logits[0], 2.0);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let cfg = GenerationConfig {
            sampling: TokenSampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.5),
            },
            ..Default::default()
        };
        // p ≈ [0.84, 0.11, 0.04, …]: the nucleus for 0.5 is token 0 alone.
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let mut logits = vec![5.0f32, 3.0, 2.0, 0.0];
            assert_eq!(choose(&mut logits, &[], &cfg, &mut rng), 0);
        }
    }
}
