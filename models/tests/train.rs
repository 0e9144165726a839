//! The trainer: parity with transformers + torch AdamW, exact resume,
//! crash-safe checkpoints, divergence and bad-input handling.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::{parity_batch, parity_config, parity_trainer, root};

use kiln_models::gpt2::{load_model_dir, Gpt2, Gpt2Config};
use kiln_models::tokenizer::Tokenizer;
use kiln_models::train::checkpoint::{list_checkpoints, FaultPoint};
use kiln_models::train::{BatchSampling, IntervalStrategy, ScheduleKind, TrainConfig, Trainer};
use kiln_tensor::testing::load_safetensors;
use kiln_tensor::Tensor;

#[test]
fn twenty_steps_match_transformers_and_torch_adamw() {
    // scripts/reference/gen_train_fixtures.py: tiny-a, dropout off, AdamW
    // lr 3e-3 wd 0.01 (matrices only), linear schedule with 3 warmup steps,
    // clipping at 1.0.
    let f = load_safetensors(root().join("fixtures/train/parity.safetensors")).unwrap();
    let mut model = load_model_dir(root().join("fixtures/gpt2/tiny-a")).unwrap();
    model.set_dropout(0.0).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut trainer = parity_trainer(model, parity_config(out.path(), 3e-3));
    let losses = f["losses"].to_vec::<f64>().unwrap();
    let norms = f["grad_norms"].to_vec::<f64>().unwrap();
    for step in 0..20 {
        let s = trainer.train_step(&[parity_batch(&f, step)]).unwrap();
        let rel = (s.loss - losses[step]).abs() / losses[step];
        assert!(
            rel <= 1e-4,
            "step {step}: loss {} vs transformers {} (rel {rel:e})",
            s.loss,
            losses[step]
        );
        let rel = (s.grad_norm - norms[step]).abs() / norms[step];
        assert!(
            rel <= 1e-3,
            "step {step}: grad norm {} vs torch {}",
            s.grad_norm,
            norms[step]
        );
    }
    assert!(losses[19] < losses[0] - 1.0, "the fixture run learns");
}

#[test]
fn twenty_bf16_steps_match_torch_autocast() {
    // scripts/reference/gen_train_bf16_fixtures.py: the run above with the
    // forward pass under torch.autocast("cpu", bfloat16). Tolerance: torch
    // rounds each product's result to bf16 and Kiln keeps it f32, so the two
    // runs differ by about as much as torch's autocast run differs from its
    // f32 run (d, measured on the fixtures themselves); allow 2·d on top of
    // the f32 parity tolerance.
    let f = load_safetensors(root().join("fixtures/train/parity.safetensors")).unwrap();
    let fb = load_safetensors(root().join("fixtures/train/parity_bf16.safetensors")).unwrap();
    let (f32_losses, losses) = (
        f["losses"].to_vec::<f64>().unwrap(),
        fb["losses"].to_vec::<f64>().unwrap(),
    );
    let d = f32_losses
        .iter()
        .zip(&losses)
        .map(|(a, b)| (a - b).abs() / b)
        .fold(0.0, f64::max);
    let tol = 1e-4 + 2.0 * d;
    let mut model = load_model_dir(root().join("fixtures/gpt2/tiny-a")).unwrap();
    model.set_dropout(0.0).unwrap();
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        bf16: true,
        ..parity_config(out.path(), 3e-3)
    };
    let mut trainer = parity_trainer(model, cfg);
    let mut f32_run_differs = false;
    for step in 0..20 {
        let s = trainer.train_step(&[parity_batch(&f, step)]).unwrap();
        let rel = (s.loss - losses[step]).abs() / losses[step];
        assert!(
            rel <= tol,
            "step {step}: bf16 loss {} vs torch autocast {} (rel {rel:e} > {tol:e})",
            s.loss,
            losses[step]
        );
        f32_run_differs |= s.loss != f32_losses[step];
    }
    assert!(f32_run_differs, "the bf16 run computes in bf16");
}

