//! Kiln's trainer against what transformers' Trainer did in the runs
//! recorded by `scripts/reference/gen_trainer_fixtures.py`: when it
//! evaluates and saves (`--eval-strategy`, `--save-strategy`), which
//! checkpoints survive rotation (the best one included, under
//! `--load-best-model-at-end`), and `trainer_state.json` in the shape
//! `TrainerState.load_from_json` reads.

use std::collections::BTreeSet;
use std::path::Path;

use kiln_models::gpt2::{load_model_dir, Gpt2, Gpt2Config};
use kiln_models::train::checkpoint::{checkpoints_to_delete, list_checkpoints};
use kiln_models::train::{
    BatchSampling, HfTrainerState, IntervalStrategy, ScheduleKind, TrainConfig, Trainer,
};
use kiln_nn::Module;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/hub")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn steps(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The fixture's model: GPT2Config(n_embd=32, n_layer=2, n_head=2,
/// n_positions=64, vocab_size=100).
fn model() -> Gpt2 {
    let mut c = Gpt2Config::tiny();
    c.vocab_size = 100;
    c.bos_token_id = 99;
    c.eos_token_id = 99;
    c.set_dropout(0.0);
    Gpt2::new(c, 0).unwrap()
}

/// Counting rows as in the fixture: 20 rows of 16 tokens (5 steps per
/// epoch at batch 4) and 8 validation rows.
fn data(rows: usize, seed: u32) -> Vec<u32> {
    (0..rows as u32)
        .flat_map(|r| {
            let start = (r * 37 + seed * 11) % 100;
            (0..16).map(move |k| (start + k) % 100)
        })
        .collect()
}

/// The fixture scenario's TrainingArguments as a TrainConfig.
fn config(out: &Path, args: &Value) -> TrainConfig {
    let strategy = |key: &str, default: IntervalStrategy| match args[key].as_str() {
        None => default,
        Some("no") => IntervalStrategy::No,
        Some("steps") => IntervalStrategy::Steps,
        Some("epoch") => IntervalStrategy::Epoch,
        Some(other) => panic!("strategy {other}"),
    };
    let n = |key: &str| args[key].as_u64().map(|v| v as usize);
    TrainConfig {
        output_dir: out.into(),
        max_steps: n("max_steps"),
        epochs: args["num_train_epochs"].as_f64().unwrap_or(3.0),
        batch_size: 4,
        block_size: 16,
        sampling: BatchSampling::Sequential,
        logging_steps: 1,
        eval_strategy: strategy("eval_strategy", IntervalStrategy::No),
        eval_steps: n("eval_steps"),
        save_strategy: strategy("save_strategy", IntervalStrategy::Steps),
        save_steps: n("save_steps").unwrap_or(500),
        save_total_limit: n("save_total_limit"),
        load_best_model_at_end: args["load_best_model_at_end"].as_bool().unwrap_or(false),
        metric_for_best_model: args["metric_for_best_model"].as_str().map(String::from),
        learning_rate: args["learning_rate"].as_f64().unwrap_or(5e-5),
        schedule: match args["lr_scheduler_type"].as_str() {
            Some("constant") => ScheduleKind::Constant,
            _ => ScheduleKind::Linear,
        },
        weight_decay: 0.0,
        progress: false,
        ..Default::default()
    }
}

fn run(out: &Path, scenario: &Value) -> Trainer {
    run_with(config(out, &scenario["args"]))
}

fn run_with(cfg: TrainConfig) -> Trainer {
    let mut t = Trainer::new(model(), cfg, data(20, 1), Some(data(8, 2))).unwrap();
    t.run().unwrap();
    t
}

fn kiln_evals(t: &Trainer) -> Vec<usize> {
    let mut evals: Vec<usize> = t
        .history()
        .iter()
        .filter(|p| p.eval_loss.is_some())
        .map(|p| p.step)
        .collect();
    // Without an eval strategy Kiln still evaluates once after training
    // (run_clm.py's --do_eval); transformers' Trainer.train does not.
    if t.config().eval_strategy == IntervalStrategy::No {
        assert_eq!(evals, vec![t.step()]);
        evals.clear();
    }
    evals
}

