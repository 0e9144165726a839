"""Reference training run from transformers + torch.optim.AdamW.

Fine-tunes fixtures/gpt2/tiny-a (dropout off) for 20 steps on fixed batches
with AdamW (lr 3e-3, weight decay 0.01 on matrices only, as transformers' Trainer
groups parameters), a linear schedule with 3 warmup steps and global-norm
clipping at 1.0, and records the loss of every step:

  fixtures/train/parity.safetensors
      batches  (20, 2, 16) int64 input ids; labels = inputs (the model shifts)
      losses   (20,) float64, transformers' loss at each step
      grad_norms (20,) float64, the norm clip_grad_norm_ returned

    python scripts/reference/gen_train_fixtures.py
"""
import pathlib

import torch
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel, get_linear_schedule_with_warmup

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "train"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    model = GPT2LMHeadModel.from_pretrained(ROOT / "fixtures/gpt2/tiny-a", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model.train()
    g = torch.Generator().manual_seed(11)
    # Learnable data: each row counts up from a random start by a random
    # stride (mod 50), so the loss falls far enough in 20 steps that any
    # difference in the update rule would show.
    start = torch.randint(0, 50, (20, 2, 1), generator=g)
    stride = torch.randint(1, 4, (20, 2, 1), generator=g)
    batches = (start + stride * torch.arange(16)) % 50
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.dim() >= 2]
    no_decay = [p for n, p in named if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-3)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=20)
    losses, norms = [], []
    for step in range(20):
        x = batches[step]
        loss = model(x, labels=x).loss
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    save_file({"batches": batches, "losses": torch.tensor(losses, dtype=torch.float64),
               "grad_norms": torch.tensor(norms, dtype=torch.float64)}, str(OUT / "parity.safetensors"),
              metadata={"torch": torch.__version__})
    print("losses", [round(l, 4) for l in losses])


if __name__ == "__main__":
    main()
