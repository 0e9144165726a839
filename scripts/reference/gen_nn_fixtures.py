"""Reference values from PyTorch / transformers for kiln-nn's fixture tests.

Writes fixtures/nn/*.safetensors:
  modules.safetensors     forward outputs and gradients of Linear, Conv1D,
                          Embedding, LayerNorm, causal attention and the MLP
  optimizers.safetensors  three steps of SGD, Adam and AdamW from given grads
  schedules.safetensors   LR sequences of the schedules, and clip_grad_norm_
  train_mlp.safetensors   a 2-layer MLP trained 20 steps with AdamW (decay
                          groups), linear warmup/decay and clipping

    python scripts/reference/gen_nn_fixtures.py
"""
import math
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import get_linear_schedule_with_warmup
from transformers.pytorch_utils import Conv1D

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "nn"
torch.manual_seed(0)


def modules():
    d = {}
    x = torch.randn(3, 5, 6)
    r = torch.randn(3, 5, 4)
    # nn.Linear(6, 4): weight [out, in]
    lin = torch.nn.Linear(6, 4)
    xin = x.clone().requires_grad_()
    (lin(xin) * r).sum().backward()
    d.update({"linear.x": x, "linear.r": r, "linear.weight": lin.weight.detach(), "linear.bias": lin.bias.detach(),
              "linear.out": lin(x).detach(), "linear.grad.x": xin.grad, "linear.grad.weight": lin.weight.grad,
              "linear.grad.bias": lin.bias.grad})
    # transformers Conv1D(nf=4, nx=6): weight [in, out]
    conv = Conv1D(4, 6)
    torch.nn.init.normal_(conv.weight, std=0.3)
    torch.nn.init.normal_(conv.bias, std=0.1)
    xin = x.clone().requires_grad_()
    (conv(xin) * r).sum().backward()
    d.update({"conv1d.weight": conv.weight.detach(), "conv1d.bias": conv.bias.detach(), "conv1d.out": conv(x).detach(),
              "conv1d.grad.x": xin.grad, "conv1d.grad.weight": conv.weight.grad, "conv1d.grad.bias": conv.bias.grad})
    # Embedding with repeated ids
    emb = torch.nn.Embedding(7, 3)
    ids = torch.tensor([[1, 4, 1], [6, 0, 1]])
    re = torch.randn(2, 3, 3)
    (emb(ids) * re).sum().backward()
    d.update({"embedding.weight": emb.weight.detach(), "embedding.ids": ids, "embedding.r": re,
              "embedding.out": emb(ids).detach(), "embedding.grad.weight": emb.weight.grad})
    # LayerNorm(6)
    ln = torch.nn.LayerNorm(6, eps=1e-5)
    torch.nn.init.normal_(ln.weight, 1.0, 0.1)
    torch.nn.init.normal_(ln.bias, 0.0, 0.1)
    xin = x.clone().requires_grad_()
    rl = torch.randn(3, 5, 6)
    (ln(xin) * rl).sum().backward()
    d.update({"layer_norm.weight": ln.weight.detach(), "layer_norm.bias": ln.bias.detach(), "layer_norm.r": rl,
              "layer_norm.out": ln(x).detach(), "layer_norm.grad.x": xin.grad,
              "layer_norm.grad.weight": ln.weight.grad, "layer_norm.grad.bias": ln.bias.grad})
    # Causal self-attention, GPT-2 style (C=6, 2 heads, Conv1D projections), then the MLP
    B, T, C, NH = 3, 5, 6, 2
    c_attn, c_proj = Conv1D(3 * C, C), Conv1D(C, C)
    fc, proj = Conv1D(4 * C, C), Conv1D(C, 4 * C)
    for m in (c_attn, c_proj, fc, proj):
        torch.nn.init.normal_(m.weight, std=0.3)
        torch.nn.init.normal_(m.bias, std=0.1)
    xin = x.clone().requires_grad_()
    q, k, v = c_attn(xin).split(C, dim=2)
    hs = C // NH
    q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
    att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    y = c_proj((att @ v).transpose(1, 2).reshape(B, T, C))
    out = proj(F.gelu(fc(y), approximate="tanh"))
    ra = torch.randn(B, T, C)
    (out * ra).sum().backward()
    d.update({"attn.c_attn.weight": c_attn.weight.detach(), "attn.c_attn.bias": c_attn.bias.detach(),
              "attn.c_proj.weight": c_proj.weight.detach(), "attn.c_proj.bias": c_proj.bias.detach(),
              "mlp.c_fc.weight": fc.weight.detach(), "mlp.c_fc.bias": fc.bias.detach(),
              "mlp.c_proj.weight": proj.weight.detach(), "mlp.c_proj.bias": proj.bias.detach(),
              "attn.r": ra, "attn.y": y.detach(), "attn.out": out.detach(), "attn.grad.x": xin.grad})
    for name, m in [("attn.c_attn", c_attn), ("attn.c_proj", c_proj), ("mlp.c_fc", fc), ("mlp.c_proj", proj)]:
        d[f"{name}.grad.weight"] = m.weight.grad
        d[f"{name}.grad.bias"] = m.bias.grad
    return d


