"""Reference gradients from torch.autograd for kiln-autograd's fixture tests.

Writes fixtures/autograd/{mlp,attention_block}_{f32,f64}.safetensors: the
inputs, parameters, loss and every gradient. Regenerate with

    python scripts/reference/gen_autograd_fixtures.py

The Rust tests (autograd/tests/torch_reference.rs) rebuild the same
computation with kiln-autograd and compare. Needs torch and safetensors.
"""
import math
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "autograd"


def mlp(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=g, dtype=dtype)
    w1 = (torch.randn(32, 16, generator=g, dtype=dtype) * 0.3).requires_grad_()
    b1 = (torch.randn(32, generator=g, dtype=dtype) * 0.1).requires_grad_()
    w2 = (torch.randn(10, 32, generator=g, dtype=dtype) * 0.3).requires_grad_()
    b2 = (torch.randn(10, generator=g, dtype=dtype) * 0.1).requires_grad_()
    targets = torch.randint(0, 10, (8,), generator=g)
    targets[3] = -100  # ignored, as transformers pads labels
    xin = x.clone().requires_grad_()
    # Linear layers in PyTorch layout: y = x·Wᵀ + b
    h = F.gelu(xin @ w1.T + b1, approximate="tanh")
    logits = h @ w2.T + b2
    loss = F.cross_entropy(logits, targets, ignore_index=-100)
    loss.backward()
    return {
        "x": x, "w1": w1.detach(), "b1": b1.detach(), "w2": w2.detach(), "b2": b2.detach(),
        "targets": targets, "loss": loss.detach().reshape(()), "logits": logits.detach(),
        "grad.x": xin.grad, "grad.w1": w1.grad, "grad.b1": b1.grad, "grad.w2": w2.grad, "grad.b2": b2.grad,
    }


def attention_block(dtype):
    """One GPT-2 block: pre-LN causal self-attention and a gelu_new MLP."""
    g = torch.Generator().manual_seed(1)
    B, T, C, NH = 2, 5, 8, 2
    HS = C // NH
    p = {
        "ln_1.weight": 1 + 0.1 * torch.randn(C, generator=g, dtype=dtype),
        "ln_1.bias": 0.1 * torch.randn(C, generator=g, dtype=dtype),
        "attn.c_attn.weight": 0.2 * torch.randn(C, 3 * C, generator=g, dtype=dtype),  # Conv1D: [in, out]
        "attn.c_attn.bias": 0.1 * torch.randn(3 * C, generator=g, dtype=dtype),
        "attn.c_proj.weight": 0.2 * torch.randn(C, C, generator=g, dtype=dtype),
        "attn.c_proj.bias": 0.1 * torch.randn(C, generator=g, dtype=dtype),
        "ln_2.weight": 1 + 0.1 * torch.randn(C, generator=g, dtype=dtype),
        "ln_2.bias": 0.1 * torch.randn(C, generator=g, dtype=dtype),
        "mlp.c_fc.weight": 0.2 * torch.randn(C, 4 * C, generator=g, dtype=dtype),
        "mlp.c_fc.bias": 0.1 * torch.randn(4 * C, generator=g, dtype=dtype),
        "mlp.c_proj.weight": 0.2 * torch.randn(4 * C, C, generator=g, dtype=dtype),
        "mlp.c_proj.bias": 0.1 * torch.randn(C, generator=g, dtype=dtype),
    }
    for t in p.values():
        t.requires_grad_()
    x = torch.randn(B, T, C, generator=g, dtype=dtype)
    r = torch.randn(B, T, C, generator=g, dtype=dtype)
    xin = x.clone().requires_grad_()

    h = F.layer_norm(xin, (C,), p["ln_1.weight"], p["ln_1.bias"], 1e-5)
    qkv = h @ p["attn.c_attn.weight"] + p["attn.c_attn.bias"]  # (B, T, 3C)
    q, k, v = qkv.split(C, dim=2)
    q = q.view(B, T, NH, HS).transpose(1, 2)  # (B, NH, T, HS)
    k = k.view(B, T, NH, HS).transpose(1, 2)
    v = v.view(B, T, NH, HS).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)  # (B, NH, T, T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    x2 = xin + (y @ p["attn.c_proj.weight"] + p["attn.c_proj.bias"])
    h2 = F.layer_norm(x2, (C,), p["ln_2.weight"], p["ln_2.bias"], 1e-5)
    m = F.gelu(h2 @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"], approximate="tanh")
    out = x2 + (m @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"])
    loss = (out * r).sum()
    loss.backward()
    d = {k_: t.detach() for k_, t in p.items()}
    d.update({"x": x, "r": r, "out": out.detach(), "loss": loss.detach().reshape(()), "grad.x": xin.grad})
    d.update({"grad." + k_: t.grad for k_, t in p.items()})
    return d


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    print("torch", torch.__version__)
    for name, fn in [("mlp", mlp), ("attention_block", attention_block)]:
        for dtype, tag in [(torch.float32, "f32"), (torch.float64, "f64")]:
            tensors = {k: v.contiguous() for k, v in fn(dtype).items()}
            path = OUT / f"{name}_{tag}.safetensors"
            save_file(tensors, str(path), metadata={"torch": torch.__version__})
            print("wrote", path.relative_to(OUT.parents[1]))


if __name__ == "__main__":
    main()
