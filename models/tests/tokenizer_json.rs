//! `tokenizer.json`: reading it (both merge spellings, added tokens), the
//! clear errors for tokenizers that are not byte-level BPE, writing it back,
//! and the files `save_pretrained` leaves for transformers.
//!
//! Fixtures: `fixtures/hub/tokenizer-small/`, made by
//! `scripts/reference/gen_hub_fixtures.py` with `tokenizers` 0.23:
//!
//! ```python
//! tok = Tokenizer(models.BPE()); tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
//! tok.train_from_iterator(sonnet_lines, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], ...))
//! tok.add_special_tokens([AddedToken("<|user|>", special=True)]); tok.add_tokens(["[NOTE]"])
//! ids = [tok.encode(t).ids for t in TEXTS]
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use kiln_models::tokenizer::{Tokenizer, TokenizerError};
use serde::Deserialize;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn small(name: &str) -> PathBuf {
    root().join("fixtures/hub/tokenizer-small").join(name)
}

#[derive(Deserialize)]
struct Expected {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
}

fn expected() -> Expected {
    serde_json::from_str(&fs::read_to_string(small("expected.json")).unwrap()).unwrap()
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn pair_and_joined_merges_give_the_ids_of_tokenizers() {
    let want = expected();
    for file in ["tokenizer.json", "tokenizer-joined.json"] {
        let tok = Tokenizer::from_tokenizer_json(small(file)).unwrap();
        for (text, ids) in want.texts.iter().zip(&want.ids) {
            assert_eq!(&tok.encode(text), ids, "{file}: {text:?}");
            assert_eq!(&tok.decode(ids).unwrap(), text, "{file}: {text:?}");
        }
        assert_eq!(tok.token_to_id("<|user|>"), Some(400));
        assert_eq!(tok.token_to_id("[NOTE]"), Some(401));
    }
}

#[test]
fn written_tokenizer_json_reads_back_the_same() {
    let want = expected();
    let tok = Tokenizer::from_tokenizer_json(small("tokenizer.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save_pretrained(dir.path(), 64).unwrap();
    for f in [
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let again = Tokenizer::from_dir(dir.path()).unwrap();
    for (text, ids) in want.texts.iter().zip(&want.ids) {
        assert_eq!(&again.encode(text), ids, "{text:?}");
    }
    let config: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["tokenizer_class"], "GPT2Tokenizer");
    assert_eq!(config["model_max_length"], 64);
    assert_eq!(config["added_tokens_decoder"]["401"]["special"], false);
    assert_eq!(config["added_tokens_decoder"]["400"]["content"], "<|user|>");
}

/// GPT-2's own tokenizer.json, made here from the repository's vocabulary
/// (the 1.4 MB file is not committed): reading what Kiln writes gives the
/// ids of `tokenizers` on the edge-case suite and the built-in tokenizer's
/// on a sonnet corpus.
#[test]
fn gpt2_tokenizer_json_equals_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    fs::write(&path, Tokenizer::gpt2().to_tokenizer_json()).unwrap();
    let tok = Tokenizer::from_tokenizer_json(&path).unwrap();
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.eot_id(), 50256);
    let cases: Vec<Case> = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/edge_cases.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for case in &cases {
        assert_eq!(tok.encode(&case.text), case.ids, "{:?}", case.text);
    }
    let sonnets = fs::read_to_string(root().join("data/shakespeare/sonnets.txt")).unwrap();
    assert_eq!(tok.encode(&sonnets), Tokenizer::gpt2().encode(&sonnets));
    // The vocabulary and merges written back are GPT-2's files, token for token.
    assert_eq!(
        tok.merges_txt().lines().skip(1).collect::<Vec<_>>(),
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gpt2/vocab.bpe"))
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
    );
}

/// An edit of a tokenizer.json.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

/// A copy of the small tokenizer.json with one field changed.
fn edited(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(small("tokenizer.json")).unwrap()).unwrap();
    edit(&mut json);
    let path = dir.join("tokenizer.json");
    fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn a_tokenizer_that_is_not_byte_level_bpe_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Edit)> = vec![
        (
            "model.type",
            Box::new(|j| j["model"]["type"] = "WordPiece".into()),
        ),
        (
            "pre_tokenizer.type",
            Box::new(|j| j["pre_tokenizer"] = serde_json::json!({"type": "Metaspace"})),
        ),
        (
            "normalizer",
            Box::new(|j| j["normalizer"] = serde_json::json!({"type": "NFC"})),
        ),
        (
            "pre_tokenizer.add_prefix_space",
            Box::new(|j| j["pre_tokenizer"]["add_prefix_space"] = true.into()),
        ),
        (
            "model.ignore_merges",
            Box::new(|j| j["model"]["ignore_merges"] = true.into()),
        ),
        (
            "lstrip",
            Box::new(|j| j["added_tokens"][1]["lstrip"] = true.into()),
        ),
    ];
    for (field, edit) in cases {
        let path = edited(dir.path(), edit);
        let err = Tokenizer::from_tokenizer_json(&path).unwrap_err();
        assert!(
            matches!(err, TokenizerError::Unsupported { .. }),
            "{field}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(field), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        // A directory with such a file is an error too, even though it
        // also holds GPT-2's vocab.json + merges.txt.
        fs::write(dir.path().join("vocab.json"), "{}").unwrap();
        fs::write(dir.path().join("merges.txt"), "").unwrap();
        assert!(Tokenizer::from_dir(dir.path()).is_err(), "{field}");
    }
    let path = edited(dir.path(), |j| {
        j["model"]["merges"][3] = serde_json::json!("no-space")
    });
    let msg = Tokenizer::from_tokenizer_json(&path)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model.merges[3]"), "{msg}");
}

#[test]
fn from_dir_prefers_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let gpt2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gpt2");
    fs::copy(gpt2.join("encoder.json"), dir.path().join("vocab.json")).unwrap();
    fs::copy(gpt2.join("vocab.bpe"), dir.path().join("merges.txt")).unwrap();
    assert_eq!(Tokenizer::from_dir(dir.path()).unwrap().vocab_size(), 50257);
    fs::copy(small("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(Tokenizer::from_dir(dir.path()).unwrap().vocab_size(), 402);
}
