//! Dataset rows and strided perplexity against transformers' own code.
//!
//! Fixtures from `scripts/reference/gen_hub_fixtures.py`:
//! `fixtures/hub/wikitext-tiny/` (parquet shards written by pyarrow, and
//! the ids GPT-2's `tokenizers` tokenizer gives each row, concatenated as
//! `run_clm.py` does) and `fixtures/hub/strided.json` (the loop of the
//! transformers page "Perplexity of fixed-length models" run on
//! `fixtures/gpt2/tiny-a`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_models::gpt2::load_model_dir;
use kiln_models::tokenizer::Tokenizer;
use kiln_models::train::sources::parquet_rows;
use kiln_models::train::{evaluate_strided, load_tokens_with};
use serde::Deserialize;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shard(split: &str) -> PathBuf {
    root().join(format!(
        "fixtures/hub/wikitext-tiny/{split}-00000-of-00001.parquet"
    ))
}

fn expected() -> BTreeMap<String, Vec<u32>> {
    let text = std::fs::read_to_string(root().join("fixtures/hub/wikitext-tiny/expected.json"));
    serde_json::from_str(&text.unwrap()).unwrap()
}

#[test]
fn parquet_rows_give_the_token_stream_of_run_clm() {
    let tok = Tokenizer::gpt2();
    let want = expected();
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "validation", "test"] {
        let cache = dir.path().join(format!("{split}.tokens"));
        let ids = load_tokens_with(&[shard(split)], "text", &tok, Some(&cache)).unwrap();
        assert_eq!(ids, want[split], "{split}");
        // Served from the cache the second time, the same.
        assert!(cache.is_file());
        let again = load_tokens_with(&[shard(split)], "text", &tok, Some(&cache)).unwrap();
        assert_eq!(again, want[split], "{split}");
    }
    // The rows hold wikitext's empty lines and headings, which add nothing
    // and no separator respectively.
    let rows = parquet_rows(&shard("train"), "text").unwrap();
    assert!(rows.iter().any(|r| r.is_empty()));
    assert!(rows.iter().any(|r| r.starts_with(" = Sonnet")));
}

#[test]
fn jsonl_rows_equal_parquet_rows() {
    let tok = Tokenizer::gpt2();
    let rows = parquet_rows(&shard("validation"), "text").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("val.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .map(|r| serde_json::json!({"id": 1, "body": r}).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let ids = load_tokens_with(&[jsonl], "body", &tok, None).unwrap();
    assert_eq!(ids, expected()["validation"]);
}

#[test]
fn a_missing_column_names_the_file_and_the_columns() {
    let err = load_tokens_with(&[shard("test")], "content", &Tokenizer::gpt2(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test-00000-of-00001.parquet")
            && err.contains("\"content\"")
            && err.contains("columns: text"),
        "{err}"
    );
}

#[derive(Deserialize)]
struct Strided {
    ids: Vec<u32>,
    cases: Vec<StridedCase>,
}

#[derive(Deserialize)]
struct StridedCase {
    max_length: usize,
    stride: usize,
    avg_nll: f64,
    n_tokens: usize,
}

#[test]
fn strided_perplexity_equals_the_transformers_docs_loop() {
    let f: Strided = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/hub/strided.json")).unwrap(),
    )
    .unwrap();
    let model = load_model_dir(root().join("fixtures/gpt2/tiny-a")).unwrap();
    assert!(f.cases.len() >= 2);
    for c in &f.cases {
        let r = evaluate_strided(&model, &f.ids, c.max_length, c.stride).unwrap();
        let (sum, n) = (r.nll_sum, r.tokens);
        assert_eq!(
            n, c.n_tokens,
            "max_length {} stride {}",
            c.max_length, c.stride
        );
        let avg = sum / n as f64;
        let rel = (avg - c.avg_nll).abs() / c.avg_nll.abs();
        assert!(
            rel < 1e-5,
            "max_length {} stride {}: Kiln {avg}, transformers {} (rel {rel:e})",
            c.max_length,
            c.stride,
            c.avg_nll
        );
    }
    // A stride of 0 would never end.
    assert!(evaluate_strided(&model, &f.ids, 16, 0).is_err());
}
