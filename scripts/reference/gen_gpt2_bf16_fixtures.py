"""bf16 GPT-2 references: the tiny-a and tiny-b fixture models (written by
gen_gpt2_fixtures.py) run as `model.to(torch.bfloat16)`, as a user of
transformers runs a bf16 model on the CPU.

  fixtures/gpt2/tiny-a-bf16/        tiny-a saved in bfloat16
  fixtures/gpt2/reference_bf16.safetensors
      {a,b}.logits_bf16   logits (2, 12, V) of the bf16 model on {a,b}.ids
                          from reference.safetensors (stored as float32)
      {a,b}.loss_bf16     its loss on {a,b}.labels
      {a,b}.greedy_bf16   its greedy continuation of {a,b}.prompt, 20 tokens

    python scripts/reference/gen_gpt2_bf16_fixtures.py
"""
import pathlib

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "gpt2"


def main():
    print("torch", torch.__version__, "transformers", transformers.__version__)
    ref = load_file(OUT / "reference.safetensors")
    d = {}
    for tag, name in (("a", "tiny-a"), ("b", "tiny-b")):
        model = GPT2LMHeadModel.from_pretrained(OUT / name).eval().to(torch.bfloat16)
        if tag == "a":
            model.save_pretrained(OUT / "tiny-a-bf16")
        with torch.no_grad():
            out = model(ref[f"{tag}.ids"], labels=ref[f"{tag}.labels"])
        d[f"{tag}.logits_bf16"] = out.logits.float()
        d[f"{tag}.loss_bf16"] = out.loss.float().reshape(())
        prompt = ref[f"{tag}.prompt"].reshape(1, -1)
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                                do_sample=False, pad_token_id=model.config.eos_token_id)
        d[f"{tag}.greedy_bf16"] = greedy[0, prompt.shape[1]:]
        err = (out.logits.float() - ref[f"{tag}.logits"]).abs().max().item()
        print(f"{tag}: max |bf16 - f32| logit difference {err:.4f}; greedy equal to f32:",
              torch.equal(d[f"{tag}.greedy_bf16"], ref[f"{tag}.greedy"]))
    meta = {"generated_by": f"scripts/reference/gen_gpt2_bf16_fixtures.py, torch {torch.__version__}"}
    save_file(d, OUT / "reference_bf16.safetensors", metadata=meta)


if __name__ == "__main__":
    main()
