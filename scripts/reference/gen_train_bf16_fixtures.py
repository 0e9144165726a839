"""The reference training run of gen_train_fixtures.py under mixed precision:
the same model, batches, AdamW, schedule and clipping, with the forward pass
and loss inside torch.autocast("cpu", dtype=torch.bfloat16) (what
TrainingArguments(bf16=True) does on a CPU).

  fixtures/train/parity_bf16.safetensors
      losses      (20,) float64, the loss at each step
      grad_norms  (20,) float64, the norm clip_grad_norm_ returned

The batches are those of fixtures/train/parity.safetensors.

    python scripts/reference/gen_train_bf16_fixtures.py
"""
import pathlib

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

from gen_train_fixtures import parity_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "train"


def main():
    batches = load_file(OUT / "parity.safetensors")["batches"]
    model = GPT2LMHeadModel.from_pretrained(ROOT / "fixtures/gpt2/tiny-a", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model.train()
    losses, norms = parity_run(model, batches, 3e-3, autocast=True)
    save_file({"losses": torch.tensor(losses, dtype=torch.float64),
               "grad_norms": torch.tensor(norms, dtype=torch.float64)}, str(OUT / "parity_bf16.safetensors"),
              metadata={"torch": torch.__version__})
    f32 = load_file(OUT / "parity.safetensors")["losses"].tolist()
    print("bf16 losses", [round(l, 4) for l in losses])
    print("max relative difference from the f32 run", max(abs(a - b) / b for a, b in zip(losses, f32)))


if __name__ == "__main__":
    main()
