"""Safetensors interop fixtures for kiln-nn's state dicts, both directions.

1. PyTorch → Kiln. Writes, with `safetensors.torch.save_file`,

   fixtures/nn/torch_written.safetensors           f32, f16, bf16, f64, i64, bool and 0-d
                                                   tensors with edge values (subnormals,
                                                   ±0, ±inf, NaN, 2^53+1, i64 min/max)
   fixtures/nn/torch_written_expected.safetensors  the same values widened by torch:
                                                   floats as f64 (exact), ints as i64,
                                                   bools as bool

   nn/tests/state_dict.rs loads the first with Kiln (f16/bf16 widened to f32
   by default) and compares with the second bit for bit.

2. Kiln → PyTorch. Reads fixtures/nn/kiln_written.safetensors, written by
   Kiln's `StateDict::save`, with `safetensors.torch.load_file` and
   `safe_open(...).metadata()`, and asserts every name, dtype, shape, value
   and metadata entry listed in KILN_WRITTEN below (which mirrors
   `kiln_written_dict()` in nn/tests/state_dict.rs). Regenerate that file
   with

       KILN_BLESS=1 cargo test -p kiln-nn --test state_dict kiln_written

Run:

    python scripts/reference/gen_state_dict_fixtures.py

Generated with torch 2.15.0 and safetensors 0.8.0 (recorded in the file's
metadata); the values do not depend on the versions.
"""
import math
import pathlib

import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "nn"


def torch_written():
    inf, nan = math.inf, math.nan
    return {
        "f32": torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.0,
        # f16: max, smallest subnormal 2^-24, smallest normal 2^-14, -0, ±inf, NaN, 0.1 rounded
        "f16": torch.tensor([1.0, -2.5, 65504.0, 2.0**-24, 2.0**-14, -0.0, inf, -inf, nan, 0.1],
                            dtype=torch.float16),
        # bf16: near max, smallest subnormal 2^-133, -0, inf, NaN, 0.1 rounded; [2, 4]
        "bf16": torch.tensor([[1.0, -2.5, 3.0e38, 2.0**-133], [-0.0, inf, nan, 0.1]],
                             dtype=torch.bfloat16),
        "f64": torch.tensor([math.pi, -1e-310, 1e300], dtype=torch.float64),
        "i64": torch.tensor([[0, -1, 2**53 + 1], [-(2**63), 2**63 - 1, 42]], dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        # Conv1D-style name and layout, as in GPT-2 checkpoints: [in, out]
        "h.0.attn.c_attn.weight": (torch.arange(6, dtype=torch.float32) * 0.25).reshape(2, 3),
    }


def expected_of(tensors):
    out = {}
    for name, t in tensors.items():
        if t.dtype.is_floating_point:
            out[name] = t.double()  # exact for every half, bf16 and f32 value
        else:
            out[name] = t.clone()
    return out


# Mirrors kiln_written_dict() in nn/tests/state_dict.rs.
KILN_WRITTEN = {
    "h.0.attn.c_attn.weight": (torch.float32, [2, 3], [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75]),
    "h.0.attn.c_attn.bias": (torch.float32, [3], [1.5, -2.0, 3.25]),
    "wte.f64": (torch.float64, [2, 2], [0.1, -0.2, 1e-300, 1e300]),
    "half.f16": (torch.float16, [5], [1.0, -0.5, 65504.0, 2.0**-14, 2.0**-24]),
    "half.bf16": (torch.bfloat16, [3], [1.0, -3.0, 2.0**100]),
    "tokens": (torch.int64, [4], [0, -1, 2**53 + 1, 2**63 - 1]),
    "mask": (torch.bool, [2, 2], [True, False, False, True]),
    "scalar": (torch.float32, [], [3.5]),
    "empty": (torch.float32, [0, 3], []),
}
KILN_METADATA = {"format": "pt", "producer": "kiln"}


def check_kiln_written(path):
    loaded = load_file(str(path))
    assert sorted(loaded) == sorted(KILN_WRITTEN), (sorted(loaded), sorted(KILN_WRITTEN))
    for name, (dtype, shape, values) in KILN_WRITTEN.items():
        t = loaded[name]
        assert t.dtype == dtype, (name, t.dtype, dtype)
        assert list(t.shape) == shape, (name, list(t.shape), shape)
        want = torch.tensor(values, dtype=dtype).reshape(shape)
        assert torch.equal(t, want), (name, t, want)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == KILN_METADATA, f.metadata()
    # The in-memory reader agrees with the file reader.
    from safetensors.torch import load
    again = load(path.read_bytes())
    assert all(torch.equal(again[k], loaded[k]) for k in loaded)
    print(f"ok: {path.name} read by safetensors.torch.load_file ({len(loaded)} tensors)")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tensors = torch_written()
    meta = {"format": "pt", "torch": torch.__version__, "safetensors": safetensors.__version__}
    save_file(tensors, str(OUT / "torch_written.safetensors"), metadata=meta)
    save_file(expected_of(tensors), str(OUT / "torch_written_expected.safetensors"), metadata=meta)
    print(f"wrote {OUT / 'torch_written.safetensors'} and its expected values")

    kiln = OUT / "kiln_written.safetensors"
    if kiln.exists():
        check_kiln_written(kiln)
    else:
        raise SystemExit(f"{kiln} is missing: run KILN_BLESS=1 cargo test -p kiln-nn --test state_dict kiln_written")


if __name__ == "__main__":
    main()
