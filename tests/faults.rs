//! Training's failure paths, tried as a hostile user would: bad
//! hyper-parameters, two runs in one folder, kills at every step of saving
//! and rotating (injected, and 30 real `kill -9`s), a reused folder, absurd
//! configs, leftovers, signals and exit codes, a full disk. In every case:
//! a clear error and exit status, no checkpoint under a real name that fails
//! verification, and every earlier checkpoint still loadable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::models::gpt2::{save_model_dir, Gpt2, Gpt2Config};
use kiln::models::tokenizer::Tokenizer;
use kiln::models::train::checkpoint::{
    checkpoint_step, list_checkpoints, load_checkpoint, verify_folder, FaultPoint,
};
use kiln::models::train::{BatchSampling, ScheduleKind, TrainConfig, Trainer};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn sonnets() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/shakespeare/sonnets.txt"
    ))
    .unwrap();
    text[..12_000].to_string()
}

fn train_file(dir: &Path) -> PathBuf {
    let f = dir.join("train.txt");
    std::fs::write(&f, sonnets()).unwrap();
    f
}

/// `kiln train` on the tiny preset, small steps, no progress bar.
fn train_args<'a>(train: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--config",
        "tiny",
        "--train",
        train,
        "--output-dir",
        out,
        "--block-size",
        "16",
        "--no-progress",
    ];
    v.extend_from_slice(extra);
    v
}

/// Every folder named exactly `checkpoint-N` verifies (manifest, sizes,
/// CRCs) and loads; returns their steps.
fn real_checkpoints_are_whole(out: &Path) -> Vec<usize> {
    let mut steps = Vec::new();
    for e in std::fs::read_dir(out).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if let Some(step) = checkpoint_step(&name) {
            verify_folder(&e.path()).unwrap_or_else(|err| panic!("{name}: {err}"));
            let ck = load_checkpoint(&e.path()).unwrap();
            assert_eq!(ck.state.step, step);
            steps.push(step);
        }
    }
    steps.sort();
    steps
}

/// Names of `.kiln-tmp`, `.kiln-old` and `.kiln-del` entries anywhere under
/// `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().into_string().unwrap();
            if [".kiln-tmp", ".kiln-old", ".kiln-del"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                found.push(e.path().display().to_string());
            }
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    found
}

fn lib_config(out: &Path) -> TrainConfig {
    TrainConfig {
        output_dir: out.into(),
        learning_rate: 1e-3,
        warmup_steps: 1,
        schedule: ScheduleKind::Cosine,
        max_steps: Some(8),
        batch_size: 2,
        block_size: 16,
        sampling: BatchSampling::Random,
        save_steps: 100,
        logging_steps: 1,
        progress: false,
        ..Default::default()
    }
}

fn lib_trainer(cfg: TrainConfig) -> Trainer {
    let ids = Tokenizer::gpt2().encode(&sonnets());
    Trainer::new(Gpt2::new(Gpt2Config::tiny(), 7).unwrap(), cfg, ids, None).unwrap()
}

fn steps(t: &mut Trainer, n: usize) {
    for _ in 0..n {
        let b = t.next_batches().unwrap();
        t.train_step(&b).unwrap();
    }
}

// 1. Hyper-parameters that would poison the weights, and non-finite saves.

#[test]
fn nan_infinite_or_overflowing_hyperparameters_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let train = train_file(tmp.path());
    let out = tmp.path().join("out");
    for (flag, value, field) in [
        ("--learning-rate", "NaN", "learning_rate"),
        ("--learning-rate", "inf", "learning_rate"),
        ("--learning-rate", "1e39", "learning_rate"),
        ("--learning-rate", "-1e-3", "learning_rate"),
        ("--weight-decay", "NaN", "weight_decay"),
        ("--max-grad-norm", "NaN", "max_grad_norm"),
        ("--batch-size", "0", "batch_size"),
        ("--max-steps", "0", "max_steps"),
        ("--epochs", "NaN", "epochs"),
        ("--epochs", "0", "epochs"),
        ("--epochs", "-1", "epochs"),
        (
            "--gradient-accumulation-steps",
            "0",
            "gradient_accumulation_steps",
        ),
        ("--save-steps", "0", "save_steps"),
    ] {
        let arg = format!("{flag}={value}");
        let o = kiln(&train_args(p(&train), p(&out), &[&arg]));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{arg}: {err}");
        assert!(
            err.contains(&format!("{field} ({flag}) must be")) && !err.contains("panicked"),
            "{arg}: {err}"
        );
        assert!(
            list_checkpoints(&out).is_empty(),
            "{arg} saved a checkpoint"
        );
    }
}

