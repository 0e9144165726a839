//! `kiln generate`: continue a prompt with a GPT-2 model directory.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_models::gpt2::{generate, GenerationConfig, TokenSampling};

use super::print_json_array;

/// Arguments of `kiln generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// --model, --dtype, --no-mmap.
    #[command(flatten)]
    pub load: super::ModelArgs,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 50)]
    pub max_new_tokens: usize,
    /// Always pick the most likely token (the default when no sampling
    /// option is given, as in transformers).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    pub greedy: bool,
    /// Sample with this temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sample among the k most likely tokens (0: no top-k filtering, as in
    /// transformers).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample from the smallest set of tokens with probability ≥ p.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Penalise tokens already present (> 1 penalises, 1 disables; must be
    /// positive).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Stop once the generated text contains this string (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the generated ids (prompt excluded) as one JSON array instead
    /// of streaming text.
    #[arg(long)]
    pub ids: bool,
}

/// Runs `kiln generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let (model, tokenizer) = args.load.load()?;
    let mut prompt = tokenizer.encode(&args.prompt);
    if prompt.is_empty() {
        // GPT-2 conditions on <|endoftext|> when there is no text.
        prompt.push(model.config.bos_token_id);
    }
    if prompt.len() > model.config.n_positions {
        bail!(
            "the prompt is {} tokens long but the model's context is {} positions",
            prompt.len(),
            model.config.n_positions
        );
    }
    if prompt.len() + args.max_new_tokens > model.config.n_positions {
        bail!(
            "the prompt ({} tokens) plus --max-new-tokens {} exceeds the model's context of {} positions; ask for at most {} new tokens",
            prompt.len(),
            args.max_new_tokens,
            model.config.n_positions,
            model.config.n_positions - prompt.len()
        );
    }
    let sampling = if args.temperature.is_some() || args.top_k.is_some() || args.top_p.is_some() {
        TokenSampling::Sample {
            temperature: args.temperature.unwrap_or(1.0),
            top_k: args.top_k,
            top_p: args.top_p,
        }
    } else {
        TokenSampling::Greedy
    };
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        eos_token_id: Some(model.config.eos_token_id),
        stop_strings: args.stop.clone(),
    };
    let mut decoder = tokenizer.stream_decoder();
    let mut out = std::io::stdout().lock();
    let stream = !args.ids;
    let mut write_err = None;
    let generated = generate(&model, &[prompt], &cfg, Some(&tokenizer), &mut |_, id| {
        if stream && write_err.is_none() {
            let piece = decoder.push(id).map(str::to_string).unwrap_or_default();
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
                write_err = Some(e);
            }
        }
    })?;
    match write_err {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("cannot write to stdout")
        }
        _ => {}
    }
    if stream {
        let tail = decoder.finish().to_string();
        let _ = writeln!(out, "{tail}");
        Ok(())
    } else {
        drop(out);
        print_json_array(&generated[0]).context("cannot write to stdout")
    }
}
