#!/usr/bin/env python3
"""Compare Kiln's GPT-2 tokenizer with Hugging Face `tokenizers`, single thread.

    python scripts/compare_tokenizer.py [--repeats 7] [--measurement-time 3]

Both sides encode the same input: every file of data/shakespeare/ (5 MB of
ASCII), each file with its own encode call, one thread.

- Hugging Face: `tokenizers` built from models/data/gpt2 as the data README
  shows, with <|endoftext|> added as a special token, TOKENIZERS_PARALLELISM
  =false, `Tokenizer.encode(text)` per file (not encode_batch). One untimed
  warm-up pass (it fills HF's word cache), then the median of --repeats timed
  passes.
- Kiln: the criterion benchmark `cargo bench --bench tokenizer`
  (benches/tokenizer.rs, `tokenizer/encode`, which does the same per-file
  loop in-process, so process start-up and I/O are not timed), run with
  --warm-up-time 1 and --measurement-time; its median per pass is read from
  target/criterion/tokenizer/encode/new/estimates.json.

It prints both throughputs in MB/s (10^6 bytes per second) and the ratio
Kiln / HF. Run it on a quiet machine: other load skews both sides.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "shakespeare"
VOCAB = ROOT / "models" / "data" / "gpt2"


def hf_throughput(texts, nbytes, repeats):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tk = Tokenizer(models.BPE.from_file(str(VOCAB / "encoder.json"), str(VOCAB / "vocab.bpe")))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|endoftext|>"])
    tokens = sum(len(tk.encode(t).ids) for t in texts)  # warm-up pass
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for t in texts:
            tk.encode(t)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"HF tokenizers {tokenizers.__version__}: {tokens:,} tokens; "
          f"passes {', '.join(f'{t * 1e3:.0f}' for t in times)} ms; "
          f"median {median * 1e3:.1f} ms = {nbytes / median / 1e6:.2f} MB/s")
    return nbytes / median


def kiln_throughput(nbytes, measurement_time):
    cmd = ["cargo", "bench", "--bench", "tokenizer", "--", "--warm-up-time", "1",
           "--measurement-time", str(measurement_time), "tokenizer/encode"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    estimates = target / "criterion" / "tokenizer" / "encode" / "new" / "estimates.json"
    median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
    print(f"Kiln: median {median_ns / 1e6:.1f} ms = {nbytes / (median_ns / 1e9) / 1e6:.2f} MB/s")
    return nbytes / (median_ns / 1e9)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed HF passes (default 7)")
    ap.add_argument("--measurement-time", type=float, default=3,
                    help="criterion measurement time in seconds (default 3)")
    args = ap.parse_args()
    files = sorted(glob.glob(str(CORPUS / "*.txt")))
    texts = [Path(f).read_text(encoding="utf-8") for f in files]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"corpus: {len(files)} files, {nbytes:,} bytes, single thread, one encode per file")
    hf = hf_throughput(texts, nbytes, args.repeats)
    kiln = kiln_throughput(nbytes, args.measurement_time)
    print(f"ratio Kiln / HF tokenizers: {kiln / hf:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
