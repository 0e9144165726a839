//! GPT-2 against Hugging Face transformers on random-init models.
//!
//! Fixtures: `scripts/reference/gen_gpt2_fixtures.py` (torch 2.15,
//! transformers 5.24): two configs (one with 3 heads of size 16), a float16
//! copy, logits, losses and greedy continuations. Logits must match within
//! 1e-4 absolute, the loss within 1e-5 relative, greedy ids exactly, and
//! KV-cache decoding must equal a full forward at every step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_models::gpt2::{
    generate, load_model_dir, save_model_dir, ForwardOptions, GenerationConfig, Gpt2,
};
use kiln_models::ModelError;
use kiln_nn::Module;
use kiln_tensor::testing::{check_close, load_safetensors};
use kiln_tensor::{DType, Tensor};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/gpt2")
        .join(name)
}

fn reference() -> BTreeMap<String, Tensor> {
    load_safetensors(dir("reference.safetensors")).unwrap()
}

fn ids_of(t: &Tensor) -> Vec<u32> {
    t.to_vec::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

fn check_model(model_dir: &str, tag: &str) {
    let r = reference();
    let model = load_model_dir(dir(model_dir)).unwrap();
    let ids = &r[&format!("{tag}.ids")];
    let logits = model
        .forward(ids, ForwardOptions::default())
        .unwrap()
        .value();
    if let Err(e) = check_close(&logits, &r[&format!("{tag}.logits")], 0.0, 1e-4) {
        panic!("{model_dir} logits: {e}");
    }
    let (_, loss) = model
        .forward_with_loss(ids, &r[&format!("{tag}.labels")])
        .unwrap();
    let (l, e) = (
        loss.value().item::<f32>().unwrap() as f64,
        r[&format!("{tag}.loss")].item::<f32>().unwrap() as f64,
    );
    assert!(
        (l - e).abs() <= 1e-5 * e.abs(),
        "{model_dir} loss {l} vs transformers {e}"
    );
    // Greedy continuation, token for token.
    let prompt = ids_of(&r[&format!("{tag}.prompt")]);
    let cfg = GenerationConfig {
        max_new_tokens: 20,
        eos_token_id: Some(model.config.eos_token_id),
        ..Default::default()
    };
    let out = generate(&model, &[prompt], &cfg, None, &mut |_, _| {}).unwrap();
    assert_eq!(
        out[0],
        ids_of(&r[&format!("{tag}.greedy")]),
        "{model_dir} greedy ids"
    );
}

#[test]
fn tiny_a_matches_transformers() {
    check_model("tiny-a", "a");
}

#[test]
fn tiny_b_with_three_heads_matches_transformers() {
    check_model("tiny-b", "b");
}

#[test]
fn float16_checkpoint_loads_as_rounded_f32() {
    let full = load_model_dir(dir("tiny-a")).unwrap();
    let half = load_model_dir(dir("tiny-a-f16")).unwrap();
    for ((n, a), (_, b)) in full
        .named_parameters()
        .into_iter()
        .zip(half.named_parameters())
    {
        let rounded = a.value().to_dtype(DType::F16).to_dtype(DType::F32);
        assert_eq!(
            b.value().to_vec::<f32>().unwrap(),
            rounded.to_vec::<f32>().unwrap(),
            "{n}"
        );
        assert_eq!(b.dtype(), DType::F32);
    }
}

#[test]
fn batch_of_different_lengths_matches_transformers() {
    let r = reference();
    let model = load_model_dir(dir("tiny-a")).unwrap();
    let padded = r["a.batch_prompts"].to_vec::<i64>().unwrap();
    let mask = r["a.batch_mask"].to_vec::<i64>().unwrap();
    let prompts: Vec<Vec<u32>> = (0..2)
        .map(|row| {
            (0..7)
                .filter(|&j| mask[row * 7 + j] == 1)
                .map(|j| padded[row * 7 + j] as u32)
                .collect()
        })
        .collect();
    let cfg = GenerationConfig {
        max_new_tokens: 10,
        eos_token_id: Some(999),
        ..Default::default()
    };
    let out = generate(&model, &prompts, &cfg, None, &mut |_, _| {}).unwrap();
    let expected = r["a.batch_greedy"].to_vec::<i64>().unwrap();
    for row in 0..2 {
        let want: Vec<u32> = expected[row * 10..(row + 1) * 10]
            .iter()
            .map(|&i| i as u32)
            .collect();
        // transformers pads finished rows with eos; compare up to our stop.
        assert_eq!(out[row], want[..out[row].len()], "row {row}");
    }
}

#[test]
fn kv_cache_decoding_equals_full_forward_at_every_step() {
    let model = load_model_dir(dir("tiny-b")).unwrap();
    let mut seq: Vec<i64> = vec![3, 141, 59, 26, 5];
    let mut cache = model.new_cache();
    let mut step = Tensor::from_vec(seq.clone(), &[1, seq.len()]).unwrap();
    for _ in 0..12 {
        let cached = model
            .forward(
                &step,
                ForwardOptions {
                    cache: Some(&mut cache),
                    ..Default::default()
                },
            )
            .unwrap()
            .value();
        let t = cached.shape()[1];
        let last_cached = cached.narrow(1, t - 1, 1).unwrap();
        let full = model
            .forward(
                &Tensor::from_vec(seq.clone(), &[1, seq.len()]).unwrap(),
                ForwardOptions::default(),
            )
            .unwrap()
            .value();
        let last_full = full.narrow(1, seq.len() - 1, 1).unwrap();
        check_close(&last_cached, &last_full, 0.0, 1e-5).unwrap();
        let next = last_full
            .argmax(-1, false)
            .unwrap()
            .to_vec::<i64>()
            .unwrap()[0];
        seq.push(next);
        step = Tensor::from_vec(vec![next], &[1, 1]).unwrap();
    }
}

#[test]
fn saved_directory_round_trips() {
    let model = load_model_dir(dir("tiny-a")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    save_model_dir(&model, tmp.path()).unwrap();
    let again = load_model_dir(tmp.path()).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 2, 3, 4], &[1, 4]).unwrap();
    let a = model
        .forward(&ids, ForwardOptions::default())
        .unwrap()
        .value();
    let b = again
        .forward(&ids, ForwardOptions::default())
        .unwrap()
        .value();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    if std::env::var_os("KILN_WRITE_FIXTURES").is_some() {
        save_model_dir(&model, dir("kiln-saved")).unwrap();
    }
}

