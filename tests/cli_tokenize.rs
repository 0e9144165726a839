//! `kiln tokenize`, run as a user would.

use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn tokenizes_text_argument() {
    let out = kiln(&["tokenize", "Hello world, it's 2026!"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[15496,995,11,340,338,1160,2075,0]\n");
}

#[test]
fn special_token_and_empty_text() {
    let out = kiln(&["tokenize", "a<|endoftext|>b"]);
    assert_eq!(stdout(&out), "[64,50256,65]\n");
    let out = kiln(&["tokenize", ""]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "[]\n");
}

#[test]
fn tokenizes_file_with_given_tokenizer_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.txt");
    std::fs::write(&file, "Hello world, it's 2026!").unwrap();
    let vocab = concat!(env!("CARGO_MANIFEST_DIR"), "/models/data/gpt2");
    let out = kiln(&[
        "tokenize",
        "--tokenizer",
        vocab,
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<u32> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(ids, [15496, 995, 11, 340, 338, 1160, 2075, 0]);
}

#[test]
fn tokenizes_corpus_file() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare/sonnets.txt");
    let out = kiln(&["tokenize", "--file", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<u32> = serde_json::from_str(&stdout(&out)).unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    assert_eq!(
        ids,
        kiln::models::tokenizer::Tokenizer::gpt2().encode(&text)
    );
}

/// Each error: non-zero exit, nothing on stdout, one line on stderr that
/// names the problem, no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    assert_eq!(stdout(out), "");
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let out = kiln(&["tokenize", "--file", missing.to_str().unwrap()]);
    assert_clean_error(&out, "missing.txt");

    let binary = dir.path().join("binary.bin");
    std::fs::write(&binary, b"ok\xff\xfe").unwrap();
    let out = kiln(&["tokenize", "--file", binary.to_str().unwrap()]);
    assert_clean_error(&out, "not valid UTF-8");

    let out = kiln(&["tokenize", "--tokenizer", dir.path().to_str().unwrap(), "x"]);
    assert_clean_error(&out, "no tokenizer found in");
}

#[test]
fn needs_text_or_file() {
    let out = kiln(&["tokenize"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--file"), "{}", stderr(&out));
}
