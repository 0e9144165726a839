//! What the parity tests share: the repository root, transformers' label
//! shift, and the 20-step run of `scripts/reference/gen_train_fixtures.py`
//! (its batches, and its AdamW / schedule settings as a `TrainConfig`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_models::gpt2::Gpt2;
use kiln_models::train::{Batch, ScheduleKind, TrainConfig, Trainer};
use kiln_tensor::Tensor;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Transformers' labels = inputs, shifted inside the model: targets are the
/// next tokens, the last position predicts nothing.
pub fn lm_batch(x: &Tensor) -> Batch {
    let (b, t) = (x.shape()[0], x.shape()[1]);
    let v = x.to_vec::<i64>().unwrap();
    let mut targets = Vec::with_capacity(b * t);
    for r in 0..b {
        targets.extend_from_slice(&v[r * t + 1..(r + 1) * t]);
        targets.push(-100);
    }
    Batch {
        input: x.clone(),
        targets: Tensor::from_vec(targets, &[b, t]).unwrap(),
    }
}

/// The fixture run's settings: AdamW with weight decay 0.01 on matrices, a
/// linear schedule with 3 warmup steps, clipping at 1.0, 20 steps of 2 × 16
/// tokens, at `learning_rate`.
pub fn parity_config(out: &Path, learning_rate: f64) -> TrainConfig {
    TrainConfig {
        output_dir: out.into(),
        learning_rate,
        weight_decay: 0.01,
        warmup_steps: 3,
        schedule: ScheduleKind::Linear,
        max_steps: Some(20),
        batch_size: 2,
        block_size: 16,
        progress: false,
        ..Default::default()
    }
}

/// A trainer for `model` under `cfg`; its own data is a placeholder, the
/// steps are fed [`parity_batch`]es.
pub fn parity_trainer(model: Gpt2, cfg: TrainConfig) -> Trainer {
    let data: Vec<u32> = (0..100).map(|i| i % 50).collect();
    Trainer::new(model, cfg, data, None).unwrap()
}

/// The micro-batch of `step` in the fixture's `batches` `(20, 2, 16)`.
pub fn parity_batch(fixture: &BTreeMap<String, Tensor>, step: usize) -> Batch {
    let x = fixture["batches"]
        .narrow(0, step, 1)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .contiguous();
    lm_batch(&x)
}
