//! The same seed gives bit-identical training losses at 1 and at 2 threads,
//! with and without gradient checkpointing: no kernel splits a reduction in
//! a thread-count–dependent way, and a recomputed block is the same block.
//! Alone in its file because it changes the global thread count.

use kiln_models::gpt2::{Gpt2, Gpt2Config};
use kiln_models::tokenizer::Tokenizer;
use kiln_models::train::{BatchSampling, TrainConfig, Trainer};

fn losses(threads: usize, gradient_checkpointing: bool) -> Vec<f64> {
    kiln_tensor::parallel::set_num_threads(threads);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/shakespeare/sonnets.txt"
    ))
    .unwrap();
    let ids = Tokenizer::gpt2().encode(&text[..30_000]);
    let out = tempfile::tempdir().unwrap();
    // Big enough that every kernel takes its parallel path (matmuls of
    // 4·32 rows, softmax and cross-entropy over 50257 classes).
    let cfg = TrainConfig {
        output_dir: out.path().into(),
        learning_rate: 1e-3,
        max_steps: Some(4),
        batch_size: 4,
        block_size: 32,
        sampling: BatchSampling::Random,
        logging_steps: 1,
        save_steps: 1000,
        progress: false,
        gradient_checkpointing,
        ..Default::default()
    };
    let mut t = Trainer::new(Gpt2::new(Gpt2Config::tiny(), 3).unwrap(), cfg, ids, None).unwrap();
    t.run().unwrap();
    t.history().iter().filter_map(|p| p.loss).collect()
}

#[test]
fn losses_are_identical_at_one_and_two_threads() {
    let one = losses(1, false);
    let two = losses(2, false);
    assert_eq!(one.len(), 4);
    assert_eq!(one, two);
    assert_eq!(losses(1, true), one);
    assert_eq!(losses(2, true), one);
}