def optimizers():
    d = {}
    p0 = torch.randn(4, 3)
    grads = [torch.randn(4, 3) for _ in range(3)]
    d["p0"] = p0
    for i, g in enumerate(grads):
        d[f"grad{i}"] = g
    cases = {
        "sgd": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01),
        "sgd_nesterov": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, dampening=0.0),
        "sgd_plain": lambda p: torch.optim.SGD([p], lr=0.1),
        "adam": lambda p: torch.optim.Adam([p], lr=0.01, weight_decay=0.01),
        "adamw": lambda p: torch.optim.AdamW([p], lr=0.01, weight_decay=0.1),
        "adamw_betas": lambda p: torch.optim.AdamW([p], lr=0.003, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.0),
    }
    for name, make in cases.items():
        p = p0.clone().requires_grad_()
        opt = make(p)
        for i, g in enumerate(grads):
            p.grad = g.clone()
            opt.step()
            d[f"{name}.step{i}"] = p.detach().clone()
        st = opt.state[p]
        for k, v in st.items():
            if torch.is_tensor(v) and v.numel() > 1:
                d[f"{name}.state.{k}"] = v.clone()
    return d


def schedules():
    d = {}
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sch = get_linear_schedule_with_warmup(opt, num_warmup_steps=10, num_training_steps=50)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    d["linear_warmup_decay"] = torch.tensor(lrs, dtype=torch.float64)

    # nanoGPT's get_lr, verbatim in spirit: warmup, cosine to min_lr, then min_lr
    def nanogpt(it, lr=6e-4, warmup=10, decay=50, min_lr=6e-5):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay:
            return min_lr
        ratio = (it - warmup) / (decay - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    d["warmup_cosine"] = torch.tensor([nanogpt(i) for i in range(60)], dtype=torch.float64)
    # clip_grad_norm_
    ps = [torch.nn.Parameter(torch.zeros(s)) for s in [(4, 3), (5,), (2, 2)]]
    for i, q in enumerate(ps):
        q.grad = torch.randn(q.shape) * 3.0
        d[f"clip.grad{i}"] = q.grad.clone()
    norm = torch.nn.utils.clip_grad_norm_(ps, max_norm=1.0)
    d["clip.norm"] = norm.reshape(())
    for i, q in enumerate(ps):
        d[f"clip.clipped{i}"] = q.grad.clone()
    return d


def train_mlp():
    d = {}
    torch.manual_seed(1)
    l1, l2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 10)
    for name, t in [("0.weight", l1.weight), ("0.bias", l1.bias), ("2.weight", l2.weight), ("2.bias", l2.bias)]:
        d["init." + name] = t.detach().clone()
    xs = torch.randn(20, 8, 16)
    ys = torch.randint(0, 10, (20, 8))
    ys[3, 2] = -100
    d["xs"], d["ys"] = xs, ys
    params = [("0.weight", l1.weight), ("0.bias", l1.bias), ("2.weight", l2.weight), ("2.bias", l2.bias)]
    decay = [p for n, p in params if p.dim() >= 2]
    no_decay = [p for n, p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2)
    sch = get_linear_schedule_with_warmup(opt, num_warmup_steps=5, num_training_steps=20)
    losses, norms = [], []
    for step in range(20):
        logits = l2(F.gelu(l1(xs[step]), approximate="tanh"))
        loss = F.cross_entropy(logits, ys[step], ignore_index=-100)
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0).item())
        opt.step()
        sch.step()
        opt.zero_grad()
        losses.append(loss.item())
    d["losses"] = torch.tensor(losses, dtype=torch.float64)
    d["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    for name, t in params:
        d["final." + name] = t.detach().clone()
    return d


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    print("torch", torch.__version__)
    for name, fn in [("modules", modules), ("optimizers", optimizers), ("schedules", schedules), ("train_mlp", train_mlp)]:
        tensors = {k: v.detach().contiguous() for k, v in fn().items()}
        path = OUT / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"torch": torch.__version__})
        print("wrote", path.relative_to(OUT.parents[1]), len(tensors), "tensors")


if __name__ == "__main__":
    main()
