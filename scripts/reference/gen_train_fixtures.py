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


def parity_batches():
    """(20, 2, 16) learnable rows: each counts up from a random start by a
    random stride (mod 50), so the loss falls far enough in 20 steps that
    any difference in the update rule would show."""
    g = torch.Generator().manual_seed(11)
    start = torch.randint(0, 50, (20, 2, 1), generator=g)
    stride = torch.randint(1, 4, (20, 2, 1), generator=g)
    return (start + stride * torch.arange(16)) % 50


def parity_run(model, batches, lr, autocast=False):
    """The 20 steps every parity fixture records: AdamW over the parameters
    that require grad (weight decay 0.01 on matrices, as transformers'
    Trainer groups them), a linear schedule with 3 warmup steps, clipping at
    1.0; the forward pass under bf16 autocast if asked. Returns the losses
    and the norms clip_grad_norm_ returned."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if p.dim() >= 2]
    no_decay = [p for n, p in named if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=20)
    losses, norms = [], []
    for step in range(20):
        x = batches[step]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(x, labels=x).loss
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0).item())
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, norms


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    model = GPT2LMHeadModel.from_pretrained(ROOT / "fixtures/gpt2/tiny-a", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model.train()
    batches = parity_batches()
    losses, norms = parity_run(model, batches, 3e-3)
    save_file({"batches": batches, "losses": torch.tensor(losses, dtype=torch.float64),
               "grad_norms": torch.tensor(norms, dtype=torch.float64)}, str(OUT / "parity.safetensors"),
              metadata={"torch": torch.__version__})
    print("losses", [round(l, 4) for l in losses])


if __name__ == "__main__":
    main()
