"""Peak memory and step time of one GPT-2 training step, Kiln vs PyTorch +
transformers, with and without gradient checkpointing, same machine, same
run, back to back. Each measurement is a fresh process whose own peak RSS
(os.wait4's ru_maxrss) is reported, so it is that configuration's alone.

    python scripts/compare_memory.py [--config gpt2] [--batch 8] [--block 1024] [--threads 2]
                                     [--lora-r R [--lora-target-modules c_attn] [--base-dtype bf16]]

Kiln's side is `kiln train --config CONFIG` (random init) on the shipped
Shakespeare text for two steps (AdamW, f32), run through the release
binary; the step time is the second step's, from the trainer's log. PyTorch's side is a random-init
GPT2LMHeadModel of the same config, model.train(), torch.optim.AdamW, one
forward + backward + step on random ids, with
model.gradient_checkpointing_enable() for the checkpointed rows (eager
attention, transformers' default on CPU), two steps, the second timed.

With --lora-r both sides fine-tune LoRA adapters of that rank (alpha 8, no
dropout) on a random-init model of the config saved once by transformers
(in $TMPDIR), Kiln with `kiln train --model DIR --lora-r R`, PyTorch with
PEFT's get_peft_model and AdamW over the trainable parameters.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_STEP = r"""
import json, sys, time, torch
from transformers import GPT2Config, GPT2LMHeadModel
name, b, t, threads, ckpt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
lora_r, targets, base_dir, dtype = int(sys.argv[6]), sys.argv[7].split(","), sys.argv[8], sys.argv[9]
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = {"gpt2": GPT2Config(), "gpt2-medium": GPT2Config(n_embd=1024, n_layer=24, n_head=16),
       "gpt2-large": GPT2Config(n_embd=1280, n_layer=36, n_head=20),
       "gpt2-xl": GPT2Config(n_embd=1600, n_layer=48, n_head=25)}[name]
model = (GPT2LMHeadModel.from_pretrained(base_dir, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
         if lora_r else GPT2LMHeadModel(cfg))
model.train()
if ckpt:
    model.gradient_checkpointing_enable()
if lora_r:
    from peft import LoraConfig, get_peft_model
    if ckpt:
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=8, lora_dropout=0.0,
                                             target_modules=targets, task_type="CAUSAL_LM"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
x = torch.randint(0, cfg.vocab_size, (b, t))
times = []
for _ in range(2):
    t0 = time.perf_counter()
    loss = model(x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t0)
print(json.dumps({"step_s": times[-1]}))
"""


SAVE_BASE = r"""
import sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
name, out = sys.argv[1], sys.argv[2]
cfg = {"gpt2": GPT2Config(), "gpt2-medium": GPT2Config(n_embd=1024, n_layer=24, n_head=16),
       "gpt2-large": GPT2Config(n_embd=1280, n_layer=36, n_head=20),
       "gpt2-xl": GPT2Config(n_embd=1600, n_layer=48, n_head=25)}[name]
torch.manual_seed(0)
GPT2LMHeadModel(cfg).save_pretrained(out)
"""


def run(cmd, env=None):
    """Runs `cmd`; returns (exit code, stdout, stderr, that process's peak RSS in MB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read(), err.read(), usage.ru_maxrss / 1024


def last_line(text, code):
    lines = text.strip().splitlines()
    return lines[-1] if lines else f"exit {code}"


def kiln_step(binary, name, b, t, threads, ckpt, lora):
    out = tempfile.mkdtemp()
    model = ["--config", name] if lora is None else ["--model", lora[2], "--lora-r", str(lora[0]),
                                                      "--lora-target-modules", lora[1], "--dtype", lora[3]]
    cmd = [binary, "train", *model, "--train", os.path.join(ROOT, "data/shakespeare"),
           "--val-fraction", "0", "--output-dir", out, "--max-steps", "2", "--logging-steps", "1", "--batch-size", str(b),
           "--block-size", str(t), "--save-steps", "1000000", "--no-progress", "--dropout", "0.1"]
    if ckpt:
        cmd.append("--gradient-checkpointing")
    code, _, err, peak = run(cmd, dict(os.environ, KILN_NUM_THREADS=str(threads)))
    log_path = os.path.join(out, "log.jsonl")
    log = [json.loads(line) for line in open(log_path)] if code == 0 else []
    # The run's final model (gigabytes for the big configs) is not needed.
    shutil.rmtree(out, ignore_errors=True)
    if code != 0:
        return {"error": last_line(err, code)}
    elapsed = [e["elapsed_s"] for e in log if "elapsed_s" in e]
    return {"step_s": elapsed[1] - elapsed[0], "peak_rss_mb": peak}


def torch_step(name, b, t, threads, ckpt, lora):
    r, targets, base, dtype = lora if lora else (0, "", "", "f32")
    code, out, err, peak = run([sys.executable, "-c", TORCH_STEP, name, str(b), str(t), str(threads),
                                "1" if ckpt else "0", str(r), targets, base, dtype])
    if code != 0:
        return {"error": last_line(err, code)}
    r = json.loads(out.strip().splitlines()[-1])
    r["peak_rss_mb"] = peak
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="gpt2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora-r", type=int)
    ap.add_argument("--lora-target-modules", default="c_attn")
    ap.add_argument("--base-dtype", choices=["f32", "bf16"], default="f32",
                    help="with --lora-r: the frozen base's weights (PEFT: from_pretrained(dtype=...))")
    args = ap.parse_args()
    lora = None
    if args.lora_r:
        base = os.path.join(tempfile.gettempdir(), f"kiln-bench-{args.config}")
        if not os.path.exists(os.path.join(base, "model.safetensors")):
            subprocess.run([sys.executable, "-c", SAVE_BASE, args.config, base], check=True)
        lora = (args.lora_r, args.lora_target_modules, base, args.base_dtype)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target/release/kiln")
    rows = []
    for side, ckpt in [("kiln", True), ("torch", True), ("kiln", False), ("torch", False)]:
        f = kiln_step if side == "kiln" else torch_step
        if side == "kiln":
            r = f(binary, args.config, args.batch, args.block, args.threads, ckpt, lora)
        else:
            r = f(args.config, args.batch, args.block, args.threads, ckpt, lora)
        rows.append((side, ckpt, r))
        print(side, "checkpointing" if ckpt else "plain", json.dumps(r), flush=True)
    what = (f", LoRA r={args.lora_r} on {args.lora_target_modules}, {args.base_dtype} base" if lora
            else ", full fine-tune")
    print(f"\n{args.config}{what}, B={args.batch}, T={args.block}, {args.threads} threads")
    print(f"{'':28}{'peak RSS MB':>12}{'step s':>10}")
    for side, ckpt, r in rows:
        label = f"{side} {'checkpointing' if ckpt else 'plain'}"
        if "error" in r:
            print(f"{label:28}{'—':>12}{'—':>10}  {r['error'][:100]}")
        else:
            print(f"{label:28}{r['peak_rss_mb']:>12.0f}{r['step_s'] or float('nan'):>10.2f}")


main()