#[test]
fn a_checkpoint_is_never_saved_with_non_finite_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = lib_trainer(lib_config(tmp.path()));
    steps(&mut t, 1);
    let good = t.save_checkpoint().unwrap();
    steps(&mut t, 1);
    let w = &t.model.h[0].mlp.c_fc.weight;
    let mut v = w.value().to_vec::<f32>().unwrap();
    v[3] = f32::INFINITY;
    w.set_value(kiln::tensor::Tensor::from_vec(v, w.value().shape()).unwrap())
        .unwrap();
    let e = t.save_checkpoint().unwrap_err().to_string();
    assert!(
        e.contains("not saving checkpoint-2") && e.contains("h.0.mlp.c_fc.weight"),
        "{e}"
    );
    assert!(!tmp.path().join("checkpoint-2").exists());
    // The next step diverges; the message names the one good checkpoint.
    let b = t.next_batches().unwrap();
    let e = t.train_step(&b).unwrap_err().to_string();
    assert!(e.contains(&good.display().to_string()), "{e}");
    assert_eq!(real_checkpoints_are_whole(tmp.path()), vec![1]);
}

// 2. Two runs, one folder.

#[test]
fn a_second_run_in_the_same_output_dir_is_refused_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let train = train_file(tmp.path());
    let out = tmp.path().join("out");
    let mut first: Child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(train_args(p(&train), p(&out), &["--max-steps", "100000"]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = out.join("log.jsonl");
    let start = Instant::now();
    while !log.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "first run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = kiln(&train_args(p(&train), p(&out), &["--resume"]));
    first.kill().unwrap();
    first.wait().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.id())) && err.contains(p(&out)),
        "{err}"
    );
    // Killed, the holder's lock is gone with it.
    let o = kiln(&train_args(
        p(&train),
        p(&out),
        &["--resume", "--max-steps", "1"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
}

// 3. A kill during rotation.

#[test]
fn a_kill_during_rotation_never_leaves_a_half_deleted_checkpoint_under_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = lib_config(tmp.path());
    cfg.save_total_limit = Some(1);
    let mut t = lib_trainer(cfg.clone());
    steps(&mut t, 1);
    t.save_checkpoint().unwrap();
    steps(&mut t, 1);
    t.fault_hook = Box::new(|at| match at {
        FaultPoint::Deleting => Err(std::io::Error::other("simulated kill")),
        _ => Ok(()),
    });
    let e = t.save_checkpoint().unwrap_err().to_string();
    assert!(e.contains("simulated kill"), "{e}");
    drop(t);
    // checkpoint-1 is out of the namespace, half deleted; checkpoint-2 whole.
    assert!(tmp.path().join("checkpoint-1.kiln-del").exists());
    assert_eq!(real_checkpoints_are_whole(tmp.path()), vec![2]);
    // The next run removes the remains.
    let t = lib_trainer(cfg);
    assert!(t
        .repairs()
        .iter()
        .any(|r| r.contains("checkpoint-1.kiln-del")));
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

// 4. A kill between the two renames of a re-save.

#[test]
fn resaving_a_step_is_safe_at_every_instant() {
    for tmp_complete in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = lib_config(tmp.path());
        let mut t = lib_trainer(cfg.clone());
        steps(&mut t, 2);
        let dir = t.save_checkpoint().unwrap();
        let want = std::fs::read(dir.join("model.safetensors")).unwrap();
        t.fault_hook = Box::new(|at| match at {
            FaultPoint::OldMovedAside => Err(std::io::Error::other("simulated kill")),
            _ => Ok(()),
        });
        assert!(t.save_checkpoint().is_err());
        drop(t);
        let old = tmp.path().join("checkpoint-2.kiln-old");
        let new = tmp.path().join("checkpoint-2.kiln-tmp");
        assert!(old.exists() && new.exists() && !dir.exists());
        if !tmp_complete {
            std::fs::remove_file(new.join("kiln_manifest.json")).unwrap();
        }
        let mut t = lib_trainer(cfg);
        let from = if tmp_complete { &new } else { &old };
        assert!(
            t.repairs()
                .iter()
                .any(|r| r.contains(&from.display().to_string())),
            "{:?}",
            t.repairs()
        );
        assert_eq!(real_checkpoints_are_whole(tmp.path()), vec![2]);
        assert!(leftovers(tmp.path()).is_empty());
        assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), want);
        assert_eq!(t.resume().unwrap().unwrap(), dir);
    }
}