#[test]
fn evaluation_and_saving_follow_the_strategies_as_transformers() {
    let runs = fixture("trainer_runs.json");
    for name in ["steps", "epoch", "no_save", "best"] {
        let scenario = &runs[name];
        let out = tempfile::tempdir().unwrap();
        let t = run(out.path(), scenario);
        let saves = steps(&scenario["saves"]);
        assert_eq!(kiln_evals(&t), steps(&scenario["evals"]), "{name}");
        let left: Vec<usize> = list_checkpoints(out.path()).iter().map(|c| c.0).collect();
        if name != "best" {
            // (Which checkpoint is best depends on the losses, which differ.)
            assert_eq!(left, steps(&scenario["final_checkpoints"]), "{name}");
        }
        // Rotation replayed on transformers' own save sequence and eval
        // losses: the same folders after every save.
        let args = &scenario["args"];
        if let Some(limit) = args["save_total_limit"].as_u64() {
            let losses: Vec<f64> = scenario["eval_losses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let evals = steps(&scenario["evals"]);
            let tracked = args["metric_for_best_model"].is_string();
            let mut best: Option<(f64, usize)> = None;
            let mut have = Vec::new();
            for (i, &s) in saves.iter().enumerate() {
                if let Some(j) = evals.iter().position(|&e| e == s) {
                    if tracked && best.is_none_or(|(b, _)| losses[j] < b) {
                        best = Some((losses[j], s));
                    }
                }
                have.push(s);
                let gone = checkpoints_to_delete(&have, limit as usize, best.map(|b| b.1));
                have.retain(|s| !gone.contains(s));
                assert_eq!(have, steps(&scenario["after_save"][i]), "{name} save {s}");
            }
        }
    }
}

#[test]
fn the_best_checkpoint_survives_and_becomes_the_final_model() {
    let runs = fixture("trainer_runs.json");
    let out = tempfile::tempdir().unwrap();
    // On Kiln's rows, 12 steps at this rate turn the eval loss back up
    // after step 10, so the best checkpoint is not the newest.
    let cfg = TrainConfig {
        learning_rate: 0.03,
        max_steps: Some(12),
        ..config(out.path(), &runs["best"]["args"])
    };
    let t = run_with(cfg);
    let (best_loss, best_step) = t.best().expect("a best checkpoint");
    assert!(
        best_step < t.step(),
        "the best is the newest: nothing tested"
    );
    let evals: Vec<(usize, f64)> = t
        .history()
        .iter()
        .filter_map(|p| Some((p.step, p.eval_loss?)))
        .collect();
    let min = evals.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
    assert_eq!(best_loss, min);
    assert!(evals.contains(&(best_step, best_loss)));
    let best_dir = out.path().join(format!("checkpoint-{best_step}"));
    assert!(best_dir.is_dir(), "the best checkpoint was rotated away");
    // save_total_limit=1: at the end only the best is left.
    let left: Vec<usize> = list_checkpoints(out.path()).iter().map(|c| c.0).collect();
    assert_eq!(left, vec![best_step]);
    // final/ holds the best checkpoint's weights, bit for bit.
    let fin = load_model_dir(out.path().join("final")).unwrap();
    let best = load_model_dir(&best_dir).unwrap();
    for ((name, a), (_, b)) in fin
        .named_parameters()
        .into_iter()
        .zip(best.named_parameters())
    {
        let (a, b) = (a.value(), b.value());
        assert_eq!(
            a.contiguous().as_slice::<f32>().unwrap(),
            b.contiguous().as_slice::<f32>().unwrap(),
            "{name}"
        );
    }
    let state = HfTrainerState::load(&best_dir.join("trainer_state.json")).unwrap();
    assert_eq!(state.best_global_step, Some(best_step));
    assert_eq!(state.best_metric, Some(best_loss));
    assert_eq!(
        state.best_model_checkpoint.as_deref(),
        Some(best_dir.to_str().unwrap())
    );
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn trainer_state_json_has_transformers_shape_and_values() {
    let runs = fixture("trainer_runs.json");
    let theirs = fixture("trainer_state.json");
    let out = tempfile::tempdir().unwrap();
    run(out.path(), &runs["steps"]);
    let path = out.path().join("checkpoint-7/trainer_state.json");
    let ours: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // TrainerState(**json) accepts exactly its own fields.
    assert_eq!(keys(&ours), keys(&theirs));
    for key in [
        "epoch",
        "eval_steps",
        "global_step",
        "logging_steps",
        "max_steps",
        "num_train_epochs",
        "save_steps",
        "stateful_callbacks",
        "train_batch_size",
        "best_global_step",
        "best_metric",
        "best_model_checkpoint",
        "is_hyper_param_search",
        "trial_name",
        "trial_params",
        // 6 × non-embedding parameters × tokens: the same model shape and
        // batches give the same estimate.
        "total_flos",
    ] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    // transformers counts tokens only with include_num_input_tokens_seen;
    // Kiln always does.
    assert_eq!(ours["num_input_tokens_seen"], 7 * 4 * 16);
    let entries = |v: &Value| -> Vec<(u64, String, BTreeSet<String>)> {
        v["log_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let kind = if e.get("eval_loss").is_some() {
                    "eval"
                } else {
                    "train"
                };
                (e["step"].as_u64().unwrap(), kind.to_string(), keys(e))
            })
            .collect()
    };
    assert_eq!(entries(&ours), entries(&theirs));
    for (a, b) in ours["log_history"]
        .as_array()
        .unwrap()
        .iter()
        .zip(theirs["log_history"].as_array().unwrap())
    {
        assert_eq!(a["epoch"], b["epoch"]);
        if a.get("learning_rate").is_some() {
            let (x, y) = (
                a["learning_rate"].as_f64().unwrap(),
                b["learning_rate"].as_f64().unwrap(),
            );
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1e-30), "lr {x} vs {y}");
        }
    }
    HfTrainerState::load(&path).unwrap();
    // At the end, the output folder gets the state with transformers'
    // closing entry, as run_clm.py's trainer.save_state() writes it.
    let root: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("trainer_state.json")).unwrap(),
    )
    .unwrap();
    let last = root["log_history"].as_array().unwrap().last().unwrap();
    let want: BTreeSet<String> = [
        "epoch",
        "step",
        "total_flos",
        "train_loss",
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(keys(last), want);
}

