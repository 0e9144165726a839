"""Kiln vs PyTorch + transformers on whole-model workloads, same machine,
same run, back to back; prints a table of ratios (Kiln / PyTorch, higher is
better for rates, lower-is-better times are inverted).

    python scripts/compare_models.py [--threads 2] [CASE ...]

Cases: generate, prefill, load, train_124m, train_baby, and the bf16 ones
generate_bf16, prefill_bf16, train_124m_bf16 (see benches/models.rs). The
bf16 cases run PyTorch's best bf16 setting: the model in bfloat16 for
inference, torch.autocast("cpu", dtype=torch.bfloat16) around the forward
for training (f32 weights and AdamW state, as `kiln train --bf16`).
Kiln's side is `cargo bench --bench models -- --json CASE`; the PyTorch side
mirrors it: random-init GPT2LMHeadModel (GPT2Config() = 124M), f32, eval
mode and no_grad for inference, model.train() + torch.optim.AdamW for
training, torch.set_num_threads(threads). Medians of repeats.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


# Prefill runs per case; the first is a warm-up (and, on Kiln's side, the
# use after which a bf16 model keeps its weights packed), the median of the
# rest is reported. Kept equal to PREFILL_RUNS in benches/models.rs.
PREFILL_RUNS = 8


def ids(n, v=50257):
    return torch.tensor([(i * 7919 + 13) % v for i in range(n)])


def generate_rate(model):
    """Median tokens/s of greedy generate: 8-token prompt, 128 new tokens."""
    x = ids(8).reshape(1, 8)
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=128, min_new_tokens=128,
                             do_sample=False, pad_token_id=50256)
        rates.append((out.shape[1] - 8) / (time.perf_counter() - t0))
    return statistics.median(rates)


def torch_case(case):
    if case in ("generate_bf16", "prefill_bf16"):
        # PyTorch's best bf16 inference: the whole model in bfloat16.
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config()).eval().to(torch.bfloat16)
        if case == "generate_bf16":
            return generate_rate(model), "tokens/s"
        x = ids(512).reshape(1, 512)
        times = []
        with torch.no_grad():
            for _ in range(PREFILL_RUNS):
                t0 = time.perf_counter()
                model(x, logits_to_keep=1)
                times.append(time.perf_counter() - t0)
        return statistics.median(times[1:]), "s"
    if case in ("generate", "prefill", "load"):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config()).eval()
        if case == "generate":
            return generate_rate(model), "tokens/s"
        if case == "prefill":
            x = ids(512).reshape(1, 512)
            times = []
            with torch.no_grad():
                for _ in range(PREFILL_RUNS):
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
            return statistics.median(times[1:]), "s"
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            del model
            times = []
            for _ in range(4):
                t0 = time.perf_counter()
                m = GPT2LMHeadModel.from_pretrained(d)
                times.append(time.perf_counter() - t0)
                del m
            return statistics.median(times[1:]), "s"
    if case in ("train_124m", "train_124m_bf16", "train_baby"):
        if case != "train_baby":
            cfg, b, t, reps = GPT2Config(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0), 4, 128, 3
        else:
            cfg, b, t, reps = GPT2Config(n_layer=4, n_head=4, n_embd=128, n_positions=64, resid_pdrop=0, embd_pdrop=0,
                                         attn_pdrop=0), 12, 64, 5
        torch.manual_seed(0)
        model = GPT2LMHeadModel(cfg).train()
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
        x = ids(b * t).reshape(b, t)
        times = []
        for i in range(reps + 1):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case.endswith("_bf16")):
                loss = model(x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i > 0:
                times.append(time.perf_counter() - t0)
        s = statistics.median(times)
        return (b * t / s, "tokens/s") if case != "train_baby" else (1 / s, "iterations/s")
    raise SystemExit(f"unknown case {case}")


def kiln_case(case, threads):
    env = dict(os.environ, KILN_NUM_THREADS=str(threads))
    out = subprocess.run(["cargo", "bench", "--quiet", "--bench", "models", "--", "--json", case], check=True,
                         capture_output=True, text=True, env=env).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            return r["value"], r["unit"]
    raise SystemExit(f"no result for {case}: {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("cases", nargs="*", default=["generate", "generate_bf16", "prefill", "prefill_bf16", "load",
                                                 "train_baby", "train_124m", "train_124m_bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads")
    print(f"{'case':<12} {'pytorch':>12} {'kiln':>12}  unit          kiln/pytorch")
    for case in a.cases:
        tv, unit = torch_case(case)
        kv, _ = kiln_case(case, a.threads)
        ratio = kv / tv if unit != "s" else tv / kv
        print(f"{case:<12} {tv:>12.3f} {kv:>12.3f}  {unit:<12} {ratio:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