#[test]
fn a_corrupt_checkpoint_is_named_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = lib_config(tmp.path());
    let mut t = lib_trainer(cfg.clone());
    steps(&mut t, 1);
    let dir = t.save_checkpoint().unwrap();
    drop(t);
    let f = dir.join("optimizer.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(&f, bytes).unwrap();
    let mut t = lib_trainer(cfg);
    let e = t.resume().err().unwrap().to_string();
    assert!(
        e.contains("checkpoint-1") && e.contains("optimizer.safetensors") && e.contains("CRC"),
        "{e}"
    );
}

// 5. A reused folder.

#[test]
fn reusing_an_output_dir_needs_resume_or_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let train = train_file(tmp.path());
    let out = tmp.path().join("out");
    let first = [
        "--max-steps",
        "6",
        "--save-steps",
        "2",
        "--save-total-limit",
        "2",
    ];
    let o = kiln(&train_args(p(&train), p(&out), &first));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(real_checkpoints_are_whole(&out), vec![4, 6]);
    let again = [
        "--max-steps",
        "2",
        "--save-steps",
        "2",
        "--save-total-limit",
        "2",
    ];
    let o = kiln(&train_args(p(&train), p(&out), &again));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        "already holds an earlier run",
        "--resume",
        "--overwrite-output-dir",
    ] {
        assert!(err.contains(needle), "{err}");
    }
    assert_eq!(
        real_checkpoints_are_whole(&out),
        vec![4, 6],
        "nothing touched"
    );
    let mut args = again.to_vec();
    args.push("--overwrite-output-dir");
    let o = kiln(&train_args(p(&train), p(&out), &args));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        real_checkpoints_are_whole(&out),
        vec![2],
        "only the new run"
    );
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"loss\"")).count(), 1);
}

// 6. Absurd configs.

#[test]
fn absurd_configs_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let train = train_file(tmp.path());
    let out = tmp.path().join("out");
    for (field, value, needle) in [
        ("n_embd", "4611686018427387904", "impossibly large"),
        ("n_layer", "1000000000", "needs about"),
        ("vocab_size", "1000000000000", "needs about"),
        ("n_layer", "2000000", "needs about"),
        ("layer_norm_epsilon", "0", "layer_norm_epsilon must be"),
        ("layer_norm_epsilon", "-1e-5", "layer_norm_epsilon must be"),
        ("n_inner", "0", "n_inner must be positive"),
    ] {
        let cfg = tmp.path().join("config.json");
        let mut json =
            serde_json::json!({"n_embd": 32, "n_head": 2, "n_layer": 2, "n_positions": 64});
        json[field] = serde_json::from_str(value).unwrap();
        std::fs::write(&cfg, json.to_string()).unwrap();
        let mut args = train_args(p(&train), p(&out), &[]);
        args[2] = p(&cfg);
        let o = kiln(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{field}={value}: {err}");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{field}={value}: {err}"
        );
    }
}

// 7. Leftovers.

