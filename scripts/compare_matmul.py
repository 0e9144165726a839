#!/usr/bin/env python3
"""Kiln's matmul vs torch.matmul, on this machine, back to back.

For every shape, in one run of this script:
  1. torch.matmul is timed in this process (same layouts as the Rust bench:
     A row-major [m, k]; B row-major [k, n], or for lm_head* the view
     `wte.T` of a contiguous wte [n, k]); the median of several calls is kept;
  2. right after, the criterion bench `benches/matmul.rs` is run filtered to
     that one shape (`<group>/kiln/<shape>`), and the median per-iteration
     time is read from criterion's own `estimates.json` (the point estimate
     of the median, in ns). Reading criterion's JSON rather than scraping its
     console output keeps this robust to output-format changes.
The order (torch first / kiln first) alternates from round to round, and the
whole sweep is repeated `--rounds` times; the table reports the median over
rounds of each side and the ratio of those medians. The 1-minute load
average is printed before each round: above ~2 on this 2-core machine other
jobs were competing and the numbers are suspect.

Throughput is FLOP/s = 2·m·n·k / time. For the memory-bound gemv shape the
table also gives GB/s = 4·k·n / time (the bytes of B, streamed once).

Usage (from the repository root):
    python scripts/compare_matmul.py            # 1024³ + GPT-2 shapes
    python scripts/compare_matmul.py --all      # + 256³, 512³, 2048³
    python scripts/compare_matmul.py --only qkv,lm_head_gemv --rounds 5

Threads: torch.set_num_threads(N) and KILN_NUM_THREADS=N, N = --threads
(default 2).

--cpu-time: a contention-proof variant for when other jobs share the
machine. Both sides run on ONE thread and are timed by that thread's CPU
clock (torch: time.thread_time_ns, MKL runs single-threaded work on the
calling thread; kiln: the bench's KILN_BENCH_CPU_TIME=1 mode, criterion
measuring CLOCK_THREAD_CPUTIME_ID). Time slices taken by other processes
then do not count, so the ratio is per-core efficiency. It says nothing
about 2-thread scaling; quote it next to, not instead of, a quiet wall run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

# (group, name, m, k, n, B is wteᵀ) — must match benches/matmul.rs.
SHAPES = [
    ("square_flops", "square", 256, 256, 256, False),
    ("square_flops", "square", 512, 512, 512, False),
    ("square_flops", "square", 1024, 1024, 1024, False),
    ("square_flops", "square", 2048, 2048, 2048, False),
    ("gpt2_flops", "qkv", 512, 768, 2304, False),
    ("gpt2_flops", "mlp_up", 512, 768, 3072, False),
    ("gpt2_flops", "mlp_down", 512, 3072, 768, False),
    ("gpt2_flops", "lm_head_gemv", 1, 768, 50257, True),
    ("gpt2_flops", "lm_head", 512, 768, 50257, True),
]
DEFAULT = {"square_1024x1024x1024", "qkv", "mlp_up", "mlp_down", "lm_head_gemv", "lm_head"}
# bf16 products (both operands bf16, as `a.bfloat16() @ b.bfloat16()`):
# the `bf16_flops` group of benches/matmul.rs.
BF16_SHAPES = [
    ("bf16_flops", "square", 1024, 1024, 1024, False),
    ("bf16_flops", "qkv", 512, 768, 2304, False),
    ("bf16_flops", "mlp_up", 512, 768, 3072, False),
    ("bf16_flops", "mlp_down", 512, 3072, 768, False),
    ("bf16_flops", "lm_head", 512, 768, 50257, True),
]


def label(name, m, k, n):
    return f"{name}_{m}x{k}x{n}"


def build_bench(root):
    """Builds the bench once and returns the path of its executable."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "matmul", "--no-run", "--message-format=json"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "matmul" \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit("could not find the matmul bench executable")


