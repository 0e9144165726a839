//! Train your own model with Kiln's `Trainer`: a character-level model
//! defined here from `kiln::nn` modules (an embedding, tanh, a linear head)
//! implements `TrainModel` — its loss from token ids — and gets what GPT-2
//! gets from the trainer: AdamW with warmup and cosine decay, clipping,
//! evaluation, `log.jsonl`, checkpoints with `save_total_limit` rotation,
//! exact resume and `final/`. Then the trained weights are loaded into a
//! fresh model and it writes a few characters.
//!
//! Run:  cargo run --release --example train_custom_model
//!
//! Book: docs/src/training.md. Code: models/src/train/model.rs.

use std::path::PathBuf;

use kiln::autograd::Var;
use kiln::models::train::{BatchSampling, ScheduleKind, TrainConfig, TrainModel, Trainer};
use kiln::nn::{Embedding, Forward, Linear, Module, Tanh};
use kiln::tensor::{DType, Rng, Tensor};

/// Token ids are bytes of ASCII text.
const VOCAB: usize = 128;

const TEXT: &str = "From fairest creatures we desire increase, \
That thereby beauty's rose might never die, \
But as the riper should by time decease, \
His tender heir might bear his memory: \
But thou contracted to thine own bright eyes, \
Feed'st thy light's flame with self-substantial fuel, \
Making a famine where abundance lies, \
Thy self thy foe, to thy sweet self too cruel. ";

// ANCHOR: model
/// A character model: each character's embedding, through tanh, scores
/// the next character.
struct CharModel {
    emb: Embedding,
    head: Linear,
}

impl CharModel {
    fn new(seed: u64) -> kiln::nn::Result<CharModel> {
        let mut rng = Rng::new(seed);
        Ok(CharModel {
            emb: Embedding::new(VOCAB, 48, 0.5, DType::F32, &mut rng)?,
            head: Linear::new(48, VOCAB, true, DType::F32, &mut rng)?,
        })
    }

    /// Scores of the next character at each position: `[B, T] → [B, T, V]`.
    fn logits(&self, ids: &Tensor) -> kiln::nn::Result<Var> {
        self.head.forward(&Tanh.forward(&self.emb.forward(ids)?)?)
    }
}

impl Module for CharModel {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        self.emb.visit_params(&kiln::nn::join(prefix, "emb"), f);
        self.head.visit_params(&kiln::nn::join(prefix, "head"), f);
    }
}

impl TrainModel for CharModel {
    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn max_context(&self) -> Option<usize> {
        None // it looks at one character; any row length works
    }

    fn lm_loss(&self, inputs: &Tensor, targets: &Tensor) -> kiln::models::Result<Var> {
        let logits = self.logits(inputs)?;
        Ok(logits.cross_entropy(targets, kiln::nn::loss::IGNORE_INDEX)?)
    }
}
// ANCHOR_END: model

fn main() -> anyhow::Result<()> {
    let ids: Vec<u32> = TEXT.bytes().map(u32::from).collect();
    let split = ids.len() * 9 / 10;
    let (train, val) = (ids[..split].to_vec(), ids[split..].to_vec());
    let out = PathBuf::from("runs/train-custom-model-example");

    // ANCHOR: run
    let cfg = TrainConfig {
        output_dir: out.clone(),
        learning_rate: 3e-2,
        warmup_steps: 10,
        schedule: ScheduleKind::Cosine,
        max_steps: Some(200),
        batch_size: 8,
        block_size: 32,
        sampling: BatchSampling::Random,
        logging_steps: 50,
        save_steps: 50,
        save_total_limit: Some(2),
        progress: false,
        overwrite_output_dir: true, // each run of the example starts afresh
        ..Default::default()
    };
    let mut trainer = Trainer::new(CharModel::new(0)?, cfg, train, Some(val))?;
    let summary = trainer.run()?;
    // ANCHOR_END: run
    let first = trainer.history().iter().find_map(|p| p.loss).unwrap_or(0.0);
    println!(
        "{} steps: training loss {first:.3} → {:.3}, validation loss {:.3} (uniform guess: ln {VOCAB} = {:.3})",
        summary.steps,
        summary.last_loss.unwrap_or(f64::NAN),
        summary.eval_loss.unwrap_or(f64::NAN),
        (VOCAB as f64).ln()
    );
    let kept: Vec<String> = kiln::models::train::checkpoint::list_checkpoints(&out)
        .iter()
        .map(|(_, dir)| dir.display().to_string())
        .collect();
    println!("checkpoints kept (save_total_limit 2): {}", kept.join(", "));

    // The final model loads into a fresh one, which writes a line: each
    // next character drawn from its softmax (temperature 0.7).
    let model = CharModel::new(1)?;
    model.load_weights(&summary.final_dir.expect("a completed run has final/"))?;
    let mut rng = Rng::new(7);
    let mut text = b"Th".to_vec();
    for _ in 0..40 {
        let last = i64::from(*text.last().expect("not empty"));
        let scores = model.logits(&Tensor::from_vec(vec![last], &[1, 1])?)?;
        let scores = scores.value().to_vec::<f32>()?;
        let max = scores.iter().fold(f32::MIN, |m, &s| m.max(s));
        let weights: Vec<f64> = scores
            .iter()
            .map(|&s| (f64::from(s - max) / 0.7).exp())
            .collect();
        let mut r = rng.uniform() * weights.iter().sum::<f64>();
        let next = weights
            .iter()
            .position(|&w| {
                r -= w;
                r <= 0.0
            })
            .unwrap_or(VOCAB - 1);
        text.push(next as u8);
    }
    println!("sample: {:?}", String::from_utf8_lossy(&text));
    Ok(())
}
