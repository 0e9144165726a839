"""Fixtures for the Hugging Face workflow (issue 13): tokenizer.json files,
a dataset's parquet shards, and the strided perplexity of the transformers
documentation.

  fixtures/hub/tokenizer-small/tokenizer.json
      a small byte-level BPE trained by `tokenizers` on the sonnets, merges in
      the pair form ["a", "b"], with added tokens: <|endoftext|> (special),
      <|user|> (special) and [NOTE] (not special)
  fixtures/hub/tokenizer-small/tokenizer-joined.json
      the same tokenizer with the merges in the older "a b" form
  fixtures/hub/tokenizer-small/expected.json
      {"texts": [...], "ids": [[...], ...]}: `tokenizers`' ids for each text
  fixtures/hub/wikitext-tiny/{train,validation,test}-00000-of-00001.parquet
      one `text` column (snappy, as the hub's parquet conversion writes it),
      lines of the sonnets shaped like wikitext rows ("" rows, " = Title = ")
  fixtures/hub/wikitext-tiny/expected.json
      {split: ids}: GPT-2's `tokenizers` ids of each row, concatenated as
      transformers' examples/pytorch/language-modeling/run_clm.py does
      (tokenize each row, then join the lists with nothing between)
  fixtures/hub/strided.json
      the "Perplexity of fixed-length models" loop of the transformers docs run
      on fixtures/gpt2/tiny-a over fixed ids, for several (max_length, stride)
  fixtures/hub/cache/
      a Hugging Face hub cache as huggingface_hub lays it out: content in
      blobs/ (named by SHA-256 for LFS files, git SHA-1 otherwise),
      snapshots/{commit}/ of relative symlinks into blobs/, refs/main holding
      the commit. Two repositories:
        models--kiln-test--tiny-gpt2: GPT2LMHeadModel(GPT2Config(n_embd=32,
          n_layer=2, n_head=2, n_positions=64)) with random weights, saved by
          save_pretrained with the small tokenizer above as GPT2TokenizerFast
        datasets--kiln-test--tiny-text: the wikitext-tiny shards as config
          "tiny-raw"
  fixtures/hub/cache-expected.json, cache-expected.safetensors
      that model and tokenizer on a text: `tokenizers`' ids and transformers'
      logits; and each split's token count under the small tokenizer,
      concatenated as run_clm.py does

    python scripts/reference/gen_hub_fixtures.py

torch 2.15, transformers 5.24, tokenizers 0.23, pyarrow.
"""
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "hub"
SONNETS = (ROOT / "data/shakespeare/sonnets.txt").read_text()

TEXTS = [
    "Shall I compare thee to a summer's day?",
    "Thou art more lovely and more temperate:<|endoftext|>Rough winds",
    "<|user|>hello [NOTE] there<|endoftext|>",
    "[NOTE][NOTE]  spaces   and\ttabs\n\nnew lines 12345 naïve 東京 🦀",
    "",
]


def gpt2_tokenizer():
    data = ROOT / "models/data/gpt2"
    tok = Tokenizer(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    return tok


def small_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SONNETS.splitlines()[:600], trainer=trainer)
    tok.add_special_tokens([AddedToken("<|user|>", special=True, normalized=True)])
    tok.add_tokens([AddedToken("[NOTE]", special=False, normalized=True)])
    return tok


def write_tokenizers():
    out = OUT / "tokenizer-small"
    out.mkdir(parents=True, exist_ok=True)
    tok = small_tokenizer()
    pair = json.loads(tok.to_str())
    assert isinstance(pair["model"]["merges"][0], list), "tokenizers writes pair-form merges"
    (out / "tokenizer.json").write_text(json.dumps(pair, ensure_ascii=False))
    joined = json.loads(tok.to_str())
    joined["model"]["merges"] = [" ".join(m) for m in joined["model"]["merges"]]
    (out / "tokenizer-joined.json").write_text(json.dumps(joined, ensure_ascii=False))
    # Both spellings load to the same tokenizer in `tokenizers` too.
    again = Tokenizer.from_file(str(out / "tokenizer-joined.json"))
    ids = [tok.encode(t).ids for t in TEXTS]
    assert ids == [again.encode(t).ids for t in TEXTS]
    (out / "expected.json").write_text(json.dumps({"texts": TEXTS, "ids": ids}, ensure_ascii=False))


def wikitext_rows(lines):
    rows = []
    for i, line in enumerate(lines):
        if i % 15 == 0:
            rows += ["", f" = Sonnet {i // 15} = \n", ""]
        rows.append(" " + line.strip() + " \n" if line.strip() else "")
    return rows


