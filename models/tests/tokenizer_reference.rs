//! The GPT-2 tokenizer against ids produced by Hugging Face `tokenizers`
//! (fixtures written by `scripts/gen_tokenizer_fixtures.py`).

use std::path::{Path, PathBuf};

use kiln_models::tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct CorpusFile {
    file: String,
    bytes: usize,
    tokens: usize,
    fnv1a64: String,
    first: Vec<u32>,
    last: Vec<u32>,
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(name)
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

/// FNV-1a 64 over the ids as little-endian u32 bytes (as the generator does).
fn fnv1a64(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn check_cases(file: &str, encode: impl Fn(&Tokenizer, &str) -> Vec<u32>) {
    let tok = Tokenizer::gpt2();
    let cases: Vec<Case> = load(file);
    assert!(!cases.is_empty());
    let mut failures = vec![];
    for case in &cases {
        let ids = encode(&tok, &case.text);
        if ids != case.ids {
            failures.push(format!(
                "{:?}: got {:?}, reference {:?}",
                case.text, ids, case.ids
            ));
        }
        assert_eq!(
            tok.decode(&case.ids).unwrap(),
            case.text,
            "decode of {:?}",
            case.ids
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases in {file} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn edge_cases_match_reference() {
    check_cases("edge_cases.json", Tokenizer::encode);
}

#[test]
fn random_texts_match_reference() {
    check_cases("random.json", Tokenizer::encode);
}

#[test]
fn ordinary_encoding_ignores_the_special_token() {
    check_cases("ordinary.json", Tokenizer::encode_ordinary);
}

#[test]
fn shakespeare_corpus_matches_reference() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/shakespeare");
    let expected: Vec<CorpusFile> = load("shakespeare.json");
    let mut on_disk: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", corpus.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".txt"))
        .collect();
    on_disk.sort();
    let in_fixture: Vec<&str> = expected.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(on_disk, in_fixture, "corpus files and fixture disagree");

    let tok = Tokenizer::gpt2();
    let mut total = 0;
    for want in &expected {
        let text = std::fs::read_to_string(corpus.join(&want.file)).unwrap();
        assert_eq!(text.len(), want.bytes, "{}: size", want.file);
        let ids = tok.encode(&text);
        total += ids.len();
        assert_eq!(ids.len(), want.tokens, "{}: token count", want.file);
        assert_eq!(&ids[..32], &want.first[..], "{}: first ids", want.file);
        assert_eq!(
            &ids[ids.len() - 32..],
            &want.last[..],
            "{}: last ids",
            want.file
        );
        assert_eq!(
            format!("{:016x}", fnv1a64(&ids)),
            want.fnv1a64,
            "{}: hash of the id sequence",
            want.file
        );
        assert_eq!(tok.decode(&ids).unwrap(), text, "{}: round trip", want.file);
    }
    assert_eq!(total, 1_565_959);
}

#[test]
fn fnv1a64_agrees_with_the_generator() {
    // Values printed by `fnv1a64` in scripts/gen_tokenizer_fixtures.py.
    assert_eq!(fnv1a64(&[]), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(&[1, 2, 3]), 0xfd1f_0f43_81eb_0395);
    assert_eq!(fnv1a64(&[50256]), 0xa9b9_0d16_ccfa_0659);
}