#[test]
fn bad_directories_give_clear_errors() {
    let e = load_model_dir("/nonexistent/model")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/model") && e.contains("not found"),
        "{e}"
    );

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), "{ not json").unwrap();
    let e = load_model_dir(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("malformed"), "{e}");

    // A checkpoint whose c_attn weight is stored transposed.
    let model = load_model_dir(dir("tiny-a")).unwrap();
    save_model_dir(&model, tmp.path()).unwrap();
    let mut sd =
        kiln_nn::state_dict::StateDict::load(tmp.path().join("model.safetensors")).unwrap();
    let w = sd
        .get("transformer.h.0.attn.c_attn.weight")
        .unwrap()
        .t()
        .unwrap()
        .contiguous();
    sd.insert("transformer.h.0.attn.c_attn.weight", w);
    sd.save(tmp.path().join("model.safetensors")).unwrap();
    let e = load_model_dir(tmp.path()).unwrap_err();
    assert!(matches!(e, ModelError::Weights { .. }));
    let e = e.to_string();
    assert!(
        e.contains("model.safetensors")
            && e.contains("h.0.attn.c_attn.weight")
            && e.contains("[32, 96]")
            && e.contains("[96, 32]"),
        "{e}"
    );

    let e = generate(
        &model,
        &[vec![1; 65]],
        &GenerationConfig::default(),
        None,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("65 tokens") && e.contains("64"), "{e}");
}

#[test]
fn fresh_model_has_gpt2_parameter_names_and_count() {
    let m = Gpt2::new(kiln_models::gpt2::Gpt2Config::tiny(), 0).unwrap();
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "wte.weight");
    assert!(names.contains(&"h.1.mlp.c_proj.weight".to_string()));
    assert_eq!(names.last().unwrap(), "ln_f.bias");
    // V·C + P·C + L·(12C² + 13C) + 2C, the GPT-2 formula
    let (v, p, c, l) = (50257, 64, 32, 2);
    assert_eq!(
        m.num_parameters(),
        v * c + p * c + l * (12 * c * c + 13 * c) + 2 * c
    );
}