def write_dataset():
    out = OUT / "wikitext-tiny"
    out.mkdir(parents=True, exist_ok=True)
    lines = SONNETS.splitlines()
    splits = {"train": lines[0:240], "validation": lines[240:300], "test": lines[300:360]}
    gpt2 = gpt2_tokenizer()
    expected = {}
    for split, part in splits.items():
        rows = wikitext_rows(part)
        table = pa.table({"text": pa.array(rows, type=pa.string())})
        pq.write_table(table, out / f"{split}-00000-of-00001.parquet", compression="snappy", row_group_size=64)
        ids = []
        for row in rows:  # run_clm.py: tokenize each row, then concatenate
            ids += gpt2.encode(row).ids
        expected[split] = ids
    (out / "expected.json").write_text(json.dumps(expected))


def strided_ppl(model, ids, max_length, stride):
    """The loop of https://huggingface.co/docs/transformers/perplexity, verbatim
    but for the device and the progress bar."""
    encodings_input_ids = torch.tensor([ids])
    seq_len = encodings_input_ids.size(1)
    nll_sum = 0.0
    n_tokens = 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings_input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = model(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    avg_nll = nll_sum / n_tokens
    return float(avg_nll), n_tokens, float(torch.exp(avg_nll))


def write_strided():
    model = GPT2LMHeadModel.from_pretrained(ROOT / "fixtures/gpt2/tiny-a")
    model.eval()
    g = torch.Generator().manual_seed(13)
    # 99 ids: no case ends on a one-token window, whose loss the docs' loop
    # makes NaN (0 / 0) — Kiln counts such a window as nothing.
    ids = torch.randint(0, 1000, (99,), generator=g).tolist()
    cases = []
    for max_length, stride in [(16, 5), (16, 16), (20, 7), (64, 32), (16, 3)]:
        avg_nll, n_tokens, ppl = strided_ppl(model, ids, max_length, stride)
        cases.append({"max_length": max_length, "stride": stride, "avg_nll": avg_nll, "n_tokens": n_tokens, "ppl": ppl})
    (OUT / "strided.json").write_text(json.dumps({"model": "fixtures/gpt2/tiny-a", "ids": ids, "cases": cases}, indent=1))


LFS_SUFFIXES = (".safetensors", ".parquet", ".bin", ".pt", ".h5", ".msgpack")


def blob_name(name, data):
    """The blob a hub file is cached under: its LFS SHA-256 for large-file
    types, else its git blob SHA-1 (what the hub reports as the ETag)."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cache_repo(cache, folder, files):
    """Writes `files` ({path in repo: bytes}) as one snapshot of `folder`."""
    repo = cache / folder
    commit = hashlib.sha1(folder.encode()).hexdigest()
    for name, data in sorted(files.items()):
        blob = repo / "blobs" / blob_name(name, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def write_cache():
    cache = OUT / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    tok = GPT2TokenizerFast(tokenizer_object=small_tokenizer(), bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(21)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2,
                                       n_head=2, bos_token_id=eot, eos_token_id=eot))
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in pathlib.Path(tmp).iterdir() if p.is_file()}
    cache_repo(cache, "models--kiln-test--tiny-gpt2", files)
    shards = {f"tiny-raw/{p.name}": p.read_bytes() for p in (OUT / "wikitext-tiny").glob("*.parquet")}
    shards["README.md"] = b"---\nconfigs:\n- config_name: tiny-raw\n---\n# tiny-text\n"
    cache_repo(cache, "datasets--kiln-test--tiny-text", shards)

    text = TEXTS[0]
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    save_file({"ids": torch.tensor(ids, dtype=torch.int64), "logits": logits.contiguous()},
              OUT / "cache-expected.safetensors")
    tokens = {}
    for split in ["train", "validation", "test"]:
        rows = pq.read_table(OUT / "wikitext-tiny" / f"{split}-00000-of-00001.parquet")["text"]
        tokens[split] = sum(len(tok(r.as_py())["input_ids"]) for r in rows)
    (OUT / "cache-expected.json").write_text(json.dumps(
        {"model": "kiln-test/tiny-gpt2", "dataset": "kiln-test/tiny-text:tiny-raw",
         "files": sorted(files), "text": text, "tokens": tokens}, indent=1) + "\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    write_tokenizers()
    write_dataset()
    write_strided()
    write_cache()
    for f in sorted(OUT.rglob("*")):
        if f.is_file() and not f.is_symlink():
            print(f.relative_to(ROOT), f.stat().st_size)


if __name__ == "__main__":
    main()
