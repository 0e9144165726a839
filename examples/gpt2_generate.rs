//! Load a GPT-2 model directory (Hugging Face layout: `config.json` +
//! `model.safetensors`) and generate text with the key/value cache.
//!
//! Run:  cargo run --release --example gpt2_generate -- [MODEL_DIR] [PROMPT]
//!
//! The default MODEL_DIR is `fixtures/gpt2/tiny-a`: a randomly initialised
//! 2-layer GPT-2 (width 32, vocabulary 1000) saved by transformers
//! (`scripts/reference/gen_gpt2_fixtures.py`). Its text is noise, but its
//! greedy continuation must equal transformers' token for token, and this
//! example checks that first. Give it a real checkpoint — a directory
//! written by `GPT2LMHeadModel.from_pretrained("gpt2").save_pretrained(dir)`
//! — to read English.
//!
//! Book: docs/src/gpt2.md. Code: models/src/gpt2/{model,weights,generate}.rs.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use kiln::models::gpt2::{generate, load_model_dir, GenerationConfig, TokenSampling};
use kiln::models::tokenizer::Tokenizer;
use kiln::nn::Module;
use kiln::tensor::testing::load_safetensors;
use kiln::tensor::Tensor;

/// Token ids stored as an i64 tensor, as u32.
fn ids_of(t: &Tensor) -> anyhow::Result<Vec<u32>> {
    Ok(t.to_vec::<i64>()?.into_iter().map(|i| i as u32).collect())
}

fn main() -> anyhow::Result<()> {
    // Relative to where it runs (`cargo run --example` from the repository's
    // root): a tiny GPT-2 fixture; pass a model folder of your own.
    let fixture = PathBuf::from("fixtures/gpt2/tiny-a");
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or(fixture.clone());
    // Every token of this default prompt is below 1000, so it also fits the
    // tiny fixture's vocabulary.
    let prompt_text = args
        .next()
        .unwrap_or_else(|| " it was the time of the man who said".to_string());

    // Maps the safetensors file, checks every name and shape against the
    // config, and returns the model in eval mode (no dropout), as
    // transformers' from_pretrained does.
    let model = load_model_dir(&dir)?;
    let c = &model.config;
    let shown = &dir;
    println!(
        "{}: {} layers, {} heads, width {}, vocabulary {}, context {}, {} parameters",
        shown.display(),
        c.n_layer,
        c.n_head,
        c.n_embd,
        c.vocab_size,
        c.n_positions,
        model.num_parameters()
    );

    // 1. The fixture comes with transformers' own greedy continuation of a
    //    5-token prompt: ours must be identical.
    if dir == fixture {
        let reference = load_safetensors(fixture.join("../reference.safetensors"))
            .map_err(anyhow::Error::msg)?;
        let prompt = ids_of(&reference["a.prompt"])?;
        let expected = ids_of(&reference["a.greedy"])?;
        let cfg = GenerationConfig {
            max_new_tokens: expected.len(),
            sampling: TokenSampling::Greedy,
            eos_token_id: Some(c.eos_token_id),
            ..Default::default()
        };
        let ours = generate(
            &model,
            std::slice::from_ref(&prompt),
            &cfg,
            None,
            &mut |_, _| {},
        )?;
        println!("\ngreedy continuation of {prompt:?}");
        println!("  kiln         {:?}", ours[0]);
        println!("  transformers {expected:?}");
        anyhow::ensure!(ours[0] == expected, "kiln and transformers disagree");
    }

    // 2. Text in, text out: encode, sample with temperature / top-k / top-p,
    //    and print each token as soon as it is chosen. The stream decoder
    //    holds back tokens that end inside a multi-byte character. (The
    //    random fixture happily emits lone bytes such as 0xE2 that can never
    //    complete a character: those print as U+FFFD, �.)
    let has_files = |a: &str, b: &str| dir.join(a).is_file() && dir.join(b).is_file();
    let tokenizer =
        if has_files("vocab.json", "merges.txt") || has_files("encoder.json", "vocab.bpe") {
            Tokenizer::from_dir(&dir)?
        } else {
            Tokenizer::gpt2()
        };
    let prompt = tokenizer.encode(&prompt_text);
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= c.vocab_size) {
        anyhow::bail!(
            "the prompt has token {bad}, outside this model's vocabulary of {}; choose another prompt",
            c.vocab_size
        );
    }
    let cfg = GenerationConfig {
        max_new_tokens: 40,
        sampling: TokenSampling::Sample {
            temperature: 0.8,
            top_k: Some(40),
            top_p: Some(0.95),
        },
        seed: 0,
        eos_token_id: Some(c.eos_token_id),
        ..Default::default()
    };
    println!("\nsampled continuation (temperature 0.8, top-k 40, top-p 0.95, seed 0):");
    print!("{prompt_text}");
    let mut decoder = tokenizer.stream_decoder();
    let start = Instant::now();
    let out = generate(&model, &[prompt], &cfg, Some(&tokenizer), &mut |_, id| {
        print!("{}", decoder.push(id).unwrap_or_default());
        let _ = std::io::stdout().flush();
    })?;
    println!("{}", decoder.finish());
    let secs = start.elapsed().as_secs_f64();
    // The first forward pass runs the whole prompt (prefill); each later one
    // runs a single position against the cache (decode).
    println!(
        "{} new tokens in {secs:.3} s ({:.0} tokens/s, prefill included)",
        out[0].len(),
        out[0].len() as f64 / secs
    );
    Ok(())
}
