//! kiln-autograd against torch.autograd on the same inputs.
//!
//! Fixtures come from `scripts/reference/gen_autograd_fixtures.py` (torch
//! 2.15): a 2-layer MLP with gelu_new and cross-entropy (one ignored label),
//! and one GPT-2 transformer block (pre-LN causal attention + MLP). Every
//! gradient must match torch within 1e-5 relative. The absolute floor is
//! 1e-6 of the tensor's largest magnitude, so elements that are tiny by
//! cancellation are not judged by relative error alone; in f64 the same
//! code matches to 1e-10.

use std::collections::BTreeMap;

use kiln_autograd::Var;
use kiln_tensor::testing::{check_close, load_safetensors};
use kiln_tensor::Tensor;

fn fixture(name: &str) -> BTreeMap<String, Tensor> {
    let path = format!(
        "{}/../fixtures/autograd/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    load_safetensors(&path).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    let v = t.to_dtype(kiln_tensor::DType::F64).to_vec::<f64>().unwrap();
    v.into_iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[track_caller]
fn close(what: &str, actual: &Tensor, expected: &Tensor, rtol: f64) {
    let atol = rtol * 0.1 * max_abs(expected);
    if let Err(r) = check_close(actual, expected, rtol, atol) {
        panic!("{what}: {r}");
    }
}

fn run_mlp(tag: &str, rtol: f64) {
    let f = fixture(&format!("mlp_{tag}"));
    let p = |k: &str| Var::parameter(f[k].clone());
    let (x, w1, b1, w2, b2) = (p("x"), p("w1"), p("b1"), p("w2"), p("b2"));
    // Linear in PyTorch layout: y = x·Wᵀ + b
    let h = x
        .matmul(&w1.t().unwrap())
        .unwrap()
        .add(&b1)
        .unwrap()
        .gelu()
        .unwrap();
    let logits = h.matmul(&w2.t().unwrap()).unwrap().add(&b2).unwrap();
    let loss = logits.cross_entropy(&f["targets"], -100).unwrap();
    close("logits", &logits.value(), &f["logits"], rtol);
    close("loss", &loss.value(), &f["loss"], rtol);
    loss.backward().unwrap();
    for (name, v) in [
        ("x", &x),
        ("w1", &w1),
        ("b1", &b1),
        ("w2", &w2),
        ("b2", &b2),
    ] {
        close(
            &format!("grad.{name}"),
            &v.grad().unwrap(),
            &f[&format!("grad.{name}")],
            rtol,
        );
    }
}

fn run_block(tag: &str, rtol: f64) {
    let f = fixture(&format!("attention_block_{tag}"));
    let names = [
        "ln_1.weight",
        "ln_1.bias",
        "attn.c_attn.weight",
        "attn.c_attn.bias",
        "attn.c_proj.weight",
        "attn.c_proj.bias",
        "ln_2.weight",
        "ln_2.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
    ];
    let p: BTreeMap<&str, Var> = names
        .iter()
        .map(|&n| (n, Var::parameter(f[n].clone())))
        .collect();
    let x = Var::parameter(f["x"].clone());
    let r = Var::constant(f["r"].clone());
    let (b, t, c, nh) = (2, 5, 8, 2);
    let hs = c / nh;
    let h = x
        .layer_norm(Some(&p["ln_1.weight"]), Some(&p["ln_1.bias"]), 1e-5)
        .unwrap();
    let qkv = h
        .matmul(&p["attn.c_attn.weight"])
        .unwrap()
        .add(&p["attn.c_attn.bias"])
        .unwrap(); // (B, T, 3C)
    let parts = qkv.split_sizes(&[c, c, c], 2).unwrap();
    let heads = |v: &Var| v.reshape(&[b, t, nh, hs]).unwrap().transpose(1, 2).unwrap(); // (B, NH, T, HS)
    let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
    let att = q
        .matmul(&k.t().unwrap())
        .unwrap()
        .div_scalar((hs as f64).sqrt())
        .unwrap(); // (B, NH, T, T)
    let att = att
        .masked_fill(&Tensor::triu_mask(t, t, 1), f64::NEG_INFINITY)
        .unwrap()
        .softmax(-1)
        .unwrap();
    let y = att
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape(&[b, t, c])
        .unwrap();
    let x2 = x
        .add(
            &y.matmul(&p["attn.c_proj.weight"])
                .unwrap()
                .add(&p["attn.c_proj.bias"])
                .unwrap(),
        )
        .unwrap();
    let h2 = x2
        .layer_norm(Some(&p["ln_2.weight"]), Some(&p["ln_2.bias"]), 1e-5)
        .unwrap();
    let m = h2
        .matmul(&p["mlp.c_fc.weight"])
        .unwrap()
        .add(&p["mlp.c_fc.bias"])
        .unwrap()
        .gelu()
        .unwrap();
    let out = x2
        .add(
            &m.matmul(&p["mlp.c_proj.weight"])
                .unwrap()
                .add(&p["mlp.c_proj.bias"])
                .unwrap(),
        )
        .unwrap();
    close("out", &out.value(), &f["out"], rtol);
    let loss = out.mul(&r).unwrap().sum_all().unwrap();
    close("loss", &loss.value(), &f["loss"], rtol);
    loss.backward().unwrap();
    close("grad.x", &x.grad().unwrap(), &f["grad.x"], rtol);
    for n in names {
        close(
            &format!("grad.{n}"),
            &p[n].grad().unwrap(),
            &f[&format!("grad.{n}")],
            rtol,
        );
    }
}

#[test]
fn mlp_with_cross_entropy_f32() {
    run_mlp("f32", 1e-5);
}

#[test]
fn mlp_with_cross_entropy_f64() {
    run_mlp("f64", 1e-10);
}

#[test]
fn transformer_block_f32() {
    run_block("f32", 1e-5);
}

#[test]
fn transformer_block_f64() {
    run_block("f64", 1e-10);
}
