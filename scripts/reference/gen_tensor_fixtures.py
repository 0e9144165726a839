#!/usr/bin/env python3
"""Regenerates the PyTorch reference fixtures for kiln-tensor's ops.

    python scripts/reference/gen_tensor_fixtures.py

Writes one small safetensors file per op family under fixtures/tensor/ (repo
root); `tensor/tests/torch_reference.rs` reads them. Every case stores its f32
inputs and two torch outputs computed from those same inputs:

    <case>.out32   torch in float32 (what Kiln's f32 kernels should match)
    <case>.out64   torch in float64 on the inputs promoted exactly to f64
                   (what Kiln's f64 kernels should match nearly bit for bit,
                   and the f32 kernels up to f32 rounding)

Seeds are fixed, so rerunning reproduces the files byte for byte with the same
torch version (printed below and recorded in each file's metadata). Only the
Rust side is run by `cargo test`; Python is never needed there.
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "tensor")


def both(fn, *inputs):
    """fn on the f32 inputs and on their exact f64 promotions."""
    out32 = fn(*inputs)
    out64 = fn(*[t.double() if t.is_floating_point() else t for t in inputs])
    return out32.contiguous(), out64.contiguous()


def save(name, tensors):
    path = os.path.join(OUT, name + ".safetensors")
    # clone: cases may share an input tensor, which safetensors refuses to alias.
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}
    # One metadata key: safetensors writes a map in hash order, so several
    # keys would make the bytes differ from run to run.
    meta = {"generated_by": f"scripts/reference/gen_tensor_fixtures.py, torch {torch.__version__}"}
    save_file(tensors, path, metadata=meta)
    print(f"  {os.path.relpath(path, ROOT)}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def add_case(store, case, fn, **inputs):
    out32, out64 = both(lambda *xs: fn(**dict(zip(inputs, xs))), *inputs.values())
    for k, v in inputs.items():
        store[f"{case}.{k}"] = v
    store[f"{case}.out32"] = out32
    store[f"{case}.out64"] = out64


def main():
    print(f"torch {torch.__version__}", flush=True)
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1234)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * scale

    # ---- softmax / log_softmax ------------------------------------------
    # Masked rows: -inf where a causal mask hides the future; the first row
    # keeps a single visible position, the last row is fully masked (NaN).
    masked = randn(6, 9, scale=3.0)
    mask = torch.ones(6, 9, dtype=torch.bool).triu(1)
    masked = masked.masked_fill(mask, float("-inf"))
    masked[5] = float("-inf")
    large = randn(4, 17, scale=300.0) + 1000.0  # magnitudes ~1e3, spread ~1e2
    sm = {}
    for fname, f in [("softmax", torch.softmax), ("log_softmax", torch.log_softmax)]:
        add_case(sm, f"{fname}.rows", lambda x, f=f: f(x, -1), x=randn(5, 37, scale=2.0))
        add_case(sm, f"{fname}.dim0", lambda x, f=f: f(x, 0), x=randn(7, 3, 4))
        add_case(sm, f"{fname}.dim1", lambda x, f=f: f(x, 1), x=randn(2, 11, 5))
        add_case(sm, f"{fname}.masked", lambda x, f=f: f(x, -1), x=masked)
        add_case(sm, f"{fname}.large", lambda x, f=f: f(x, -1), x=large)
    save("softmax", sm)

    # ---- layer_norm -----------------------------------------------------
    ln = {}
    C = 48
    w = 1.0 + 0.5 * randn(C)
    b = 0.5 * randn(C)
    add_case(ln, "layer_norm.affine", lambda x, w, b: F.layer_norm(x, [C], w, b, 1e-5),
             x=randn(2, 5, C, scale=2.0), w=w, b=b)
    add_case(ln, "layer_norm.plain", lambda x: F.layer_norm(x, [C], None, None, 1e-5), x=randn(6, C))
    # Rows far from zero with a small spread: tests the variance's cancellation.
    add_case(ln, "layer_norm.offset", lambda x, w, b: F.layer_norm(x, [C], w, b, 1e-5),
             x=50.0 + 0.5 * randn(4, C), w=w, b=b)
    save("layer_norm", ln)

    # ---- gelu_new -------------------------------------------------------
    ge = {}
    add_case(ge, "gelu.grid", lambda x: F.gelu(x, approximate="tanh"),
             x=torch.linspace(-8.0, 8.0, 513, dtype=torch.float32))
    add_case(ge, "gelu.randn", lambda x: F.gelu(x, approximate="tanh"), x=randn(8, 64, scale=2.0))
    save("gelu", ge)

    # ---- logsumexp and var ------------------------------------------------
    rd = {}
    x = randn(3, 4, 5, scale=2.0)
    add_case(rd, "logsumexp.last", lambda x: torch.logsumexp(x, -1), x=x)
    add_case(rd, "logsumexp.dims02_keep", lambda x: torch.logsumexp(x, [0, 2], keepdim=True), x=x)
    add_case(rd, "logsumexp.large", lambda x: torch.logsumexp(x, -1), x=randn(3, 10, scale=100.0) + 500.0)
    add_case(rd, "logsumexp.masked", lambda x: torch.logsumexp(x, -1), x=masked)
    add_case(rd, "var.last_unbiased", lambda x: torch.var(x, -1, correction=1), x=x)
    add_case(rd, "var.dims01_pop_keep", lambda x: torch.var(x, [0, 1], correction=0, keepdim=True), x=x)
    add_case(rd, "var.offset", lambda x: torch.var(x, -1, correction=1), x=100.0 + randn(4, 33))
    save("reduce", rd)

    # ---- matmul ---------------------------------------------------------
    mm = {}
    add_case(mm, "matmul.plain", lambda a, b: a @ b, a=randn(7, 13), b=randn(13, 5))
    # Transposed operands: stored as aᵀ and bᵀ, multiplied as a @ b.
    add_case(mm, "matmul.transposed", lambda at, bt: at.mT @ bt.mT, at=randn(64, 9), bt=randn(6, 64))
    add_case(mm, "matmul.broadcast", lambda a, b: a @ b, a=randn(2, 1, 4, 24), b=randn(3, 24, 5))
    add_case(mm, "matmul.vec", lambda a, v: a @ v, a=randn(3, 2, 31), v=randn(31))
    save("matmul", mm)

    # ---- bf16 matmul -----------------------------------------------------
    # Inputs f32; `bf16` is torch's bf16 @ bf16 (a bf16 result), `autocast`
    # the same product under torch.autocast("cpu", bfloat16), `out64` the
    # exact product of the bf16-rounded operands.
    mb = {}
    def add_bf16(case, fn, **inputs):
        r = {k: v.bfloat16() for k, v in inputs.items()}
        for k, v in inputs.items():
            mb[f"{case}.{k}"] = v
        mb[f"{case}.bf16"] = fn(*r.values())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mb[f"{case}.autocast"] = fn(*inputs.values())
        mb[f"{case}.out64"] = fn(*[v.double() for v in r.values()])
    add_bf16("plain", lambda a, b: a @ b, a=randn(21, 256), b=randn(256, 33))
    add_bf16("transposed", lambda at, bt: at.mT @ bt.mT, at=randn(96, 19), bt=randn(70, 96))
    add_bf16("broadcast", lambda a, b: a @ b, a=randn(2, 1, 4, 24), b=randn(3, 24, 5))
    save("matmul_bf16", mb)

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"total {total} bytes")
    if total > 1 << 20:
        sys.exit("fixtures exceed 1 MB")


if __name__ == "__main__":
    main()