#[test]
fn resume_from_a_named_checkpoint_is_exact() {
    let runs = fixture("trainer_runs.json");
    let a = tempfile::tempdir().unwrap();
    let full = run(a.path(), &runs["steps"]);
    let b = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        model(),
        config(b.path(), &runs["steps"]["args"]),
        data(20, 1),
        Some(data(8, 2)),
    )
    .unwrap();
    t.resume_from(&a.path().join("checkpoint-6")).unwrap();
    assert_eq!(t.step(), 6);
    t.run().unwrap();
    let losses = |t: &Trainer| -> Vec<f64> { t.history().iter().filter_map(|p| p.loss).collect() };
    assert_eq!(losses(&t), losses(&full));
    for ((n, x), (_, y)) in t
        .model
        .named_parameters()
        .into_iter()
        .zip(full.model.named_parameters())
    {
        assert_eq!(
            x.value().contiguous().as_slice::<f32>().unwrap(),
            y.value().contiguous().as_slice::<f32>().unwrap(),
            "{n}"
        );
    }
}

#[test]
fn inconsistent_best_model_settings_are_rejected() {
    let out = tempfile::tempdir().unwrap();
    let base = TrainConfig {
        output_dir: out.path().into(),
        load_best_model_at_end: true,
        eval_strategy: IntervalStrategy::Steps,
        eval_steps: Some(3),
        save_steps: 4,
        ..Default::default()
    };
    let err = base.validate().unwrap_err().to_string();
    assert!(err.contains("multiple of --eval-steps"), "{err}");
    let other = TrainConfig {
        eval_strategy: IntervalStrategy::Epoch,
        eval_steps: None,
        ..base.clone()
    };
    let err = other.validate().unwrap_err().to_string();
    assert!(err.contains("same evaluation and save strategy"), "{err}");
    let metric = TrainConfig {
        save_steps: 6,
        metric_for_best_model: Some("accuracy".into()),
        ..base.clone()
    };
    let err = metric.validate().unwrap_err().to_string();
    assert!(err.contains("eval_loss"), "{err}");
    let ignored = TrainConfig {
        load_best_model_at_end: false,
        eval_strategy: IntervalStrategy::No,
        ..base
    };
    let err = ignored.validate().unwrap_err().to_string();
    assert!(err.contains("would be ignored"), "{err}");
    let no_val = Trainer::new(
        model(),
        TrainConfig {
            output_dir: out.path().into(),
            load_best_model_at_end: true,
            eval_strategy: IntervalStrategy::Steps,
            eval_steps: Some(2),
            save_steps: 2,
            block_size: 16,
            ..Default::default()
        },
        data(20, 1),
        None,
    );
    let err = no_val.err().unwrap().to_string();
    assert!(err.contains("needs validation data"), "{err}");
}