def time_kiln(exe, root, home, group, lab, threads, meas, cpu_time):
    """Runs one criterion benchmark; returns its median time in seconds."""
    env = dict(os.environ, KILN_NUM_THREADS=str(threads), CRITERION_HOME=home)
    if cpu_time:
        env["KILN_BENCH_CPU_TIME"] = "1"
    subprocess.run(
        [exe, "--bench", f"^{group}/kiln/{lab}$", "--warm-up-time", "1",
         "--measurement-time", str(meas), "--noplot"],
        cwd=root, env=env, check=True, capture_output=True, text=True,
    )
    path = os.path.join(home, group, "kiln", lab, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"] * 1e-9


def time_torch(m, k, n, bt, cpu_time, dtype=torch.float32, min_time=1.0):
    """Median time of `a @ b` over enough calls to fill ~min_time (wall
    clock, or this thread's CPU clock with cpu_time), in `dtype`."""
    clock = (lambda: time.thread_time_ns() * 1e-9) if cpu_time else time.perf_counter
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(n, k).to(dtype).T if bt else torch.randn(k, n).to(dtype)
    for _ in range(2):
        a @ b
    t0 = clock()
    a @ b
    one = clock() - t0
    reps = max(7, min(200, int(min_time / max(one, 1e-6))))
    times = []
    for _ in range(reps):
        t0 = clock()
        a @ b
        times.append(clock() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--measurement-time", type=float, default=3.0)
    ap.add_argument("--all", action="store_true", help="also 256³, 512³, 2048³")
    ap.add_argument("--cpu-time", action="store_true",
                    help="1 thread each, timed by thread CPU clocks (see above)")
    ap.add_argument("--only", default="", help="comma-separated shape names (e.g. qkv,square_1024x1024x1024)")
    ap.add_argument("--dtypes", default="f32,bf16",
                    help="f32, bf16 or both (bf16: both operands bf16 on both sides)")
    args = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.cpu_time:
        args.threads = 1
    torch.set_num_threads(args.threads)
    wanted = set(args.only.split(",")) if args.only else None
    shapes = []
    dtypes = args.dtypes.split(",")
    table = (SHAPES if "f32" in dtypes else []) + (BF16_SHAPES if "bf16" in dtypes else [])
    for group, name, m, k, n, bt in table:
        lab = label(name, m, k, n)
        keys = {name, lab}
        if wanted is not None:
            if keys & wanted:
                shapes.append((group, name, m, k, n, bt))
        elif args.all or keys & DEFAULT:
            shapes.append((group, name, m, k, n, bt))

    print("building the bench ...", file=sys.stderr)
    exe = build_bench(root)
    home = tempfile.mkdtemp(prefix="kiln-criterion-")
    key = lambda group, name, m, k, n: f"{'bf16 ' if group == 'bf16_flops' else ''}{label(name, m, k, n)}"
    results = {key(s[0], s[1], *s[2:5]): ([], []) for s in shapes}
    loads = []
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        loads.append(load)
        print(f"round {r + 1}/{args.rounds}  (load average {load:.2f})", file=sys.stderr)
        for group, name, m, k, n, bt in shapes:
            lab = label(name, m, k, n)
            dt = torch.bfloat16 if group == "bf16_flops" else torch.float32
            steps = [
                ("torch", lambda: time_torch(m, k, n, bt, args.cpu_time, dt)),
                ("kiln", lambda: time_kiln(exe, root, home, group, lab, args.threads,
                                           args.measurement_time, args.cpu_time)),
            ]
            if r % 2 == 1:
                steps.reverse()
            for who, run in steps:
                t = run()
                results[key(group, name, m, k, n)][0 if who == "torch" else 1].append(t)
                print(f"  {key(group, name, m, k, n):37s} {who:5s} {2 * m * n * k / t / 1e9:8.1f} GFLOP/s", file=sys.stderr)

    print()
    clock = "thread CPU time (per-core efficiency)" if args.cpu_time else "wall time"
    print(f"threads={args.threads}  clock={clock}  rounds={args.rounds}  "
          f"load averages={', '.join(f'{x:.2f}' for x in loads)}")
    print(f"torch {torch.__version__}  ({time.strftime('%Y-%m-%d %H:%M')})")
    print()
    print(f"| {'shape (m×k×n)':37s} | torch GFLOP/s | kiln GFLOP/s | kiln/torch | torch GB/s | kiln GB/s |")
    print(f"|{'-' * 39}|--------------:|-------------:|-----------:|-----------:|----------:|")
    for group, name, m, k, n, bt in shapes:
        lab = key(group, name, m, k, n)
        tt, tk = (statistics.median(v) for v in results[lab])
        flops = 2 * m * n * k
        gbs = (f"{4 * k * n / tt / 1e9:10.1f} | {4 * k * n / tk / 1e9:9.1f}" if m == 1
               else f"{'':10s} | {'':9s}")
        print(f"| {lab:37s} | {flops / tt / 1e9:13.1f} | {flops / tk / 1e9:12.1f} | "
              f"{tt / tk:10.2f} | {gbs} |")


if __name__ == "__main__":
    main()
