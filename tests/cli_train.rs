//! The seed workflow as one command: fine-tune a GPT-2 directory on a text
//! file with transformers-style flags, then use the result with `kiln eval`
//! and `kiln generate`; plus the trainer's bad-input errors.

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

/// The shipped sonnets, the training text of these tests.
const SONNETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare/sonnets.txt");

/// A tiny GPT-2 (GPT-2's vocabulary) saved as a Hugging Face folder in
/// `dir`, as a base model to fine-tune.
fn tiny_model(dir: &Path) {
    save_model_dir(&Gpt2::new(Gpt2Config::tiny(), 5).unwrap(), dir).unwrap();
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn fine_tune_then_eval_and_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    tiny_model(&model);
    let sonnets = std::fs::read_to_string(SONNETS).unwrap();
    let (train, val) = (tmp.path().join("train.txt"), tmp.path().join("val.txt"));
    std::fs::write(&train, &sonnets[..12_000]).unwrap();
    std::fs::write(&val, &sonnets[12_000..16_000]).unwrap();
    let out = tmp.path().join("run");
    let (ok, _, err) = kiln(&[
        "train",
        "--model",
        p(&model),
        "--train",
        p(&train),
        "--val",
        p(&val),
        "--output-dir",
        p(&out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--save-steps",
        "10000",
        "--save-total-limit",
        "2",
        "--block-size",
        "32",
        "--learning-rate",
        "5e-3",
        "--no-progress",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("validation loss"), "{err}");
    for f in [
        "final/config.json",
        "final/model.safetensors",
        "final/generation_config.json",
        "final/tokenizer.json",
        "final/vocab.json",
        "final/merges.txt",
        "final/tokenizer_config.json",
        "final/special_tokens_map.json",
        "loss.svg",
        "log.jsonl",
        "cache/train.tokens",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // Redrawn from the log, the curve is the one the run drew.
    let redrawn = tmp.path().join("redrawn.svg");
    let (ok, _, err) = kiln(&[
        "plot-loss",
        p(&out.join("log.jsonl")),
        "--output",
        p(&redrawn),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("evaluation points"), "{err}");
    let read = |f: &Path| std::fs::read_to_string(f).unwrap();
    assert!(read(&redrawn) == read(&out.join("loss.svg")));
    let eval = |dir: &Path| {
        let (ok, json, err) = kiln(&[
            "eval",
            "--model",
            p(dir),
            "--file",
            p(&val),
            "--block-size",
            "32",
            "--json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        v["loss"].as_f64().unwrap()
    };
    let (before, after) = (eval(&model), eval(&out.join("final")));
    // One short epoch already lowers held-out loss clearly.
    assert!(after < before - 0.5, "validation loss {before} → {after}");
    let (ok, ids, err) = kiln(&[
        "generate",
        "--model",
        p(&out.join("final")),
        "--prompt",
        "Shall I",
        "--max-new-tokens",
        "5",
        "--ids",
    ]);
    assert!(ok && ids.starts_with('['), "{err}");
}

#[test]
fn trainer_bad_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "Too short.").unwrap();
    let out = tmp.path().join("out");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "train",
                "--config",
                "tiny",
                "--train",
                "/no/such.txt",
                "--output-dir",
                p(&out),
            ],
            "/no/such.txt",
        ),
        (
            vec![
                "train",
                "--config",
                "tiny",
                "--train",
                p(&empty),
                "--output-dir",
                p(&out),
            ],
            "empty",
        ),
        (
            vec![
                "train",
                "--config",
                "tiny",
                "--train",
                p(&short),
                "--output-dir",
                p(&out),
                "--block-size",
                "32",
            ],
            "too short for one block",
        ),
        (
            vec![
                "train",
                "--config",
                "tiny",
                "--train",
                p(&short),
                "--output-dir",
                p(&out),
                "--block-size",
                "100",
            ],
            "exceeds the model's context",
        ),
        (
            vec![
                "train",
                "--config",
                "nonsense",
                "--train",
                p(&short),
                "--output-dir",
                p(&out),
            ],
            "unknown preset",
        ),
        (
            vec![
                "train",
                "--model",
                "/no/model",
                "--train",
                p(&short),
                "--output-dir",
                p(&out),
            ],
            "/no/model",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, err) = kiln(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// transformers' checkpoint flags on the command line: strategies, the
/// best model at the end, and `--resume-from-checkpoint PATH` into a new
/// output folder, which continues exactly where the first run was.
#[test]
fn strategies_best_model_and_resume_from_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let sonnets = SONNETS;
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            "tiny",
            "--train",
            sonnets,
            "--output-dir",
            p(out),
            "--max-steps",
            "6",
            "--block-size",
            "32",
            "--per-device-train-batch-size",
            "2",
            "--save-steps",
            "2",
            "--eval-steps",
            "2",
            "--learning-rate",
            "1e-2",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        kiln(&args)
    };
    let first = tmp.path().join("first");
    let (ok, _, err) = run(
        &first,
        &[
            "--load-best-model-at-end",
            "--eval-strategy",
            "steps",
            "--save-total-limit",
            "1",
        ],
    );
    assert!(ok, "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(first.join("trainer_state.json")).unwrap())
            .unwrap();
    let best = state["best_model_checkpoint"].as_str().unwrap();
    assert!(Path::new(best).is_dir(), "{best}");
    // Only the best is left with --save-total-limit 1.
    let left: Vec<_> = std::fs::read_dir(&first)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");

    let plain = tmp.path().join("plain");
    let (ok, _, err) = run(&plain, &["--save-total-limit", "3"]);
    assert!(ok, "{err}");
    let resumed = tmp.path().join("resumed");
    let from = plain.join("checkpoint-4");
    let (ok, _, err) = run(
        &resumed,
        &[
            "--save-total-limit",
            "3",
            "--resume-from-checkpoint",
            p(&from),
        ],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("resuming from") && err.contains("(step 4)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(resumed.join("final/model.safetensors")).unwrap(),
        std::fs::read(plain.join("final/model.safetensors")).unwrap()
    );
    // --eval-steps with --eval-strategy no would be silently ignored.
    let (ok, _, err) = run(&tmp.path().join("bad"), &["--eval-strategy", "no"]);
    assert!(!ok && err.contains("would be ignored"), "{err}");
}

/// `--memory-report` prints the table before and after the first step, the
/// second with what the counting allocator measured; with
/// `--gradient-checkpointing` the block activations it keeps shrink.
#[test]
fn memory_report_shows_where_the_bytes_go() {
    let tmp = tempfile::tempdir().unwrap();
    let sonnets = SONNETS;
    let report = |out: &str, extra: &[&str]| {
        let out = tmp.path().join(out);
        let mut args = vec![
            "train",
            "--config",
            "tiny",
            "--train",
            sonnets,
            "--output-dir",
            p(&out),
            "--max-steps",
            "1",
            "--block-size",
            "64",
            "--batch-size",
            "4",
            "--no-progress",
            "--memory-report",
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = kiln(&args);
        assert!(ok, "{err}");
        err
    };
    let plain = report("plain", &[]);
    assert_eq!(plain.matches("memory: ").count(), 2, "{plain}");
    for row in [
        "parameters",
        "gradients",
        "optimizer state",
        "activations: 2 blocks ×",
        "logits + grad",
        "total (peak heap)",
        "peak resident set",
        "--gradient-checkpointing would keep",
    ] {
        assert!(plain.contains(row), "{row} missing:\n{plain}");
    }
    let after = plain.split("after the first step:").nth(1).unwrap();
    let measured = |text: &str, row: &str| -> String {
        let line = text.lines().find(|l| l.contains(row)).unwrap();
        line.split_whitespace()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Measured values exist after the step (a size, not "—").
    let acts = measured(after, "activations kept by one micro-batch");
    assert!(
        acts.ends_with("B") || acts.contains("iB"),
        "{acts}\n{after}"
    );
    assert!(
        !after
            .lines()
            .any(|l| l.contains("total (peak heap)") && l.ends_with('—')),
        "{after}"
    );
    let ckpt = report("ckpt", &["--gradient-checkpointing"]);
    assert!(
        ckpt.contains("2 block inputs") && ckpt.contains("one block recomputed"),
        "{ckpt}"
    );
}

/// LoRA end to end: `--lora-r` trains adapters only and writes them in
/// PEFT's format into every checkpoint and `final/`; a resume from a
/// checkpoint is exact; `generate` and `eval` take the adapter folder
/// (merging it into the base it names), and `merge-lora` writes a plain
/// model that gives the same results.
#[test]
fn lora_fine_tune_resume_merge_and_use() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_model(&base);
    let sonnets = SONNETS;
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            p(&base),
            "--train",
            sonnets,
            "--output-dir",
            p(out),
            "--max-steps",
            "4",
            "--save-steps",
            "2",
            "--block-size",
            "32",
            "--batch-size",
            "2",
            "--learning-rate",
            "1e-2",
            "--lora-r",
            "4",
            "--lora-alpha",
            "16",
            "--lora-target-modules",
            "c_attn,c_proj",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = kiln(&args);
        assert!(ok, "{err}");
        err
    };
    let run = tmp.path().join("run");
    let err = train(&run, &[]);
    assert!(err.contains("LoRA: rank 4 adapters on 6 layers"), "{err}");
    for dir in ["checkpoint-2", "checkpoint-4", "final"] {
        let d = run.join(dir);
        assert!(d.join("adapter_config.json").is_file(), "{dir}");
        assert!(d.join("adapter_model.safetensors").is_file(), "{dir}");
        assert!(
            !d.join("model.safetensors").exists(),
            "{dir} holds the whole model"
        );
    }
    let conf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("final/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(conf["r"], 4);
    assert_eq!(conf["lora_alpha"], 16);
    assert_eq!(conf["base_model_name_or_path"], p(&base));

    let resumed = tmp.path().join("resumed");
    let from = run.join("checkpoint-2");
    train(&resumed, &["--resume-from-checkpoint", p(&from)]);
    assert_eq!(
        std::fs::read(resumed.join("final/adapter_model.safetensors")).unwrap(),
        std::fs::read(run.join("final/adapter_model.safetensors")).unwrap()
    );

    let merged = tmp.path().join("merged");
    let (ok, _, err) = kiln(&[
        "merge-lora",
        "--model",
        p(&base),
        "--adapter",
        p(&run.join("final")),
        "--output-dir",
        p(&merged),
    ]);
    assert!(ok, "{err}");
    let greedy = |model: &Path| {
        let (ok, ids, err) = kiln(&[
            "generate",
            "--model",
            p(model),
            "--prompt",
            "Shall I",
            "--max-new-tokens",
            "8",
            "--ids",
        ]);
        assert!(ok, "{err}");
        ids
    };
    let eval = |model: &Path| {
        let (ok, json, err) = kiln(&[
            "eval",
            "--model",
            p(model),
            "--file",
            sonnets,
            "--block-size",
            "32",
            "--json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        v["loss"].as_f64().unwrap()
    };
    assert_eq!(greedy(&run.join("final")), greedy(&merged));
    let (adapted, plain, before) = (eval(&run.join("final")), eval(&merged), eval(&base));
    assert!((adapted - plain).abs() < 1e-5, "{adapted} vs {plain}");
    assert!(
        adapted < before,
        "the adapter did not lower the loss: {before} → {adapted}"
    );
    // LoRA needs a pretrained model.
    let (ok, _, err) = kiln(&[
        "train",
        "--config",
        "tiny",
        "--train",
        sonnets,
        "--output-dir",
        p(&tmp.path().join("x")),
        "--lora-r",
        "4",
    ]);
    assert!(
        !ok && err.contains("--lora-r adapts a pretrained model"),
        "{err}"
    );
}

/// `--dtype bf16` with LoRA keeps the frozen base in bf16 (half its bytes)
/// while the adapters stay f32; the adapter merges into the f32 base.
#[test]
fn lora_on_a_bf16_base() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_model(&base);
    let sonnets = SONNETS;
    let out = tmp.path().join("run");
    let (ok, _, err) = kiln(&[
        "train",
        "--model",
        p(&base),
        "--train",
        sonnets,
        "--output-dir",
        p(&out),
        "--max-steps",
        "3",
        "--block-size",
        "32",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-2",
        "--lora-r",
        "4",
        "--dtype",
        "bf16",
        "--memory-report",
        "--no-progress",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("frozen weights bf16"), "{err}");
    let adapter = kiln::nn::StateDict::load(out.join("final/adapter_model.safetensors")).unwrap();
    assert!(adapter
        .iter()
        .all(|(_, t)| t.dtype() == kiln::tensor::DType::F32));
    let (ok, _, err) = kiln(&[
        "merge-lora",
        "--model",
        p(&base),
        "--adapter",
        p(&out.join("final")),
        "--output-dir",
        p(&tmp.path().join("merged")),
    ]);
    assert!(ok, "{err}");
    // bf16 weights cannot be trained in place: --dtype needs LoRA.
    let (ok, _, err) = kiln(&[
        "train",
        "--model",
        p(&base),
        "--train",
        sonnets,
        "--output-dir",
        p(&tmp.path().join("x")),
        "--dtype",
        "bf16",
    ]);
    assert!(!ok && err.contains("--lora-r"), "{err}");
}

/// `kiln train`'s trainer flags are the library's `TrainConfig` and its
/// enums (clap-derived): the same names, the one schedule enum's values,
/// and the values reach the trainer.
#[test]
fn train_flags_are_the_library_config() {
    let (ok, help, _) = kiln(&["train", "--help"]);
    assert!(ok);
    for flag in [
        "--lr-scheduler <",
        "--lr-scheduler-type",
        "--num-train-epochs",
        "--per-device-train-batch-size",
        "--eval-strategy <",
        "--no-progress",
        "--no-ddp-overlap",
        "--adam-beta1",
        "--adam-beta2",
        "--adam-epsilon",
    ] {
        assert!(help.contains(flag), "{flag} in:\n{help}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let base = [
        "train",
        "--config",
        "tiny",
        "--train",
        SONNETS,
        "--output-dir",
        p(&out),
        "--no-progress",
    ];
    let with = |extra: &[&str]| kiln(&[&base[..], extra].concat());
    let (ok, _, err) = with(&["--lr-scheduler", "cosin"]);
    assert!(!ok);
    assert!(
        err.contains("[possible values: linear, cosine, constant]"),
        "{err}"
    );
    let (ok, _, err) = with(&["--ddp-bucket-cap-mb", "0"]);
    assert!(!ok && err.contains("--ddp-bucket-cap-mb"), "{err}");
    // The AdamW flags reach validation, whose message names them.
    let (ok, _, err) = with(&["--adam-beta2", "1.0"]);
    assert!(
        !ok && err.contains("adam_beta2 (--adam-beta2) must be in [0, 1)"),
        "{err}"
    );

    // A constant schedule takes no warmup: the peak rate from step 1.
    let (ok, _, err) = with(&[
        "--lr-scheduler-type",
        "constant",
        "--warmup-steps",
        "5",
        "--learning-rate",
        "0.003",
        "--max-steps",
        "2",
        "--logging-steps",
        "1",
        "--batch-size",
        "2",
        "--block-size",
        "16",
        "--sampling",
        "random",
    ]);
    assert!(ok, "{err}");
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    let lrs: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v["lr"].as_f64())
        .collect();
    assert_eq!(lrs, [0.003, 0.003]);
}
