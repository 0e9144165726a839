"""Reference GPT-2 models and outputs from Hugging Face transformers.

Builds random-init GPT2LMHeadModel models (no pretrained weights are
downloadable here; save_pretrained writes exactly the pretrained layout) and
records what transformers computes on them:

  fixtures/gpt2/tiny-a/        2 layers, 2 heads, width 32 (head size 16), vocab 1000
  fixtures/gpt2/tiny-b/        3 layers, 3 heads, width 48 (head size 16), vocab 500
  fixtures/gpt2/tiny-a-f16/    tiny-a saved in float16
  fixtures/gpt2/reference.safetensors
      {a,b}.ids          input ids (2, 12)
      {a,b}.logits       logits (2, 12, V)
      {a,b}.labels       labels with -100 at some positions
      {a,b}.loss         transformers' loss for those labels
      {a,b}.prompt       a 5-token prompt
      {a,b}.greedy       greedy continuation, 20 new tokens
      a.batch_prompts / a.batch_mask / a.batch_greedy: two prompts of
                         different lengths, left-padded, generated together

If fixtures/gpt2/kiln-saved/ exists (written by `KILN_WRITE_FIXTURES=1 cargo
test -p kiln-models --test gpt2_reference`), it is loaded with
GPT2LMHeadModel.from_pretrained and its logits checked against tiny-a's.

    python scripts/reference/gen_gpt2_fixtures.py
"""
import copy
import pathlib

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "gpt2"


def build(seed, **cfg):
    torch.manual_seed(seed)
    config = GPT2Config(**cfg)
    model = GPT2LMHeadModel(config).eval()
    return model


def record(tag, model, d):
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(100)
    ids = torch.randint(0, V, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, 3] = -100
    labels[1, :4] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
    d[f"{tag}.ids"] = ids
    d[f"{tag}.logits"] = out.logits
    d[f"{tag}.labels"] = labels
    d[f"{tag}.loss"] = out.loss.reshape(())
    prompt = torch.randint(0, V, (1, 5), generator=g)
    greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False,
                            pad_token_id=model.config.eos_token_id)
    d[f"{tag}.prompt"] = prompt[0]
    d[f"{tag}.greedy"] = greedy[0, 5:]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    print("torch", torch.__version__, "transformers", transformers.__version__)
    a = build(0, vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=999, eos_token_id=999)
    b = build(1, vocab_size=500, n_positions=32, n_embd=48, n_layer=3, n_head=3, bos_token_id=499, eos_token_id=499)
    a.save_pretrained(OUT / "tiny-a")
    b.save_pretrained(OUT / "tiny-b")
    # half() converts in place: save the f16 copy from a deep copy so the
    # f32 model that the references come from keeps its exact weights.
    copy.deepcopy(a).half().save_pretrained(OUT / "tiny-a-f16")
    d = {}
    record("a", a, d)
    record("b", b, d)
    # A batch of two prompts of different lengths, left-padded as generate expects.
    g = torch.Generator().manual_seed(7)
    p1 = torch.randint(0, 999, (7,), generator=g)
    p2 = torch.randint(0, 999, (3,), generator=g)
    pad = a.config.eos_token_id
    batch = torch.stack([p1, torch.cat([torch.full((4,), pad), p2])])
    mask = torch.stack([torch.ones(7, dtype=torch.long), torch.cat([torch.zeros(4, dtype=torch.long), torch.ones(3, dtype=torch.long)])])
    out = a.generate(batch, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=pad)
    d["a.batch_prompts"] = batch
    d["a.batch_mask"] = mask
    d["a.batch_greedy"] = out[:, 7:]
    tensors = {k: v.contiguous() for k, v in d.items()}
    save_file(tensors, str(OUT / "reference.safetensors"), metadata={"torch": torch.__version__, "transformers": transformers.__version__})
    print("wrote fixtures/gpt2/{tiny-a,tiny-b,tiny-a-f16,reference.safetensors}")

    saved = OUT / "kiln-saved"
    if saved.exists():
        k = GPT2LMHeadModel.from_pretrained(saved).eval()
        with torch.no_grad():
            diff = (k(d["a.ids"]).logits - d["a.logits"]).abs().max().item()
        assert diff < 1e-5, f"Kiln-saved model's logits differ by {diff}"
        print("kiln-saved/ loads in GPT2LMHeadModel.from_pretrained; max logit diff", diff)


if __name__ == "__main__":
    main()
