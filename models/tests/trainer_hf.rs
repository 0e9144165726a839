//! What the trainer writes, as transformers expects to find it: the
//! tokenizer files in every checkpoint and in `final/`.

use kiln_models::gpt2::{Gpt2, Gpt2Config};
use kiln_models::tokenizer::Tokenizer;
use kiln_models::train::checkpoint::list_checkpoints;
use kiln_models::train::{TrainConfig, Trainer};

/// The files `tokenizer.save_pretrained` and `model.save_pretrained` leave,
/// which `pipeline("text-generation", model=dir)` reads.
const HF_FILES: [&str; 8] = [
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

fn tiny_run(out: &std::path::Path, steps: usize) -> TrainConfig {
    TrainConfig {
        output_dir: out.into(),
        max_steps: Some(steps),
        batch_size: 2,
        block_size: 16,
        save_steps: 2,
        progress: false,
        ..Default::default()
    }
}

#[test]
fn checkpoints_and_final_carry_the_tokenizer() {
    let out = tempfile::tempdir().unwrap();
    let model = Gpt2::new(Gpt2Config::tiny(), 1).unwrap();
    let tok = Tokenizer::gpt2();
    let ids: Vec<u32> = tok
        .encode(&"Shall I compare thee to a summer's day? ".repeat(20))
        .into_iter()
        .map(|i| i % model.config.vocab_size as u32)
        .collect();
    let mut t = Trainer::new(model, tiny_run(out.path(), 4), ids, None)
        .unwrap()
        .with_tokenizer(tok.clone());
    t.run().unwrap();
    let mut dirs: Vec<_> = list_checkpoints(out.path())
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    dirs.push(out.path().join("final"));
    for dir in &dirs {
        for f in HF_FILES {
            assert!(dir.join(f).is_file(), "{}/{f} missing", dir.display());
        }
        let again = Tokenizer::from_dir(dir).unwrap();
        assert_eq!(again.encode("Shall I"), tok.encode("Shall I"));
    }
}
