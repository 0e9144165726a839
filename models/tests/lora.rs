//! LoRA against PEFT (`scripts/reference/gen_lora_fixtures.py`): an adapter
//! PEFT saved gives PEFT's logits in Kiln, merged or not; what Kiln saves
//! has PEFT's keys, shapes and config and loads back to the same logits; and
//! twenty LoRA steps match PEFT + torch AdamW step for step.

mod common;

use common::{parity_batch, parity_config, parity_trainer, root};
use kiln_models::gpt2::{is_lora_param, load_model_dir, ForwardOptions, Gpt2, LoraConfig};
use kiln_nn::state_dict::StateDict;
use kiln_nn::Module;
use kiln_tensor::testing::{check_close, load_safetensors};
use kiln_tensor::Tensor;

fn base() -> Gpt2 {
    let mut m = load_model_dir(root().join("fixtures/gpt2/tiny-a")).unwrap();
    m.set_dropout(0.0).unwrap();
    m.eval();
    m
}

fn logits(m: &Gpt2, ids: &Tensor) -> Tensor {
    kiln_autograd::no_grad(|| m.forward(ids, ForwardOptions::default()))
        .unwrap()
        .value()
}

#[test]
fn a_peft_adapter_gives_peft_logits_merged_or_not() {
    let r = load_safetensors(root().join("fixtures/lora/reference.safetensors")).unwrap();
    let mut m = base();
    let cfg = m
        .load_adapter(&root().join("fixtures/lora/adapter"), false)
        .unwrap();
    assert_eq!((cfg.r, cfg.alpha), (4, 8.0));
    check_close(&logits(&m, &r["ids"]), &r["logits"], 0.0, 1e-4).unwrap();
    // Only the adapters are trainable, and not even they (inference).
    assert!(m.parameters().iter().all(|p| !p.requires_grad()));

    // Saved by Kiln: PEFT's keys, shapes and config fields; loads back.
    let out = tempfile::tempdir().unwrap();
    m.save_adapter(out.path()).unwrap();
    let theirs =
        StateDict::load(root().join("fixtures/lora/adapter/adapter_model.safetensors")).unwrap();
    let ours = StateDict::load(out.path().join("adapter_model.safetensors")).unwrap();
    let shapes = |d: &StateDict| -> Vec<(String, Vec<usize>)> {
        d.iter()
            .map(|(k, t)| (k.to_string(), t.shape().to_vec()))
            .collect()
    };
    assert_eq!(shapes(&ours), shapes(&theirs));
    let conf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    let peft: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/lora/adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "peft_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "fan_in_fan_out",
        "bias",
        "task_type",
        "base_model_name_or_path",
    ] {
        assert_eq!(conf[key], peft[key], "{key}");
    }
    let mut again = base();
    again.load_adapter(out.path(), false).unwrap();
    check_close(&logits(&again, &r["ids"]), &r["logits"], 0.0, 1e-4).unwrap();

    // Merged: a plain GPT-2 with PEFT's merge_and_unload logits, saved in
    // full and loaded back by the ordinary loader.
    m.merge_lora().unwrap();
    assert!(m.lora.is_none());
    check_close(&logits(&m, &r["ids"]), &r["merged_logits"], 0.0, 1e-4).unwrap();
    let merged = tempfile::tempdir().unwrap();
    kiln_models::gpt2::save_model_dir(&m, merged.path()).unwrap();
    let loaded = load_model_dir(merged.path()).unwrap();
    check_close(&logits(&loaded, &r["ids"]), &r["merged_logits"], 0.0, 1e-4).unwrap();
}

#[test]
fn twenty_lora_steps_match_peft_and_torch_adamw() {
    let r = load_safetensors(root().join("fixtures/lora/reference.safetensors")).unwrap();
    let parity = load_safetensors(root().join("fixtures/train/parity.safetensors")).unwrap();
    let mut m = base();
    m.load_adapter(&root().join("fixtures/lora/adapter"), true)
        .unwrap();
    // Only the adapters train: PEFT's 12 tensors.
    let peft =
        StateDict::load(root().join("fixtures/lora/adapter/adapter_model.safetensors")).unwrap();
    let names = m.named_parameters();
    assert_eq!(
        names.iter().filter(|(n, _)| is_lora_param(n)).count(),
        peft.len()
    );
    for (n, p) in &names {
        assert_eq!(p.requires_grad(), is_lora_param(n), "{n}");
    }
    let frozen = base_weights(&m);
    let out = tempfile::tempdir().unwrap();
    let mut trainer = parity_trainer(m, parity_config(out.path(), 3e-2));
    let losses = r["losses"].to_vec::<f64>().unwrap();
    let norms = r["grad_norms"].to_vec::<f64>().unwrap();
    for step in 0..20 {
        let s = trainer.train_step(&[parity_batch(&parity, step)]).unwrap();
        let rel = (s.loss - losses[step]).abs() / losses[step];
        assert!(
            rel <= 1e-4,
            "step {step}: loss {} vs PEFT {} (rel {rel:e})",
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
    // The base did not move.
    assert!(base_weights(&trainer.model) == frozen);
}

/// Every weight but the adapters', as values.
fn base_weights(m: &Gpt2) -> Vec<Vec<f32>> {
    m.named_parameters()
        .iter()
        .filter(|(n, _)| !is_lora_param(n))
        .map(|(_, p)| p.value().to_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn targets_follow_peft_matching_and_bad_configs_are_clear_errors() {
    let mut m = base();
    let n = m
        .add_lora(
            &LoraConfig {
                target_modules: vec!["c_proj".into()],
                ..Default::default()
            },
            0,
        )
        .unwrap();
    // c_proj is both the attention's and the MLP's projection, in 2 blocks.
    assert_eq!(n, 4);
    let err = base()
        .add_lora(
            &LoraConfig {
                target_modules: vec!["q_proj".into()],
                ..Default::default()
            },
            0,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("match no layer"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("fixtures/lora/adapter/adapter_model.safetensors"),
        dir.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut conf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/lora/adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    conf["use_dora"] = true.into();
    std::fs::write(dir.path().join("adapter_config.json"), conf.to_string()).unwrap();
    let err = base()
        .load_adapter(dir.path(), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("use_dora") && err.contains("adapter_config.json"),
        "{err}"
    );
    conf["use_dora"] = false.into();
    conf["r"] = 8.into();
    std::fs::write(dir.path().join("adapter_config.json"), conf.to_string()).unwrap();
    let err = base()
        .load_adapter(dir.path(), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lora_A") && err.contains("[8, 32]"), "{err}");
}
