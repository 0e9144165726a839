//! Gradient checkpointing changes memory, never numbers: every gradient of
//! a GPT-2 step with dropout on is bit-identical with and without it, in
//! f32 and under bf16 autocast, and so are the weights after several
//! optimizer steps with gradient accumulation.

use kiln_autograd::autocast_bf16;
use kiln_models::gpt2::{ForwardOptions, Gpt2, Gpt2Config};
use kiln_models::train::{BatchSampling, TrainConfig, Trainer};
use kiln_nn::Module;
use kiln_tensor::testing::f32_bits;
use kiln_tensor::{DType, Rng, Tensor};

fn model() -> Gpt2 {
    let mut cfg = Gpt2Config::tiny();
    cfg.set_dropout(0.2);
    Gpt2::new(cfg, 11).unwrap()
}

/// (name, gradient bits) of every parameter after one forward + backward.
fn gradients(checkpointing: bool, bf16: bool) -> Vec<(String, Vec<u32>)> {
    let mut m = model();
    m.train();
    if checkpointing {
        m.gradient_checkpointing_enable();
    }
    let mut rng = Rng::new(4);
    let ids: Vec<i64> = (0..2 * 24)
        .map(|_| (rng.next_u64() % m.config.vocab_size as u64) as i64)
        .collect();
    let ids = Tensor::from_vec(ids, &[2, 24]).unwrap();
    let step = || -> kiln_models::Result<kiln_autograd::Var> {
        let logits = m.forward(&ids, ForwardOptions::default())?;
        Ok(logits.cross_entropy(&ids, kiln_nn::loss::IGNORE_INDEX)?)
    };
    let loss = if bf16 { autocast_bf16(step) } else { step() };
    loss.unwrap().backward().unwrap();
    m.named_parameters()
        .into_iter()
        .map(|(n, p)| {
            (
                n,
                f32_bits(&p.grad().expect("every parameter has a gradient")),
            )
        })
        .collect()
}

#[test]
fn gradients_are_bit_identical_with_dropout() {
    for bf16 in [false, true] {
        let plain = gradients(false, bf16);
        let ckpt = gradients(true, bf16);
        assert_eq!(plain.len(), ckpt.len());
        for ((name, a), (_, b)) in plain.iter().zip(&ckpt) {
            assert!(a == b, "{name} differs (bf16 {bf16})");
        }
    }
}

fn trained(checkpointing: bool) -> (Vec<f64>, Vec<Vec<u32>>) {
    let out = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(8);
    let ids: Vec<u32> = (0..4000).map(|_| (rng.next_u64() % 1000) as u32).collect();
    let cfg = TrainConfig {
        output_dir: out.path().into(),
        learning_rate: 1e-3,
        max_steps: Some(3),
        batch_size: 2,
        gradient_accumulation_steps: 2,
        block_size: 32,
        sampling: BatchSampling::Random,
        logging_steps: 1,
        save_steps: 1000,
        progress: false,
        gradient_checkpointing: checkpointing,
        ..Default::default()
    };
    let mut t = Trainer::new(model(), cfg, ids, None).unwrap();
    t.run().unwrap();
    let losses = t.history().iter().filter_map(|p| p.loss).collect();
    let weights = t
        .model
        .parameters()
        .iter()
        .map(|p| f32_bits(&p.value()))
        .collect();
    (losses, weights)
}

#[test]
fn training_with_checkpointing_reaches_the_same_weights() {
    assert!(trained(true) == trained(false));
}

#[test]
fn checkpointing_keeps_only_block_inputs_on_the_tape() {
    let mut m = model();
    m.train();
    let ids = Tensor::zeros(&[1, 16], DType::I64);
    kiln_autograd::clear_tape();
    let _ = m.forward(&ids, ForwardOptions::default()).unwrap();
    let plain = kiln_autograd::tape_len();
    kiln_autograd::clear_tape();
    m.gradient_checkpointing_enable();
    let _ = m.forward(&ids, ForwardOptions::default()).unwrap();
    let ckpt = kiln_autograd::tape_len();
    kiln_autograd::clear_tape();
    // One node per block instead of each block's dozens.
    let per_block = (plain - ckpt) / m.config.n_layer;
    assert!(per_block > 15, "plain {plain} nodes, checkpointed {ckpt}");
}
