"""Times Kiln's StateDict::load against safetensors.torch.load_file on the
same GPT-2-small-sized f32 checkpoint (124,439,808 parameters, ~498 MB), in
one run, with a warm page cache, and prints medians and ratios.

    python scripts/compare_state_dict.py [--rounds 5] [--per-round 3] [--keep FILE]

The file is written with safetensors.torch.save_file into a temporary
directory and removed at the end (unless --keep names a path to write it to
instead). Kiln's side is nn/examples/state_dict_load.rs, built with `cargo
build --release -p kiln-nn --example state_dict_load` and run directly; it
times repeated loads inside one process, so process start-up is not counted. The four ways of loading take turns,
a few loads each per round, so drift in machine load hits them all alike;
the page cache is warmed first and stays warm.

What is timed, per load:

  torch mmap       load_file(path): the default backend maps the file and
                   returns tensors over the mapping, so no data is read yet.
  torch mmap+read  load_file(path) then one pass reading every tensor
                   (t.sum()), which faults every page in: the cost of
                   actually having the data.
  torch pread      load_file(path, backend="pread"): reads into owned memory,
                   the same end state as Kiln's.
  kiln             StateDict::load(path): mmap, validate the header, copy
                   every tensor into owned Vec storage.

Kiln's tensors own their storage (a Vec), so it cannot return views of the
mapping as torch's default backend does; "pread" and "mmap+read" are the
like-for-like comparisons, and the plain "mmap" figure is shown for honesty.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

ROOT = pathlib.Path(__file__).resolve().parents[1]


def gpt2_small():
    V, T, C, L = 50257, 1024, 768, 12
    p = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for i in range(L):
        p.update({
            f"h.{i}.ln_1.weight": (C,), f"h.{i}.ln_1.bias": (C,),
            f"h.{i}.attn.c_attn.weight": (C, 3 * C), f"h.{i}.attn.c_attn.bias": (3 * C,),
            f"h.{i}.attn.c_proj.weight": (C, C), f"h.{i}.attn.c_proj.bias": (C,),
            f"h.{i}.ln_2.weight": (C,), f"h.{i}.ln_2.bias": (C,),
            f"h.{i}.mlp.c_fc.weight": (C, 4 * C), f"h.{i}.mlp.c_fc.bias": (4 * C,),
            f"h.{i}.mlp.c_proj.weight": (4 * C, C), f"h.{i}.mlp.c_proj.bias": (C,),
        })
    p["ln_f.weight"] = (C,)
    p["ln_f.bias"] = (C,)
    return p


def write_checkpoint(path):
    g = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(*s, generator=g) * 0.02 for k, s in gpt2_small().items()}
    n = sum(t.numel() for t in tensors.values())
    assert n == 124_439_808, n
    save_file(tensors, str(path))


def time_torch(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        d = fn()
        out.append(time.perf_counter() - t0)
        del d
    return out


def mmap_then_read(path):
    d = load_file(str(path))
    for t in d.values():
        t.sum()
    return d


KILN = ROOT / "target" / "release" / "examples" / "state_dict_load"


def time_kiln(path, repeats, warmups=0):
    out = subprocess.run([str(KILN), str(path), str(repeats), str(warmups)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=3)
    ap.add_argument("--keep", type=pathlib.Path, help="write the checkpoint here and keep it")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="kiln-compare-") as tmp:
        path = args.keep or pathlib.Path(tmp) / "gpt2_124M_f32.safetensors"
        if not path.exists():
            write_checkpoint(path)
        size = os.path.getsize(path)
        print(f"{path.name}: {size / 1e6:.1f} MB, torch {torch.__version__}, "
              f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")

        subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-nn", "--example",
                        "state_dict_load"], cwd=ROOT, check=True)
        ways = {
            "kiln": lambda r: time_kiln(path, r),
            "torch mmap": lambda r: time_torch(lambda: load_file(str(path)), r),
            "torch mmap+read": lambda r: time_torch(lambda: mmap_then_read(path), r),
            "torch pread": lambda r: time_torch(lambda: load_file(str(path), backend="pread"), r),
        }
        time_kiln(path, 0, warmups=1)  # warm the page cache and the binary
        for way in ways.values():
            way(1)
        times = {k: [] for k in ways}
        for _ in range(args.rounds):
            for k, way in ways.items():
                times[k] += way(args.per_round)

    print(f"  (load average at the end {os.getloadavg()[0]:.1f})")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:16s} median {med[k] * 1e3:8.1f} ms  ({size / med[k] / 1e9:5.2f} GB/s)  "
              f"min {min(v) * 1e3:7.1f} ms  n={len(v)}")
    for k in ("torch pread", "torch mmap+read", "torch mmap"):
        print(f"  kiln / {k:16s} = {med['kiln'] / med[k]:.2f}")


if __name__ == "__main__":
    main()