fn sonnet_ids() -> Vec<u32> {
    let text = std::fs::read_to_string(root().join("data/shakespeare/sonnets.txt")).unwrap();
    Tokenizer::gpt2().encode(&text[..20_000])
}

fn small_config(out: &Path, steps: usize, save_steps: usize) -> TrainConfig {
    TrainConfig {
        output_dir: out.into(),
        learning_rate: 1e-3,
        weight_decay: 0.1,
        warmup_steps: 2,
        schedule: ScheduleKind::Cosine,
        max_steps: Some(steps),
        batch_size: 2,
        block_size: 16,
        sampling: BatchSampling::Random,
        save_steps,
        save_total_limit: Some(2),
        logging_steps: 1,
        eval_strategy: IntervalStrategy::Steps,
        eval_steps: Some(4),
        progress: false,
        ..Default::default()
    }
}

fn tiny_model() -> Gpt2 {
    // Dropout on, so resuming must restore the generators too.
    Gpt2::new(Gpt2Config::tiny(), 7).unwrap()
}

fn train_losses(trainer: &Trainer) -> Vec<f64> {
    trainer.history().iter().filter_map(|p| p.loss).collect()
}

#[test]
fn resumed_run_reproduces_the_uninterrupted_one() {
    resume_is_exact(false);
}

#[test]
fn a_resumed_bf16_run_reproduces_the_uninterrupted_one() {
    resume_is_exact(true);
}

fn resume_is_exact(bf16: bool) {
    let small_config = |out: &Path, steps: usize, save: usize| TrainConfig {
        bf16,
        ..small_config(out, steps, save)
    };
    let ids = sonnet_ids();
    let (train, val) = (
        ids[..ids.len() - 400].to_vec(),
        ids[ids.len() - 400..].to_vec(),
    );
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = Trainer::new(
        tiny_model(),
        small_config(straight_dir.path(), 12, 4),
        train.clone(),
        Some(val.clone()),
    )
    .unwrap();
    straight.run().unwrap();
    let want = train_losses(&straight);
    assert_eq!(want.len(), 12);

    // A run "killed" after step 6, having saved checkpoint-4 on the way.
    let dir = tempfile::tempdir().unwrap();
    let mut killed = Trainer::new(
        tiny_model(),
        small_config(dir.path(), 12, 4),
        train.clone(),
        Some(val.clone()),
    )
    .unwrap();
    let mut taken = Vec::new();
    while killed.step() < 6 {
        taken.push(killed_step(&mut killed));
        if killed.step() == 4 {
            killed.save_checkpoint().unwrap();
        }
    }
    drop(killed);
    assert_eq!(
        &taken[..],
        &want[..6],
        "the partial run matches before the kill"
    );
    assert_eq!(list_checkpoints(dir.path()).last().unwrap().0, 4);

    let mut resumed = Trainer::new(
        tiny_model(),
        small_config(dir.path(), 12, 4),
        train,
        Some(val),
    )
    .unwrap();
    let from = resumed.resume().unwrap().unwrap();
    assert!(from.ends_with("checkpoint-4"));
    assert_eq!(resumed.step(), 4);
    resumed.run().unwrap();
    // The killed run was driven step by step (no history logged), so the
    // resumed history holds steps 5..=12: they must equal the uninterrupted
    // run's, bit for bit.
    let got = train_losses(&resumed);
    assert_eq!(
        got,
        want[4..],
        "resumed losses equal the uninterrupted run's, bit for bit"
    );
}

/// One optimizer step the way `Trainer::run` takes it.
fn killed_step(t: &mut Trainer) -> f64 {
    let b = t.next_batches().unwrap();
    t.train_step(&b).unwrap().loss
}

