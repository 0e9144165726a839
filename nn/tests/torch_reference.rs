//! kiln-nn against PyTorch / transformers on the same inputs.
//!
//! Fixtures: `scripts/reference/gen_nn_fixtures.py` (torch 2.15,
//! transformers 5.x). Tolerances: forward values and gradients of single
//! modules within 1e-5 relative (floor 1e-7·max|expected|); optimizer steps
//! within 1e-6 relative (same f32 arithmetic order as torch's single-tensor
//! path); schedules to 1e-12 (pure f64 arithmetic); the 20-step training
//! run within 1e-5 relative on every loss and final weight.

use std::collections::BTreeMap;

use kiln_autograd::Var;
use kiln_nn::optim::{
    clip_grad_norm, decay_groups, Adam, AdamConfig, AdamW, LrSchedule, Optimizer, ParamGroup, Sgd,
    SgdConfig,
};
use kiln_nn::{
    CausalSelfAttention, Conv1D, Dropout, Embedding, Forward, LayerNorm, Linear, Mlp, Module,
};
use kiln_tensor::testing::{check_close, load_safetensors};
use kiln_tensor::{DType, Tensor};

fn fixture(name: &str) -> BTreeMap<String, Tensor> {
    load_safetensors(format!(
        "{}/../fixtures/nn/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[track_caller]
fn close(what: &str, actual: &Tensor, expected: &Tensor, rtol: f64) {
    let m = expected
        .to_dtype(DType::F64)
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .fold(0.0f64, |a, x| a.max(x.abs()));
    if let Err(r) = check_close(actual, expected, rtol, rtol * 0.01 * m) {
        panic!("{what}: {r}");
    }
}

fn p(f: &BTreeMap<String, Tensor>, k: &str) -> Var {
    Var::parameter(f[k].clone())
}

#[test]
fn linear_conv1d_embedding_layer_norm() {
    let f = fixture("modules");
    let x = Var::parameter(f["linear.x"].clone());
    let lin = Linear::from_params(p(&f, "linear.weight"), Some(p(&f, "linear.bias"))).unwrap();
    let y = lin.forward(&x).unwrap();
    close("linear.out", &y.value(), &f["linear.out"], 1e-5);
    y.mul(&Var::constant(f["linear.r"].clone()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    close(
        "linear.grad.x",
        &x.grad().unwrap(),
        &f["linear.grad.x"],
        1e-5,
    );
    close(
        "linear.grad.weight",
        &lin.weight.grad().unwrap(),
        &f["linear.grad.weight"],
        1e-5,
    );
    close(
        "linear.grad.bias",
        &lin.bias.as_ref().unwrap().grad().unwrap(),
        &f["linear.grad.bias"],
        1e-5,
    );

    let x = Var::parameter(f["linear.x"].clone());
    let conv = Conv1D {
        weight: p(&f, "conv1d.weight"),
        bias: p(&f, "conv1d.bias"),
        lora: None,
    };
    let y = conv.forward(&x).unwrap();
    close("conv1d.out", &y.value(), &f["conv1d.out"], 1e-5);
    y.mul(&Var::constant(f["linear.r"].clone()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    close(
        "conv1d.grad.x",
        &x.grad().unwrap(),
        &f["conv1d.grad.x"],
        1e-5,
    );
    close(
        "conv1d.grad.weight",
        &conv.weight.grad().unwrap(),
        &f["conv1d.grad.weight"],
        1e-5,
    );
    close(
        "conv1d.grad.bias",
        &conv.bias.grad().unwrap(),
        &f["conv1d.grad.bias"],
        1e-5,
    );

    let emb = Embedding {
        weight: p(&f, "embedding.weight"),
    };
    let y = emb.forward(&f["embedding.ids"]).unwrap();
    close("embedding.out", &y.value(), &f["embedding.out"], 1e-6);
    y.mul(&Var::constant(f["embedding.r"].clone()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    close(
        "embedding.grad.weight",
        &emb.weight.grad().unwrap(),
        &f["embedding.grad.weight"],
        1e-6,
    );

    let x = Var::parameter(f["linear.x"].clone());
    let ln = LayerNorm {
        weight: p(&f, "layer_norm.weight"),
        bias: p(&f, "layer_norm.bias"),
        eps: 1e-5,
    };
    let y = ln.forward(&x).unwrap();
    close("layer_norm.out", &y.value(), &f["layer_norm.out"], 1e-5);
    y.mul(&Var::constant(f["layer_norm.r"].clone()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    close(
        "layer_norm.grad.x",
        &x.grad().unwrap(),
        &f["layer_norm.grad.x"],
        1e-5,
    );
    close(
        "layer_norm.grad.weight",
        &ln.weight.grad().unwrap(),
        &f["layer_norm.grad.weight"],
        1e-5,
    );
    close(
        "layer_norm.grad.bias",
        &ln.bias.grad().unwrap(),
        &f["layer_norm.grad.bias"],
        1e-5,
    );
}

#[test]
fn causal_attention_and_mlp() {
    let f = fixture("modules");
    let conv = |n: &str| Conv1D {
        weight: p(&f, &format!("{n}.weight")),
        bias: p(&f, &format!("{n}.bias")),
        lora: None,
    };
    let attn = CausalSelfAttention {
        c_attn: conv("attn.c_attn"),
        c_proj: conv("attn.c_proj"),
        n_head: 2,
        attn_dropout: Dropout::new(0.0, 0).unwrap(),
        resid_dropout: Dropout::new(0.0, 0).unwrap(),
    };
    let mlp = Mlp {
        c_fc: conv("mlp.c_fc"),
        c_proj: conv("mlp.c_proj"),
        dropout: Dropout::new(0.0, 0).unwrap(),
    };
    let x = Var::parameter(f["linear.x"].clone());
    let y = attn.forward(&x).unwrap();
    close("attn.y", &y.value(), &f["attn.y"], 1e-5);
    let out = mlp.forward(&y).unwrap();
    close("attn.out", &out.value(), &f["attn.out"], 1e-5);
    out.mul(&Var::constant(f["attn.r"].clone()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    close("attn.grad.x", &x.grad().unwrap(), &f["attn.grad.x"], 1e-5);
    let mut named: Vec<(String, Var)> = attn
        .named_parameters()
        .into_iter()
        .map(|(n, v)| (format!("attn.{n}"), v))
        .collect();
    named.extend(
        mlp.named_parameters()
            .into_iter()
            .map(|(n, v)| (format!("mlp.{n}"), v)),
    );
    for (key, v) in named {
        let (stem, leaf) = key.rsplit_once('.').unwrap();
        close(
            &key,
            &v.grad().unwrap(),
            &f[&format!("{stem}.grad.{leaf}")],
            1e-5,
        );
    }
}

fn run_optimizer(name: &str, mut make: impl FnMut(Var) -> Box<dyn Optimizer>) {
    let f = fixture("optimizers");
    let param = Var::parameter(f["p0"].clone());
    let mut opt = make(param.clone());
    for i in 0..3 {
        param
            .set_grad(Some(f[&format!("grad{i}")].clone()))
            .unwrap();
        opt.step().unwrap();
        close(
            &format!("{name}.step{i}"),
            &param.value(),
            &f[&format!("{name}.step{i}")],
            1e-6,
        );
    }
}

fn group(p: Var, lr: f64, wd: f64) -> Vec<ParamGroup> {
    vec![ParamGroup::new(vec![("p".into(), p)], lr, wd)]
}

#[test]
fn optimizer_steps_match_torch() {
    let momentum = SgdConfig {
        momentum: 0.9,
        ..Default::default()
    };
    run_optimizer("sgd", |p| Box::new(Sgd::new(group(p, 0.1, 0.01), momentum)));
    let nesterov = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        dampening: 0.0,
    };
    run_optimizer("sgd_nesterov", |p| {
        Box::new(Sgd::new(group(p, 0.1, 0.0), nesterov))
    });
    run_optimizer("sgd_plain", |p| {
        Box::new(Sgd::new(group(p, 0.1, 0.0), SgdConfig::default()))
    });
    run_optimizer("adam", |p| {
        Box::new(Adam::new(group(p, 0.01, 0.01), AdamConfig::default()))
    });
    run_optimizer("adamw", |p| {
        Box::new(AdamW::new(group(p, 0.01, 0.1), AdamConfig::default()))
    });
    let betas = AdamConfig {
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
    };
    run_optimizer("adamw_betas", |p| {
        Box::new(AdamW::new(group(p, 0.003, 0.0), betas))
    });
}

#[test]
fn adamw_state_matches_torch_and_round_trips() {
    let f = fixture("optimizers");
    let param = Var::parameter(f["p0"].clone());
    let mut opt = AdamW::new(group(param.clone(), 0.01, 0.1), AdamConfig::default());
    for i in 0..2 {
        param
            .set_grad(Some(f[&format!("grad{i}")].clone()))
            .unwrap();
        opt.step().unwrap();
    }
    // Save the state, continue in a fresh optimizer: same third step as torch.
    let state = opt.state_tensors();
    let mut resumed = AdamW::new(group(param.clone(), 0.01, 0.1), AdamConfig::default());
    resumed.load_state_tensors(&state).unwrap();
    param.set_grad(Some(f["grad2"].clone())).unwrap();
    resumed.step().unwrap();
    close(
        "adamw.step2 after resume",
        &param.value(),
        &f["adamw.step2"],
        1e-6,
    );
    let st = resumed.state_tensors();
    close("exp_avg", &st["p.exp_avg"], &f["adamw.state.exp_avg"], 1e-6);
    close(
        "exp_avg_sq",
        &st["p.exp_avg_sq"],
        &f["adamw.state.exp_avg_sq"],
        1e-6,
    );
}

#[test]
fn schedules_and_clipping_match_torch() {
    let f = fixture("schedules");
    let lin = LrSchedule::LinearWarmupDecay {
        warmup: 10,
        total: 50,
    };
    let got: Vec<f64> = (0..60).map(|s| lin.lr_at(s, 0.5)).collect();
    close(
        "linear_warmup_decay",
        &Tensor::from_vec(got, &[60]).unwrap(),
        &f["linear_warmup_decay"],
        1e-12,
    );
    let cos = LrSchedule::WarmupCosine {
        warmup: 10,
        total: 50,
        min_lr: 6e-5,
    };
    let got: Vec<f64> = (0..60).map(|s| cos.lr_at(s, 6e-4)).collect();
    close(
        "warmup_cosine",
        &Tensor::from_vec(got, &[60]).unwrap(),
        &f["warmup_cosine"],
        1e-12,
    );
    assert_eq!(LrSchedule::Constant.lr_at(7, 0.3), 0.3);

    let params: Vec<Var> = (0..3)
        .map(|i| {
            let g = &f[&format!("clip.grad{i}")];
            let v = Var::parameter(g.zeros_like());
            v.set_grad(Some(g.clone())).unwrap();
            v
        })
        .collect();
    let norm = clip_grad_norm(&params, 1.0).unwrap();
    close(
        "clip.norm",
        &Tensor::scalar(norm as f32),
        &f["clip.norm"],
        1e-6,
    );
    for (i, v) in params.iter().enumerate() {
        close(
            &format!("clip.clipped{i}"),
            &v.grad().unwrap(),
            &f[&format!("clip.clipped{i}")],
            1e-6,
        );
    }
}

#[test]
fn mlp_trained_20_steps_matches_torch() {
    let f = fixture("train_mlp");
    let model = kiln_nn::Sequential::new()
        .push(Linear::from_params(p(&f, "init.0.weight"), Some(p(&f, "init.0.bias"))).unwrap())
        .push(kiln_nn::Gelu)
        .push(Linear::from_params(p(&f, "init.2.weight"), Some(p(&f, "init.2.bias"))).unwrap());
    let mut opt = AdamW::new(
        decay_groups(model.named_parameters(), 1e-2, 0.01),
        AdamConfig::default(),
    );
    let sched = LrSchedule::LinearWarmupDecay {
        warmup: 5,
        total: 20,
    };
    let losses = f["losses"].to_vec::<f64>().unwrap();
    let norms = f["grad_norms"].to_vec::<f64>().unwrap();
    for step in 0..20 {
        opt.set_lr(sched.lr_at(step, 1e-2));
        let x = Var::constant(f["xs"].narrow(0, step, 1).unwrap().squeeze(0).unwrap());
        let y = f["ys"].narrow(0, step, 1).unwrap().squeeze(0).unwrap();
        let loss = model.forward(&x).unwrap().cross_entropy(&y, -100).unwrap();
        let l = loss.value().item::<f32>().unwrap() as f64;
        assert!(
            (l - losses[step]).abs() <= 1e-5 * losses[step].abs(),
            "step {step}: loss {l} vs torch {}",
            losses[step]
        );
        loss.backward().unwrap();
        let norm = clip_grad_norm(&model.parameters(), 1.0).unwrap();
        assert!(
            (norm - norms[step]).abs() <= 1e-5 * norms[step],
            "step {step}: grad norm {norm} vs torch {}",
            norms[step]
        );
        opt.step().unwrap();
        opt.zero_grad();
    }
    for (n, v) in model.named_parameters() {
        close(&n, &v.value(), &f[&format!("final.{n}")], 1e-5);
    }
}
