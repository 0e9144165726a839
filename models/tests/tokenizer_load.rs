//! Loading tokenizers from files, and the errors users see when files are bad.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_models::tokenizer::{Tokenizer, TokenizerError};

fn builtin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gpt2")
}

const SAMPLE: &str = "Hello world, it's 2026! <|endoftext|> Ünïcödé 🦀\n";

#[test]
fn from_dir_with_openai_names_equals_builtin() {
    let tok = Tokenizer::from_dir(builtin_dir()).unwrap();
    assert_eq!(tok.encode(SAMPLE), Tokenizer::gpt2().encode(SAMPLE));
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.eot_id(), 50256);
}

#[test]
fn from_dir_with_hugging_face_names_equals_builtin() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        builtin_dir().join("encoder.json"),
        dir.path().join("vocab.json"),
    )
    .unwrap();
    fs::copy(
        builtin_dir().join("vocab.bpe"),
        dir.path().join("merges.txt"),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.encode(SAMPLE), Tokenizer::gpt2().encode(SAMPLE));
}

#[test]
fn from_dir_without_tokenizer_files_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("vocab.json"), "{}").unwrap(); // half a pair
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizerError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("vocab.json and merges.txt"), "{msg}");

    let missing = dir.path().join("no-such-dir");
    let err = Tokenizer::from_dir(&missing).unwrap_err();
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn missing_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("missing.json");
    let err = Tokenizer::from_files(&vocab, builtin_dir().join("vocab.bpe")).unwrap_err();
    assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.json"), "{err}");
}

/// GPT-2's printable stand-in for byte `b`.
fn byte_char(b: u8) -> char {
    let self_mapped = |x: u8| matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if self_mapped(b) {
        char::from(b)
    } else {
        let n = (0..b).filter(|&x| !self_mapped(x)).count() as u32;
        char::from_u32(256 + n).unwrap()
    }
}

/// A tiny byte-level vocabulary: the 256 byte tokens (in GPT-2's byte
/// alphabet), the given extra tokens, and `<|endoftext|>` last.
fn tiny_vocab_json(extra: &[&str], skip_byte: Option<u8>, with_eot: bool) -> String {
    let mut entries: Vec<(String, u32)> = vec![];
    for b in 0..=255u8 {
        if Some(b) != skip_byte {
            entries.push((byte_char(b).to_string(), entries.len() as u32));
        }
    }
    for t in extra {
        entries.push((t.to_string(), entries.len() as u32));
    }
    if with_eot {
        entries.push(("<|endoftext|>".into(), entries.len() as u32));
    }
    let map: serde_json::Map<String, serde_json::Value> = entries
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::from(v)))
        .collect();
    serde_json::to_string(&map).unwrap()
}

fn write_pair(dir: &Path, vocab: &str, merges: &str) -> (PathBuf, PathBuf) {
    let (v, m) = (dir.join("vocab.json"), dir.join("merges.txt"));
    fs::write(&v, vocab).unwrap();
    fs::write(&m, merges).unwrap();
    (v, m)
}

#[test]
fn tiny_vocabulary_merges_by_rank() {
    let dir = tempfile::tempdir().unwrap();
    // "owe" is in the vocabulary but no rule builds it: BPE never emits it.
    let vocab = tiny_vocab_json(&["lo", "low", "Ġlow", "er", "Ġlower", "owe"], None, true);
    let merges = "#version: 0.2\nl o\nlo w\nĠ low\ne r\n\nĠlow er\n";
    let (v, m) = write_pair(dir.path(), &vocab, merges);
    let tok = Tokenizer::from_files(&v, &m).unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert_eq!(tok.vocab_size(), 256 + 6 + 1);
    assert_eq!(tok.eot_id(), 262);
    assert_eq!(tok.encode("owe"), [id("o"), id("w"), id("e")]);
    assert_eq!(tok.encode("low lower"), [id("low"), id("Ġlower")]);
    assert_eq!(tok.encode("lowe"), [id("low"), id("e")]);
    assert_eq!(tok.encode("lo<|endoftext|>"), [id("lo"), tok.eot_id()]);
    assert_eq!(
        tok.decode(&tok.encode("a lower low")).unwrap(),
        "a lower low"
    );
}

fn load_err(vocab: &str, merges: &str) -> (TokenizerError, String) {
    let dir = tempfile::tempdir().unwrap();
    let (v, m) = write_pair(dir.path(), vocab, merges);
    let err = Tokenizer::from_files(v, m).unwrap_err();
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn malformed_json_names_the_file() {
    let (err, msg) = load_err("{\"a\": 0,", "");
    assert!(matches!(err, TokenizerError::VocabJson { .. }), "{err:?}");
    assert!(
        msg.contains("vocab.json") && msg.contains("malformed"),
        "{msg}"
    );
    let (_, msg) = load_err("[1, 2]", "");
    assert!(msg.contains("vocab.json"), "{msg}");
}

#[test]
fn bad_merges_line_names_file_and_line() {
    let vocab = tiny_vocab_json(&["ab"], None, true);
    let (err, msg) = load_err(&vocab, "#version: 0.2\na b\nab c d\n");
    assert!(
        matches!(err, TokenizerError::BadMerge { line: 3, .. }),
        "{err:?}"
    );
    assert!(msg.contains("merges.txt, line 3"), "{msg}");
    assert!(msg.contains("two tokens"), "{msg}");

    let (err, msg) = load_err(&vocab, "a b\nq zz\n");
    assert!(
        matches!(err, TokenizerError::BadMerge { line: 2, .. }),
        "{err:?}"
    );
    assert!(msg.contains("\"zz\" is not in the vocabulary"), "{msg}");

    let (_, msg) = load_err(&vocab, "b a\n");
    assert!(msg.contains("merged token \"ba\""), "{msg}");
}

#[test]
fn vocabulary_needs_byte_tokens_and_end_of_text() {
    let (err, msg) = load_err(&tiny_vocab_json(&[], Some(b'x'), true), "");
    assert!(matches!(err, TokenizerError::BadVocab { .. }), "{err:?}");
    assert!(msg.contains("byte 0x78"), "{msg}");

    let (_, msg) = load_err(&tiny_vocab_json(&[], None, false), "");
    assert!(msg.contains("<|endoftext|>"), "{msg}");

    let (_, msg) = load_err("{\"a\": 3, \"b\": 3}", "");
    assert!(
        msg.contains("id 3 is given to both \"a\" and \"b\""),
        "{msg}"
    );
}

#[test]
fn non_utf8_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = tiny_vocab_json(&[], None, true);
    let (v, m) = write_pair(dir.path(), &vocab, "");
    fs::write(&m, b"a b\n\xff\xfe\n").unwrap();
    let err = Tokenizer::from_files(v, &m).unwrap_err();
    assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("merges.txt"), "{err}");
}