#[test]
fn an_interrupted_checkpoint_write_leaves_earlier_ones_whole() {
    let ids = sonnet_ids();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        tiny_model(),
        small_config(dir.path(), 8, 100),
        ids.clone(),
        None,
    )
    .unwrap();
    for _ in 0..2 {
        killed_step(&mut t);
    }
    let good = t.save_checkpoint().unwrap();
    for _ in 0..2 {
        killed_step(&mut t);
    }
    // Crash after all files of checkpoint-4 are written, before the rename.
    t.fault_hook = Box::new(|at| match at {
        FaultPoint::FilesWritten => Err(std::io::Error::other("simulated kill")),
        _ => Ok(()),
    });
    let e = t.save_checkpoint().unwrap_err().to_string();
    assert!(
        e.contains("simulated kill") && e.contains("checkpoint-4"),
        "{e}"
    );
    let listed = list_checkpoints(dir.path());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1, good);
    assert!(
        dir.path().join("checkpoint-4.kiln-tmp").exists(),
        "the half-written folder keeps its temporary name"
    );
    // The surviving checkpoint loads, and a new run resumes from it.
    load_model_dir(&good).unwrap();
    let mut again =
        Trainer::new(tiny_model(), small_config(dir.path(), 8, 100), ids, None).unwrap();
    assert_eq!(again.resume().unwrap().unwrap(), good);
    assert_eq!(again.step(), 2);
}

#[test]
fn rotation_keeps_the_newest_checkpoints() {
    let ids = sonnet_ids();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path(), 7, 2);
    cfg.eval_steps = None;
    let mut t = Trainer::new(tiny_model(), cfg, ids, None).unwrap();
    let s = t.run().unwrap();
    let steps: Vec<usize> = list_checkpoints(dir.path())
        .into_iter()
        .map(|c| c.0)
        .collect();
    // transformers saves at the last step too: 2, 4, 6, 7, two kept.
    assert_eq!(steps, vec![6, 7]);
    let final_dir = s.final_dir.unwrap();
    load_model_dir(&final_dir).unwrap();
    assert!(dir.path().join("loss.svg").is_file());
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"loss\"")).count(), 7);
}

#[test]
fn stop_flag_saves_and_exits() {
    let ids = sonnet_ids();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(tiny_model(), small_config(dir.path(), 50, 100), ids, None).unwrap();
    let s = t.run_until(&AtomicBool::new(true)).unwrap();
    assert!(s.interrupted && s.steps == 1);
    assert_eq!(list_checkpoints(dir.path()).last().unwrap().0, 1);
}

#[test]
fn a_nan_loss_stops_without_updating() {
    let ids = sonnet_ids();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let w = model.wte.weight.clone();
    let mut t = Trainer::new(model, small_config(dir.path(), 5, 100), ids, None).unwrap();
    killed_step(&mut t);
    t.save_checkpoint().unwrap();
    let mut bad = w.value().to_vec::<f32>().unwrap();
    bad.iter_mut().for_each(|v| *v = f32::NAN);
    w.set_value(Tensor::from_vec(bad, w.value().shape()).unwrap())
        .unwrap();
    let e = t.run().unwrap_err().to_string();
    assert!(
        e.contains("diverged at step 2") && e.contains("checkpoint-1"),
        "{e}"
    );
    assert_eq!(t.step(), 1);
}

#[test]
fn bad_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Trainer::new(
        tiny_model(),
        small_config(dir.path(), 5, 100),
        vec![1, 2, 3],
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("too short for one block"), "{e}");
    let mut cfg = small_config(dir.path(), 5, 100);
    cfg.block_size = 65;
    let e = Trainer::new(tiny_model(), cfg, sonnet_ids(), None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("exceeds the model's context of 64"), "{e}");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e =
        kiln_models::train::load_tokens(&[empty], &Tokenizer::gpt2(), &dir.path().join("c.tokens"))
            .unwrap_err()
            .to_string();
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
}
