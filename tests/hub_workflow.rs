//! The seed workflow by hub names on the hub cache that
//! `scripts/reference/gen_hub_fixtures.py` builds in `fixtures/hub/cache`
//! (a model saved by transformers' `save_pretrained` with its own
//! tokenizer, and a dataset of parquet shards, laid out as huggingface_hub
//! writes them): `kiln train --model ORG/NAME --dataset ORG/DATA:CONFIG`,
//! then `kiln eval --split test --stride`, then `kiln generate` — offline
//! from a copy of that cache, and online from a loopback hub serving the
//! same files into an empty cache, which must end up laid out exactly as
//! the fixture. The trained `final/` folder is then loaded with its
//! tokenizer and compared with what `tokenizers` and transformers computed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{copy_tree, kiln, serve_with, COMMIT};
use kiln::models::gpt2::{load_model_dir, ForwardOptions};
use kiln::models::tokenizer::Tokenizer;
use kiln::tensor::testing::{check_close, load_safetensors};

const MODEL: &str = "kiln-test/tiny-gpt2";
const DATASET: &str = "kiln-test/tiny-text";
const CONFIG: &str = "tiny-raw";

fn hub_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hub")
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(hub_fixtures().join("cache-expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A snapshot's files, relative path → (bytes, blob name), read through
/// the cache's symlinks.
fn snapshot(cache: &Path, folder: &str) -> BTreeMap<String, (Vec<u8>, String)> {
    let repo = cache.join(folder);
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    let root = repo.join("snapshots").join(commit.trim());
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            assert!(meta.is_symlink(), "{} is not a link", path.display());
            let target = std::fs::read_link(&path).unwrap();
            assert!(
                target.is_relative() && target.starts_with(".."),
                "{target:?}"
            );
            let blob = target.file_name().unwrap().to_string_lossy().into_owned();
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, (std::fs::read(&path).unwrap(), blob));
        }
    }
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn train_eval_generate_by_hub_names_offline_and_from_loopback() {
    let fixture_cache = hub_fixtures().join("cache");
    let model_files = snapshot(&fixture_cache, "models--kiln-test--tiny-gpt2");
    let data_files = snapshot(&fixture_cache, "datasets--kiln-test--tiny-text");
    let exp = expected();
    let tmp = tempfile::tempdir().unwrap();
    let offline_cache = tmp.path().join("offline");
    copy_tree(&fixture_cache, &offline_cache);
    let online_cache = tmp.path().join("online");
    // The loopback hub names each blob as the real hub did in the fixture.
    let blobs: BTreeMap<String, String> = model_files
        .iter()
        .chain(&data_files)
        .map(|(name, (_, blob))| (name.clone(), blob.clone()))
        .collect();
    let bytes = |files: &BTreeMap<String, (Vec<u8>, String)>| {
        files
            .iter()
            .map(|(k, (b, _))| (k.clone(), b.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (endpoint, _) = serve_with(
        BTreeMap::from([
            (MODEL.to_string(), bytes(&model_files)),
            (format!("datasets/{DATASET}"), bytes(&data_files)),
        ]),
        Arc::new(move |name: &str, _: &[u8]| blobs[name].clone()),
    );
    let offline = [("HF_HUB_CACHE", p(&offline_cache)), ("HF_HUB_OFFLINE", "1")];
    let online = [
        ("HF_HUB_CACHE", p(&online_cache)),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    let dataset = format!("{DATASET}:{CONFIG}");
    let n_train = exp["tokens"]["train"].as_u64().unwrap();
    let n_test = exp["tokens"]["test"].as_u64().unwrap() as usize;
    let reference = load_safetensors(hub_fixtures().join("cache-expected.safetensors")).unwrap();
    let text = exp["text"].as_str().unwrap();
    for (name, env) in [("offline", &offline[..]), ("online", &online[..])] {
        let out = tmp.path().join(format!("run-{name}"));
        // The README's command, shortened to two steps; a learning rate of
        // 0 leaves the weights as transformers saved them, so final/ can be
        // compared with transformers' logits.
        let (ok, _, err) = kiln(
            &[
                "train",
                "--model",
                MODEL,
                "--dataset",
                &dataset,
                "--output-dir",
                p(&out),
                "--num-train-epochs",
                "1",
                "--per-device-train-batch-size",
                "2",
                "--save-steps",
                "10000",
                "--save-total-limit",
                "2",
                "--max-steps",
                "2",
                "--block-size",
                "32",
                "--learning-rate",
                "0",
                "--no-progress",
            ],
            env,
        );
        assert!(ok, "{name}: {err}");
        // Tokenised with the model's own tokenizer, row by row.
        assert!(
            err.contains(&format!("on {n_train} tokens")),
            "{name}: {err}"
        );
        assert!(err.contains("validation loss"), "{name}: {err}");
        let final_dir = out.join("final");
        let (ok, json, err) = kiln(
            &[
                "eval",
                "--model",
                p(&final_dir),
                "--dataset",
                &dataset,
                "--split",
                "test",
                "--block-size",
                "32",
                "--stride",
                "16",
                "--json",
            ],
            env,
        );
        assert!(ok, "{name}: {err}");
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        let windows = (n_test - 32).div_ceil(16) + 1;
        assert_eq!(v["tokens"].as_u64().unwrap() as usize, n_test - windows);
        let (ok, ids, err) = kiln(
            &[
                "generate",
                "--model",
                p(&final_dir),
                "--prompt",
                text,
                "--max-new-tokens",
                "3",
                "--ids",
            ],
            env,
        );
        assert!(ok && ids.starts_with('['), "{name}: {err}");

        // final/ with its tokenizer, against tokenizers and transformers.
        let tok = Tokenizer::from_dir(&final_dir).unwrap();
        let want_ids: Vec<u32> = reference["ids"]
            .contiguous()
            .as_slice::<i64>()
            .unwrap()
            .iter()
            .map(|&i| i as u32)
            .collect();
        assert_eq!(tok.encode(text), want_ids, "{name}");
        let model = load_model_dir(&final_dir).unwrap();
        let x = reference["ids"].reshape(&[1, want_ids.len()]).unwrap();
        let logits = model
            .forward(&x, ForwardOptions::default())
            .unwrap()
            .value();
        let want = reference["logits"]
            .reshape(&[1, want_ids.len(), model.config.vocab_size])
            .unwrap();
        check_close(&logits, &want, 0.0, 1e-4).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The download wrote huggingface_hub's layout: the same snapshot files,
    // linked to blobs of the same names, at the commit the hub reported.
    for (folder, files) in [
        ("models--kiln-test--tiny-gpt2", &model_files),
        ("datasets--kiln-test--tiny-text", &data_files),
    ] {
        let got = snapshot(&online_cache, folder);
        assert_eq!(
            std::fs::read_to_string(online_cache.join(folder).join("refs/main")).unwrap(),
            COMMIT
        );
        for (file, want) in files.iter() {
            // Kiln fetches only what it reads: the weights, the config, the
            // tokenizer and the shards of the splits used.
            let needed = ["config.json", "model.safetensors", "tokenizer.json"]
                .contains(&file.as_str())
                || file.ends_with(".parquet");
            match got.get(file) {
                Some(have) => assert_eq!(have, want, "{folder}/{file}"),
                None => assert!(!needed, "{folder}/{file} was not downloaded"),
            }
        }
    }
    // A split that does not exist names what the dataset has.
    let (ok, _, err) = kiln(
        &[
            "eval",
            "--model",
            MODEL,
            "--dataset",
            &format!("{DATASET}:other"),
            "--split",
            "test",
        ],
        &offline,
    );
    assert!(
        !ok && err.contains("other/test-*.parquet") && err.contains("tiny-raw/test-00000"),
        "{err}"
    );
}
