#!/usr/bin/env python3
"""Kiln vs PyTorch on the non-matmul ops, same shapes, same thread count.

    python scripts/compare_ops.py [--threads 2] [--rounds 3]

Each round measures every op on both sides back to back (Kiln then PyTorch,
or the other way round on odd rounds), so both see the same machine load:

* Kiln: `cargo bench --bench ops -- --exact ops/<op>/<shape> --warm-up-time W
  --measurement-time M --output-format bencher`, with KILN_NUM_THREADS set.
  The bencher format prints one line per benchmark,
      test ops/softmax/512x768 ... bench:   123,456 ns/iter (+/- 7,890)
  where the number is criterion's median time per iteration; we parse it.
* PyTorch: the same op on tensors of the same shapes, timed in this process
  with torch.set_num_threads(threads) under inference_mode: warm up for W
  seconds, then for M seconds take samples of k back-to-back calls (k chosen
  so a sample lasts ~1 ms) and keep the median time per call, as criterion
  does. Python's call overhead (~µs) is part of PyTorch's time, as it is for
  any PyTorch user.

Before each op's pair of measurements the script waits (up to
--quiet-timeout seconds) until the machine is quiet: other processes used
under --max-busy of the CPUs over the last second, read from /proc/stat.
On a shared machine one busy neighbour otherwise decides the result (a
2-thread op with one core taken runs at half speed, or worse when threads
spin for a core). Pairs measured without a quiet moment are flagged.

The table shows, per op, the median over rounds of each side's median, and
the speed ratio kiln/torch = torch time / kiln time (> 1: Kiln is faster),
with the range of the per-round ratios.
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# criterion name -> (shape label, elements, torch op factory)
T, C, NH = 512, 768, 12


def torch_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, C, generator=g)  # (T, C)
    w = torch.randn(C, generator=g)
    b = torch.randn(C, generator=g)
    att = torch.randn(NH, T, T, generator=g)  # (NH, T, T)
    xt = x.t()  # (C, T) view, strides (1, C)
    return {
        "softmax/512x768": lambda: torch.softmax(x, -1),
        "layer_norm/512x768": lambda: F.layer_norm(x, [C], w, b, 1e-5),
        "gelu/512x768": lambda: F.gelu(x, approximate="tanh"),
        "add_bcast/512x768+768": lambda: x + b,
        "exp/512x768": lambda: torch.exp(x),
        "transpose_copy/768x512": lambda: xt.contiguous(),
        "softmax/12x512x512": lambda: torch.softmax(att, -1),
    }


ELEMENTS = {
    "softmax/512x768": T * C,
    "layer_norm/512x768": T * C,
    "gelu/512x768": T * C,
    "add_bcast/512x768+768": T * C,
    "exp/512x768": T * C,
    "transpose_copy/768x512": T * C,
    "softmax/12x512x512": NH * T * T,
}

LINE = re.compile(r"^test ops/(\S+) \.\.\. bench:\s+([\d,]+) ns/iter")


def run_kiln(key, threads, warm, meas):
    env = dict(os.environ, KILN_NUM_THREADS=str(threads))
    cmd = [
        "cargo", "bench", "--bench", "ops", "--", "--exact", f"ops/{key}",
        "--warm-up-time", str(warm), "--measurement-time", str(meas),
        "--output-format", "bencher",
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"cargo bench failed:\n{out.stderr[-4000:]}")
    for line in out.stdout.splitlines():
        m = LINE.match(line.strip())
        if m and m.group(1) == key:
            return int(m.group(2).replace(",", ""))
    sys.exit(f"no criterion result for {key}; stdout was:\n{out.stdout}")


def cpu_busy(interval=1.0):
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]  # idle + iowait
        return sum(v), idle
    t0, i0 = read()
    time.sleep(interval)
    t1, i1 = read()
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def wait_quiet(max_busy, timeout):
    """Waits until the CPUs are mostly idle; returns whether they were."""
    if not os.path.exists("/proc/stat"):
        return True
    end = time.time() + timeout
    while True:
        if cpu_busy() <= max_busy:
            return True
        if time.time() > end:
            return False


def time_torch(fn, warm, meas):
    end = time.perf_counter() + warm
    while time.perf_counter() < end:
        fn()
    # calls per sample so that a sample lasts about a millisecond
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    k = max(1, int(1e-3 / one))
    samples = []
    end = time.perf_counter() + meas
    while time.perf_counter() < end or len(samples) < 10:
        t0 = time.perf_counter_ns()
        for _ in range(k):
            fn()
        samples.append((time.perf_counter_ns() - t0) / k)
    return statistics.median(samples)


def run_torch(fn, threads, warm, meas):
    torch.set_num_threads(threads)
    with torch.inference_mode():
        return time_torch(fn, warm, meas)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warm-up-time", type=float, default=1.0)
    ap.add_argument("--measurement-time", type=float, default=3.0)
    ap.add_argument("--max-busy", type=float, default=0.1,
                    help="wait until other processes use less than this fraction of the CPUs")
    ap.add_argument("--quiet-timeout", type=float, default=120.0)
    args = ap.parse_args()

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs; torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}); threads {args.threads}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print("building the bench…", flush=True)
    subprocess.run(["cargo", "bench", "--bench", "ops", "--no-run"], cwd=ROOT, check=True,
                   capture_output=True)

    ops = torch_ops()
    kiln = {key: [] for key in ELEMENTS}
    pt = {key: [] for key in ELEMENTS}
    noisy = 0
    for r in range(args.rounds):
        for key in ELEMENTS:
            if not wait_quiet(args.max_busy, args.quiet_timeout):
                noisy += 1
                print(f"  (machine busy; measuring {key} anyway)", flush=True)
            sides = [
                lambda: kiln[key].append(run_kiln(key, args.threads, args.warm_up_time, args.measurement_time)),
                lambda: pt[key].append(run_torch(ops[key], args.threads, args.warm_up_time, args.measurement_time)),
            ]
            for side in sides[:: 1 if r % 2 == 0 else -1]:
                side()
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print()
    print("| op | shape | Kiln median | PyTorch median | kiln/torch speed | per-round range |")
    print("|---|---|---:|---:|---:|---:|")
    worst = None
    for key in ELEMENTS:
        k = statistics.median(kiln[key])
        t = statistics.median(pt[key])
        rounds = [tt / kk for kk, tt in zip(kiln[key], pt[key])]
        op, shape = key.split("/", 1)
        ratio = t / k
        worst = ratio if worst is None else min(worst, ratio)
        gk = ELEMENTS[key] / k  # elements per ns = Gelem/s
        gt = ELEMENTS[key] / t
        print(f"| {op} | {shape} | {k / 1e3:.1f} µs ({gk:.2f} Gelem/s) | "
              f"{t / 1e3:.1f} µs ({gt:.2f} Gelem/s) | **{ratio:.2f}×** | "
              f"{min(rounds):.2f}–{max(rounds):.2f} |")
    print(f"\nslowest ratio: {worst:.2f}×")
    if noisy:
        print(f"{noisy} of {args.rounds * len(ELEMENTS)} pairs were measured on a busy machine")


if __name__ == "__main__":
    main()
