//! The trainer is generic: a language model defined here, from `kiln_nn`
//! modules, trains through it with evaluation, logging, checkpoints,
//! `save_total_limit` rotation and an exact resume.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kiln_autograd::Var;
use kiln_models::train::checkpoint::{list_checkpoints, FaultPoint};
use kiln_models::train::{BatchSampling, IntervalStrategy, TrainConfig, TrainModel, Trainer};
use kiln_models::Result;
use kiln_nn::{Dropout, Embedding, Forward, Linear, Module, Tanh};
use kiln_tensor::{DType, Rng, Tensor};

const VOCAB: usize = 24;

/// A tiny next-token model: embedding → tanh → dropout → linear head.
struct TinyLm {
    emb: Embedding,
    drop: Dropout,
    head: Linear,
}

impl TinyLm {
    fn new(seed: u64) -> TinyLm {
        let mut rng = Rng::new(seed);
        TinyLm {
            emb: Embedding::new(VOCAB, 16, 0.5, DType::F32, &mut rng).unwrap(),
            drop: Dropout::new(0.1, seed).unwrap(),
            head: Linear::new(16, VOCAB, true, DType::F32, &mut rng).unwrap(),
        }
    }
}

impl Module for TinyLm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        self.emb.visit_params(&kiln_nn::join(prefix, "emb"), f);
        self.head.visit_params(&kiln_nn::join(prefix, "head"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.drop.set_training(training);
    }
}

impl TrainModel for TinyLm {
    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn max_context(&self) -> Option<usize> {
        None
    }

    fn lm_loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Var> {
        let h = Tanh.forward(&self.emb.forward(inputs)?)?;
        let logits = self.head.forward(&self.drop.forward(&h)?)?;
        Ok(logits.cross_entropy(targets, kiln_nn::loss::IGNORE_INDEX)?)
    }

    fn dropouts(&self) -> Vec<&Dropout> {
        vec![&self.drop]
    }
}

/// A text with structure to learn: each token mostly follows from the one
/// before it.
fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut t = vec![0u32];
    while t.len() < n {
        let prev = *t.last().unwrap();
        let next = if rng.uniform() < 0.8 {
            (prev * 5 + 3) % VOCAB as u32
        } else {
            (rng.uniform() * VOCAB as f64) as u32 % VOCAB as u32
        };
        t.push(next);
    }
    t
}

fn config(out: &Path) -> TrainConfig {
    TrainConfig {
        output_dir: out.into(),
        learning_rate: 2e-2,
        weight_decay: 0.01,
        warmup_steps: 2,
        max_steps: Some(10),
        batch_size: 4,
        gradient_accumulation_steps: 2,
        block_size: 8,
        sampling: BatchSampling::Random,
        eval_strategy: IntervalStrategy::Steps,
        eval_steps: Some(5),
        logging_steps: 1,
        save_steps: 2,
        save_total_limit: Some(2),
        seed: 7,
        progress: false,
        ..Default::default()
    }
}

fn trainer(out: &Path, init_seed: u64) -> Trainer<TinyLm> {
    Trainer::new(
        TinyLm::new(init_seed),
        config(out),
        tokens(600, 1),
        Some(tokens(80, 2)),
    )
    .unwrap()
}

fn weights(m: &TinyLm) -> Vec<(String, Vec<f32>)> {
    m.named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.value().to_vec::<f32>().unwrap()))
        .collect()
}

fn train_losses(t: &Trainer<TinyLm>) -> Vec<(usize, f64)> {
    t.history()
        .iter()
        .filter_map(|p| Some((p.step, p.loss?)))
        .collect()
}

#[test]
fn a_user_model_trains_with_checkpoints_rotation_and_logging() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(dir.path(), 3);
    let before = weights(&t.model);
    let summary = t.run().unwrap();
    assert_eq!(summary.steps, 10);
    assert!(!summary.interrupted);
    let losses = train_losses(&t);
    assert_eq!(losses.len(), 10);
    assert!(
        losses[9].1 < losses[0].1,
        "the loss falls: {:?}",
        losses.iter().map(|l| l.1).collect::<Vec<_>>()
    );
    assert!(summary.eval_loss.unwrap().is_finite());
    assert_ne!(weights(&t.model), before);

    // Saved every 2 steps, 2 kept: the newest two.
    let kept: Vec<usize> = list_checkpoints(dir.path())
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(kept, [8, 10]);
    let ck = dir.path().join("checkpoint-10");
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(ck.join(f).is_file(), "{f} in {}", ck.display());
    }
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"loss\"")).count(), 10);
    assert_eq!(log.lines().filter(|l| l.contains("eval_loss")).count(), 2);
    assert!(dir.path().join("loss.svg").is_file());

    // final/ holds the trained weights, which load into a fresh model.
    let final_dir = summary.final_dir.unwrap();
    let fresh = TinyLm::new(99);
    assert_ne!(weights(&fresh), weights(&t.model));
    fresh.load_weights(&final_dir).unwrap();
    assert_eq!(weights(&fresh), weights(&t.model));
}

#[test]
fn a_user_model_resumes_exactly() {
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = trainer(straight_dir.path(), 3);
    straight.run().unwrap();

    // Stopped (as by Ctrl-C) right after its first checkpoint, at step 2.
    let dir = tempfile::tempdir().unwrap();
    let mut stopped = trainer(dir.path(), 3);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    stopped.fault_hook = Box::new(move |p| {
        if p == FaultPoint::FilesWritten {
            flag.store(true, Ordering::SeqCst);
        }
        Ok(())
    });
    let s = stopped.run_until(&stop).unwrap();
    assert!(s.interrupted);
    assert_eq!(s.steps, 2);
    drop(stopped);

    // Another initialisation: every weight must come from the checkpoint.
    let mut resumed = trainer(dir.path(), 11);
    let from = resumed.resume().unwrap().unwrap();
    assert!(from.ends_with("checkpoint-2"));
    assert_eq!(resumed.step(), 2);
    let s = resumed.run().unwrap();
    assert_eq!(s.steps, 10);
    assert_eq!(train_losses(&resumed), train_losses(&straight));
    assert_eq!(
        weights(&resumed.model),
        weights(&straight.model),
        "the resumed run's final weights are the uninterrupted run's, bit for bit"
    );
    assert_eq!(s.eval_loss, straight.evaluate().unwrap());
}

#[test]
fn a_user_model_is_checked_like_gpt2() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = tokens(100, 1);
    bad[5] = VOCAB as u32;
    let e = Trainer::new(TinyLm::new(1), config(dir.path()), bad, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("outside the model's vocabulary of 24"), "{e}");

    // Gradient checkpointing is GPT-2's; a model without it says so.
    let cfg = TrainConfig {
        gradient_checkpointing: true,
        ..config(dir.path())
    };
    let e = Trainer::new(TinyLm::new(1), cfg, tokens(100, 1), None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not support gradient checkpointing"), "{e}");

    // Weights of another shape are refused, naming the tensor.
    let other = tempfile::tempdir().unwrap();
    let mut wide = TinyLm::new(1);
    wide.head = Linear::new(16, VOCAB + 1, true, DType::F32, &mut Rng::new(0)).unwrap();
    wide.save_pretrained(other.path()).unwrap();
    let e = TinyLm::new(1)
        .load_weights(other.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("head.weight"), "{e}");
}