#[test]
fn leftovers_of_killed_runs_are_removed_at_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let train = train_file(tmp.path());
    let out = tmp.path().join("out");
    let o = kiln(&train_args(
        p(&train),
        p(&out),
        &["--max-steps", "1", "--save-steps", "1"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    for d in [
        "checkpoint-7.kiln-tmp",
        "checkpoint-1.kiln-old",
        "checkpoint-3.kiln-del",
    ] {
        std::fs::create_dir_all(out.join(d)).unwrap();
        std::fs::write(out.join(d).join("model.safetensors"), b"partial").unwrap();
    }
    std::fs::write(out.join("cache/train.tokens.999-0.kiln-tmp"), b"partial").unwrap();
    std::fs::write(out.join("final/model.safetensors.999-1.kiln-tmp"), b"x").unwrap();
    let o = kiln(&train_args(
        p(&train),
        p(&out),
        &["--resume", "--max-steps", "2"],
    ));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("removed the leftover"), "{err}");
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

// 8. Exit statuses and silent reinterpretations.

fn interrupt_with(signal: &str) -> (Option<i32>, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let train = train_file(tmp.path());
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(train_args(p(&train), p(&out), &["--max-steps", "100000"]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join("log.jsonl").exists() {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let code = child.wait().unwrap().code();
    (code, out, tmp)
}

#[test]
fn an_interrupted_run_saves_then_exits_non_zero() {
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let (got, out, _tmp) = interrupt_with(signal);
        assert_eq!(got, Some(code), "{signal}");
        assert_eq!(real_checkpoints_are_whole(&out).len(), 1, "{signal}");
        assert!(!out.join("final").exists(), "{signal}: no final model");
    }
}

#[test]
fn generation_and_eval_flags_mean_what_transformers_means() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    save_model_dir(&Gpt2::new(Gpt2Config::tiny(), 3).unwrap(), &model).unwrap();
    let gen = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            p(&model),
            "--prompt",
            "Hello there",
            "--ids",
        ];
        a.extend_from_slice(extra);
        kiln(&a)
    };
    for bad in ["0", "-1", "NaN"] {
        let arg = format!("--repetition-penalty={bad}");
        let o = gen(&[&arg, "--max-new-tokens", "3"]);
        assert!(
            !o.status.success() && stderr(&o).contains("repetition penalty must be"),
            "{bad}: {}",
            stderr(&o)
        );
    }
    // top_k = 0 is "no top-k filtering", so it draws what no top-k draws.
    let sample = [
        "--max-new-tokens",
        "6",
        "--temperature",
        "1.0",
        "--seed",
        "4",
    ];
    let with_zero = gen(&[&sample[..], &["--top-k", "0"]].concat());
    let without = gen(&sample);
    assert!(with_zero.status.success(), "{}", stderr(&with_zero));
    assert_eq!(with_zero.stdout, without.stdout);
    let o = gen(&["--max-new-tokens", "63"]);
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("exceeds the model's context of 64"),
        "{err}"
    );
    assert!(gen(&["--max-new-tokens", "62"]).status.success());

    // eval --json stays JSON when the loss is NaN.
    let m = Gpt2::new(Gpt2Config::tiny(), 3).unwrap();
    let w = &m.ln_f.weight;
    w.set_value(kiln::tensor::Tensor::full(
        &[32],
        f64::NAN,
        kiln::tensor::DType::F32,
    ))
    .unwrap();
    let nan_dir = tmp.path().join("nan");
    save_model_dir(&m, &nan_dir).unwrap();
    let text = tmp.path().join("t.txt");
    std::fs::write(&text, sonnets()).unwrap();
    let o = kiln(&["eval", "--model", p(&nan_dir), "--file", p(&text), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["loss"].is_null() && v["perplexity"].is_null(), "{v}");
    assert!(stderr(&o).contains("warning"), "{}", stderr(&o));
}

// 9. Weights that change underneath.

#[test]
fn a_checkpoint_loaded_for_resume_survives_its_files_being_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = lib_config(tmp.path());
    let mut t = lib_trainer(cfg.clone());
    steps(&mut t, 1);
    t.save_checkpoint().unwrap();
    drop(t);
    let mut t = lib_trainer(cfg);
    let dir = t.resume().unwrap().unwrap();
    // Overwritten in place (as `cp` or `save_pretrained` would): a mapped
    // file would now end the process with SIGBUS at the next read.
    for f in ["model.safetensors", "optimizer.safetensors"] {
        std::fs::File::create(dir.join(f)).unwrap();
    }
    steps(&mut t, 2);
    assert_eq!(t.step(), 3);
}

// The kill -9 loop.

#[test]
fn thirty_random_kills_never_lose_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let train = train_file(tmp.path());
    let out = tmp.path().join("out");
    let args = train_args(
        p(&train),
        p(&out),
        &[
            "--resume",
            "--max-steps",
            "100000",
            "--save-steps",
            "1",
            "--save-total-limit",
            "2",
            "--logging-steps",
            "1",
        ],
    );
    // A fixed generator: the same kill times each run of the test.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut last = 0;
    for kill in 0..30 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + state % 500));
        child.kill().unwrap();
        child.wait().unwrap();
        let steps = real_checkpoints_are_whole(&out);
        assert!(steps.len() <= 3, "kill {kill}: {steps:?} past the limit");
        let newest = steps.last().copied().unwrap_or(0);
        assert!(
            newest >= last,
            "kill {kill}: went back from {last} to {newest}"
        );
        last = newest;
    }
    assert!(last > 0, "no checkpoint was ever written");
    // A run that completes cleans up and ends within the limit.
    let target = (last + 1).to_string();
    let mut done = args.clone();
    let i = done.iter().position(|a| *a == "100000").unwrap();
    done[i] = &target;
    let o = kiln(&done);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(real_checkpoints_are_whole(&out).len() <= 2);
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
    verify_folder(&out.join("final")).unwrap();
}

// The full disk.

#[test]
fn a_full_disk_is_a_clear_error_that_loses_nothing() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs", p(mnt.path())])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: cannot mount a 48 MB tmpfs here (needs root and mount(8))");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path());
    let out = mnt.path().join("out");
    let mut cfg = lib_config(&out);
    cfg.save_steps = 1;
    cfg.max_steps = Some(10);
    let mut t = lib_trainer(cfg);
    let e = t.run().unwrap_err().to_string();
    assert!(e.contains("No space left"), "{e}");
    assert!(e.contains(p(&out)), "the error names the folder: {e}");
    let steps = real_checkpoints_are_whole(&out);
    assert!(!steps.is_empty(), "earlier checkpoints are intact");
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}
