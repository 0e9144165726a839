"""Kiln vs eager PyTorch on autograd and optimizer workloads, same machine,
same run, back to back. Prints Kiln's speed-up (PyTorch time / Kiln time).

    python scripts/compare_pieces.py [--threads 2]

- mlp_tiny: forward + backward of a 64→64→10 ReLU MLP with cross-entropy,
  batch 8 (µs per iteration); Kiln: `cargo bench --bench autograd`.
- block_backward: backward of one GPT-2-small block, B=4, T=128 (ms),
  median of 15 passes after a warm-up.
- adamw_124m: one torch.optim.AdamW step (foreach=True) over GPT-2 small's
  parameters (ms); Kiln: `cargo bench --bench adamw`.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F


def mlp_tiny():
    g = torch.Generator().manual_seed(0)
    w1 = (torch.randn(64, 64, generator=g) * 0.1).requires_grad_()
    b1 = (torch.randn(64, generator=g) * 0.1).requires_grad_()
    w2 = (torch.randn(64, 10, generator=g) * 0.1).requires_grad_()
    b2 = (torch.randn(10, generator=g) * 0.1).requires_grad_()
    x = torch.randn(8, 64, generator=g)
    y = torch.arange(8) % 10
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        for _ in range(200):
            h = torch.relu(x @ w1 + b1)
            loss = F.cross_entropy(h @ w2 + b2, y)
            loss.backward()
        times.append((time.perf_counter() - t0) / 200)
        for p in (w1, b1, w2, b2):
            p.grad = None
    return statistics.median(times) * 1e6


def block_backward():
    B, T, C, NH = 4, 128, 768, 12
    HS = C // NH
    g = torch.Generator().manual_seed(1)
    p = lambda *s, std=0.02: (torch.randn(*s, generator=g) * std).requires_grad_()
    ln1w, ln1b, ln2w, ln2b = (torch.ones(C).requires_grad_(), torch.zeros(C).requires_grad_(),
                              torch.ones(C).requires_grad_(), torch.zeros(C).requires_grad_())
    wa, ba, wp, bp = p(C, 3 * C), p(3 * C, std=0.0), p(C, C), p(C, std=0.0)
    wf, bf, wq, bq = p(C, 4 * C), p(4 * C, std=0.0), p(4 * C, C), p(C, std=0.0)
    x = torch.randn(B, T, C, generator=g).requires_grad_()
    r = torch.randn(B, T, C, generator=g)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    times = []
    for i in range(16):
        h = F.layer_norm(x, (C,), ln1w, ln1b, 1e-5)
        q, k, v = (h @ wa + ba).split(C, dim=2)
        q, k, v = (t.view(B, T, NH, HS).transpose(1, 2) for t in (q, k, v))
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(HS)).masked_fill(mask, torch.finfo(torch.float32).min).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x2 = x + (y @ wp + bp)
        m = F.gelu(F.layer_norm(x2, (C,), ln2w, ln2b, 1e-5) @ wf + bf, approximate="tanh")
        loss = ((x2 + (m @ wq + bq)) * r).sum()
        t0 = time.perf_counter()
        loss.backward()
        if i > 0:
            times.append(time.perf_counter() - t0)
        for t in (ln1w, ln1b, ln2w, ln2b, wa, ba, wp, bp, wf, bf, wq, bq, x):
            t.grad = None
    return statistics.median(times) * 1e3


def adamw_124m():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    for q in model.parameters():
        q.grad = q.detach() * 0.01
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, foreach=True)
    times = []
    for i in range(6):
        t0 = time.perf_counter()
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def kiln(bench, case, threads):
    env = dict(os.environ, KILN_NUM_THREADS=str(threads))
    args = ["cargo", "bench", "--quiet", "--bench", bench, "--", "--json"] + ([case] if bench != "adamw" else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            if r["case"] == case:
                return r["value"]
    raise SystemExit(f"no result for {case}: {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads")
    print(f"{'case':<16} {'pytorch':>10} {'kiln':>10}  unit  speed-up (pytorch/kiln)")
    for case, fn, bench, unit in [("mlp_tiny", mlp_tiny, "autograd", "us"), ("block_backward", block_backward, "autograd", "ms"),
                                  ("adamw_124m", adamw_124m, "adamw", "ms")]:
        t = fn()
        k = kiln(bench, case, a.threads)
        print(f"{case:<16} {t:>10.2f} {k:>10.2f}  {unit:<4}  {t / k:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
