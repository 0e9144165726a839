#!/usr/bin/env python3
"""Data-parallel training on loopback: what the gradient all-reduce moves and
costs per step, with and without overlap, and a model of step time on N
machines at 10 and 100 Gbit/s built from those measurements.

Runs `mpirun -np 2 kiln train` (a build with `--features mpi`) on GPT-2 124M
from scratch, alternating the two modes, and reads each run's log.jsonl
(`allreduce_s`, `allreduce_bytes`, `elapsed_s` per step). Standard library
only; with torch installed it also times torch.distributed's all-reduce
(gloo, DDP's CPU backend) of the same bytes in the same 25 MB buckets on
the same loopback, back to back.

    cargo build --release --features mpi
    python3 scripts/measure_ddp.py [--steps 8] [--repeats 2] [--batch 2] [--block 128]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "target", "release", "kiln")
TEXT = os.path.join(ROOT, "data", "shakespeare", "sonnets.txt")
# GPT-2 124M: the tied embedding (50257 x 768 f32) is its own bucket and the
# last one backward completes, so it cannot overlap with backward.
WTE_BYTES = 50257 * 768 * 4


def run(args, out, extra):
    cmd = [
        "mpirun", "--allow-run-as-root", "-np", "2", KILN, "train",
        "--config", args.config, "--train", TEXT, "--output-dir", out,
        "--max-steps", str(args.steps), "--block-size", str(args.block),
        "--per-device-train-batch-size", str(args.batch), "--logging-steps", "1",
        "--save-strategy", "no", "--val-fraction", "0", "--no-progress",
    ] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    steps = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:])]
    # The first two steps touch fresh memory; keep the steady state.
    skip = 2
    return {
        "step": steps[skip - 1:],
        "comm": [r["allreduce_s"] for r in rows[skip:]],
        "bytes": rows[-1]["allreduce_bytes"],
    }


def _torch_rank(rank, elems, port, out):
    import time

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    bucket = (25 << 20) // 4
    grads = [torch.randn(min(bucket, elems - at)) for at in range(0, elems, bucket)]
    times = []
    for _ in range(6):
        dist.barrier()
        t = time.perf_counter()
        for g in grads:
            dist.all_reduce(g)
        times.append(time.perf_counter() - t)
    if rank == 0:
        out.put(statistics.median(times[1:]))
    dist.destroy_process_group()


def torch_allreduce(grad_bytes):
    """Median seconds for gloo to all-reduce `grad_bytes` of f32 on 2 ranks."""
    try:
        import torch.multiprocessing as mp
    except ImportError:
        return None
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=_torch_rank, args=(r, grad_bytes // 4, port, out)) for r in range(2)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    return out.get()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="gpt2")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--block", type=int, default=128)
    args = p.parse_args()
    modes = {"overlap": [], "after backward": ["--no-ddp-overlap"]}
    got = {m: {"step": [], "comm": [], "bytes": 0} for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for m, extra in modes.items():
                r = run(args, os.path.join(tmp, f"{rep}-{m.replace(' ', '-')}"), extra)
                got[m]["step"] += r["step"]
                got[m]["comm"] += r["comm"]
                got[m]["bytes"] = r["bytes"]
    print(f"{args.config}, 2 ranks x batch {args.batch} x {args.block} tokens, "
          f"medians of {args.repeats} runs x {args.steps - 2} steady steps")
    print(f"{'mode':<16}{'step s':>8}{'in all-reduce s':>17}{'share':>7}{'MB sent/rank':>14}")
    for m, g in got.items():
        step, comm = statistics.median(g["step"]), statistics.median(g["comm"])
        print(f"{m:<16}{step:>8.3f}{comm:>17.3f}{comm / step:>7.0%}{g['bytes'] / 1e6:>14.1f}")
    after = got["after backward"]
    t_step, t_comm = statistics.median(after["step"]), statistics.median(after["comm"])
    t_compute = t_step - t_comm
    grad_bytes = after["bytes"]  # 2(N-1)/N = 1 at N = 2: the gradients' size
    loop_gbs = grad_bytes / t_comm / 1e9
    print(f"\nloopback: {grad_bytes / 1e6:.1f} MB each way in {t_comm:.3f} s "
          f"({loop_gbs:.2f} GB/s each way); compute {t_compute:.3f} s per step")
    gloo = torch_allreduce(grad_bytes)
    if gloo is None:
        print("torch not installed: no gloo comparison")
    else:
        print(f"torch.distributed gloo all_reduce of the same {grad_bytes / 1e6:.1f} MB "
              f"(25 MB buckets, 2 ranks, loopback): {gloo:.3f} s; Kiln/gloo time "
              f"{t_comm / gloo:.2f}x")
    # Backward is about two thirds of a step's compute; every bucket but the
    # embedding's can hide behind it.
    t_backward = 2 / 3 * t_compute
    last = min(1.0, WTE_BYTES / grad_bytes) if args.config == "gpt2" else 0.0
    alpha, buckets = 5e-6, max(1, round(grad_bytes / (25 << 20)))
    print("\nmodel: step = compute + exposed communication; ring-equal volume "
          "2(N-1)/N x gradients per rank, latency 5 us x 2(N-1) per bucket")
    print(f"{'N':>4}{'link':>10}{'comm s':>9}{'after bw: step':>16}{'eff':>6}"
          f"{'overlap: step':>15}{'eff':>6}{'bf16 grads+overlap':>20}{'eff':>6}")
    for link in (10, 100):
        bw = link / 8 * 1e9
        for n in (2, 4, 8, 16, 64):
            vol = 2 * (n - 1) / n

            def comm(nbytes):
                return vol * nbytes / bw + 2 * (n - 1) * alpha * buckets

            def exposed(c):
                return last * c + max(0.0, (1 - last) * c - t_backward)

            c32, c16 = comm(grad_bytes), comm(grad_bytes / 2)
            s_after = t_compute + c32
            s_over = t_compute + exposed(c32)
            s_bf16 = t_compute + exposed(c16)
            print(f"{n:>4}{link:>7} Gb{c32:>9.3f}{s_after:>16.3f}{t_compute / s_after:>6.0%}"
                  f"{s_over:>15.3f}{t_compute / s_over:>6.0%}{s_bf16:>20.3f}{t_compute / s_bf16:>6.0%}")


if __name__ == "__main__":
    main()
