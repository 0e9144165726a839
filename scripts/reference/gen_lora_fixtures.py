"""LoRA references from PEFT (issue 16): an adapter in PEFT's format, the
logits it gives, and a 20-step LoRA fine-tune with torch AdamW.

  fixtures/lora/adapter/{adapter_config.json,adapter_model.safetensors}
      PEFT's LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
      target_modules=["c_attn", "c_proj"]) on fixtures/gpt2/tiny-a, saved by
      save_pretrained, with lora_B drawn at random (PEFT starts it at zero,
      which would make the adapter a no-op and the test blind)
  fixtures/lora/reference.safetensors
      ids (2, 16); logits (2, 16, V): PeftModel.from_pretrained(tiny-a,
      adapter) on ids; merged_logits: the same after merge_and_unload();
      losses, grad_norms (20,): training that adapter for 20 steps on the
      batches of gen_train_fixtures.py with AdamW (lr 3e-2, weight decay 0.01
      on matrices, linear schedule with 3 warmup steps, clipping at 1.0),
      only the adapter trainable, as Trainer + PEFT do

    python scripts/reference/gen_lora_fixtures.py

torch 2.15, transformers 5.24, peft.
"""
import json
import pathlib

import peft
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel

from gen_train_fixtures import parity_batches, parity_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "lora"
BASE = ROOT / "fixtures/gpt2/tiny-a"


def base():
    return GPT2LMHeadModel.from_pretrained(BASE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(3)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn", "c_proj"],
                     fan_in_fan_out=True, task_type="CAUSAL_LM")
    model = get_peft_model(base(), cfg)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.save_pretrained(OUT / "adapter")
    # A path relative to the repository, not to this machine; no model card.
    conf = json.loads((OUT / "adapter/adapter_config.json").read_text())
    conf["base_model_name_or_path"] = "fixtures/gpt2/tiny-a"
    (OUT / "adapter/adapter_config.json").write_text(json.dumps(conf, indent=2, sort_keys=True))
    (OUT / "adapter/README.md").unlink(missing_ok=True)

    batches = parity_batches()
    ids = batches[0]

    loaded = PeftModel.from_pretrained(base(), OUT / "adapter")
    loaded.eval()
    with torch.no_grad():
        logits = loaded(ids).logits
        merged = loaded.merge_and_unload()
        merged_logits = merged(ids).logits

    model = PeftModel.from_pretrained(base(), OUT / "adapter", is_trainable=True)
    model.train()
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    losses, norms = parity_run(model, batches, 3e-2)
    save_file({"ids": ids.contiguous(), "logits": logits.contiguous(), "merged_logits": merged_logits.contiguous(),
               "losses": torch.tensor(losses, dtype=torch.float64),
               "grad_norms": torch.tensor(norms, dtype=torch.float64)},
              str(OUT / "reference.safetensors"), metadata={"torch": torch.__version__, "peft": peft.__version__})
    print("losses", [round(l, 4) for l in losses])


if __name__ == "__main__":
    main()
