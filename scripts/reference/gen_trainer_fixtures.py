"""What transformers' Trainer does with checkpoints, evaluation and the best
model, recorded from real runs, so Kiln's trainer can be held to it
(issue 13).

  fixtures/hub/trainer_runs.json
      for each scenario: its TrainingArguments, the steps at which the
      Trainer evaluated and saved, the checkpoint folders left after each
      save and at the end, the eval losses it saw, best_global_step, and the
      key sets of trainer_state.json and of each kind of log_history entry
  fixtures/hub/trainer_state.json
      the trainer_state.json of the last checkpoint of the "steps" run, as
      transformers writes it (the shape TrainerState.load_from_json reads)

The model is a tiny GPT2LMHeadModel with random weights and the data random
ids: only the Trainer's bookkeeping is recorded, not its losses.

    python scripts/reference/gen_trainer_fixtures.py

torch 2.15, transformers 5.24.
"""
import json
import pathlib
import re
import shutil
import tempfile

import torch
from transformers import (GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainerState,
                          TrainingArguments)

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "hub"

# 20 rows of 16 tokens: 5 steps per epoch at batch 4.
ROWS, BLOCK, VOCAB = 20, 16, 100


class Rows(torch.utils.data.Dataset):
    """Counting rows (start, start+1, … mod VOCAB): learnable, so the eval
    loss falls before a too-high learning rate sends it back up."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, VOCAB, (n, 1), generator=g)
        self.ids = (starts + torch.arange(BLOCK)) % VOCAB

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def checkpoints(out):
    steps = []
    for p in pathlib.Path(out).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m:
            steps.append(int(m.group(1)))
    return sorted(steps)


class Recorder(TrainerCallback):
    def __init__(self, out):
        self.out = out
        self.saves = []
        self.after_save = []
        self.evals = []

    def on_save(self, args, state, control, **kw):
        # Runs after the folder is written and old ones are rotated away.
        self.saves.append(state.global_step)
        self.after_save.append(checkpoints(self.out))

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        self.evals.append([state.global_step, metrics["eval_loss"]])


def run(name, **kw):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                       vocab_size=VOCAB))
    out = tempfile.mkdtemp()
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=4,
                             per_device_eval_batch_size=4, logging_steps=1, use_cpu=True,
                             report_to=[], disable_tqdm=True, seed=0, **kw)
    rec = Recorder(out)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(ROWS, 1),
                      eval_dataset=Rows(8, 2), callbacks=[rec])
    trainer.train()
    last = pathlib.Path(out) / f"checkpoint-{checkpoints(out)[-1]}" if checkpoints(out) else None
    state = json.loads((last / "trainer_state.json").read_text()) if last else None
    if state is not None:
        TrainerState.load_from_json(str(last / "trainer_state.json"))
    kinds = {}
    for e in (state or {}).get("log_history", []):
        kind = "eval" if "eval_loss" in e else "train_summary" if "train_runtime" in e else "train"
        kinds[kind] = sorted(e)
    result = {
        "args": kw,
        "evals": [s for s, _ in rec.evals],
        "eval_losses": [l for _, l in rec.evals],
        "saves": rec.saves,
        "after_save": rec.after_save,
        "final_checkpoints": checkpoints(out),
        "best_global_step": trainer.state.best_global_step,
        "best_model_checkpoint": (pathlib.Path(trainer.state.best_model_checkpoint).name
                                  if trainer.state.best_model_checkpoint else None),
        "state_keys": sorted(state) if state else None,
        "log_entry_keys": kinds,
    }
    if name == "steps":
        shutil.copy(last / "trainer_state.json", OUT / "trainer_state.json")
    shutil.rmtree(out)
    return result


def main():
    runs = {
        # 7 steps, a checkpoint every 2 and at the end, 2 kept.
        "steps": run("steps", max_steps=7, save_steps=2, save_total_limit=2,
                     eval_strategy="steps", eval_steps=2),
        # 2 epochs of 5 steps, evaluated and saved at each epoch's end.
        "epoch": run("epoch", num_train_epochs=2, save_strategy="epoch", eval_strategy="epoch"),
        # No checkpoints at all.
        "no_save": run("no_save", max_steps=3, save_strategy="no"),
        # A learning rate high enough that the eval loss turns back up, so
        # the best checkpoint is not the newest and must survive rotation.
        "best": run("best", max_steps=8, save_steps=2, save_total_limit=1,
                    eval_strategy="steps", eval_steps=2, load_best_model_at_end=True,
                    metric_for_best_model="eval_loss", learning_rate=0.02,
                    lr_scheduler_type="constant"),
    }
    best = runs["best"]
    assert best["best_global_step"] not in (None, best["saves"][-1], best["saves"][0]), best
    (OUT / "trainer_runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    for k, v in runs.items():
        print(k, {x: v[x] for x in ("evals", "saves", "final_checkpoints", "best_global_step")})


main()
