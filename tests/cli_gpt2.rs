//! The `kiln generate` and `kiln eval` command-line contracts, run on a
//! freshly initialised GPT-2 (tiny config, full GPT-2 vocabulary).

use std::path::Path;
use std::process::Command;

use kiln::models::gpt2::{save_model_dir, Gpt2, Gpt2Config};

fn kiln(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(&Gpt2::new(Gpt2Config::tiny(), 1).unwrap(), dir.path()).unwrap();
    dir
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn generate_streams_text_or_prints_ids() {
    let dir = model_dir();
    let (ok, ids, err) = kiln(&[
        "generate",
        "--model",
        p(dir.path()),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "7",
        "--ids",
    ]);
    assert!(ok, "{err}");
    let ids: Vec<u32> = serde_json::from_str(ids.trim()).unwrap();
    assert!(!ids.is_empty() && ids.len() <= 7);
    // Sampling with a seed is reproducible.
    let args = [
        "generate",
        "--model",
        p(dir.path()),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0.8",
        "--top-k",
        "40",
        "--top-p",
        "0.9",
        "--seed",
        "3",
    ];
    let (ok1, a, _) = kiln(&args);
    let (ok2, b, _) = kiln(&args);
    assert!(ok1 && ok2 && a == b && !a.is_empty());
}

#[test]
fn eval_reports_loss_perplexity_and_tokens() {
    let dir = model_dir();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "To be, or not to be, that is the question.\n".repeat(20),
    )
    .unwrap();
    let (ok, out, err) = kiln(&[
        "eval",
        "--model",
        p(dir.path()),
        "--file",
        p(&text),
        "--block-size",
        "32",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let n_ids = kiln::models::tokenizer::Tokenizer::gpt2()
        .encode(&std::fs::read_to_string(&text).unwrap())
        .len();
    // Each window of L tokens predicts L − 1 of them.
    let windows = n_ids.div_ceil(32);
    let last = n_ids - 32 * (windows - 1);
    let expected = 31 * (windows - 1) + last.saturating_sub(1);
    assert_eq!(v["tokens"].as_u64().unwrap() as usize, expected);
    let (loss, ppl) = (
        v["loss"].as_f64().unwrap(),
        v["perplexity"].as_f64().unwrap(),
    );
    assert!((ppl - loss.exp()).abs() < 1e-6 * ppl);
    // A fresh model knows nothing: loss near ln(50257) ≈ 10.8.
    assert!((loss - 50257f64.ln()).abs() < 0.5, "{loss}");
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = model_dir();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "generate".into(),
                "--model".into(),
                "/no/such/dir".into(),
                "--prompt".into(),
                "hi".into(),
            ],
            "/no/such/dir",
        ),
        (
            vec![
                "generate".into(),
                "--model".into(),
                p(dir.path()).into(),
                "--prompt".into(),
                "word ".repeat(80),
            ],
            "context is 64 positions",
        ),
        (
            vec![
                "eval".into(),
                "--model".into(),
                p(dir.path()).into(),
                "--file".into(),
                "/no/such/file.txt".into(),
            ],
            "/no/such/file.txt",
        ),
        (
            vec![
                "eval".into(),
                "--model".into(),
                p(dir.path()).into(),
                "--file".into(),
                p(&dir.path().join("config.json")).into(),
                "--block-size".into(),
                "100".into(),
            ],
            "exceeds the model's context",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = kiln(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, [0xff, 0xfe, 0x00]).unwrap();
    let (ok, _, err) = kiln(&["eval", "--model", p(dir.path()), "--file", p(&bad)]);
    assert!(!ok && err.contains("not valid UTF-8"), "{err}");
}

#[test]
fn bf16_generate_and_eval_run_and_agree_with_f32() {
    let dir = model_dir();
    let text = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        text.path(),
        "Shall I compare thee to a summer's day? ".repeat(20),
    )
    .unwrap();
    let eval = |dtype: &str| {
        let (ok, json, err) = kiln(&[
            "eval",
            "--model",
            p(dir.path()),
            "--file",
            p(text.path()),
            "--json",
            "--dtype",
            dtype,
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        v["loss"].as_f64().unwrap()
    };
    let (f32_loss, bf16_loss) = (eval("f32"), eval("bf16"));
    assert!(
        (f32_loss - bf16_loss).abs() <= 1e-2 * f32_loss,
        "bf16 loss {bf16_loss} vs f32 {f32_loss}"
    );
    let (ok, ids, err) = kiln(&[
        "generate",
        "--model",
        p(dir.path()),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "5",
        "--ids",
        "--dtype",
        "bf16",
    ]);
    assert!(ok && ids.starts_with('['), "{err}");
}
