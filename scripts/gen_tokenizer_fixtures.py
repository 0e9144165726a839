#!/usr/bin/env python3
"""Regenerate the GPT-2 tokenizer test fixtures from Hugging Face `tokenizers`.

Run from anywhere, with a Python that has `tokenizers` installed:

    python scripts/gen_tokenizer_fixtures.py [--any-version]

It builds the reference tokenizer from the repo's built-in vocabulary
(models/data/gpt2/encoder.json + vocab.bpe) exactly as the data README says,
adds `<|endoftext|>` as a special token (as transformers' GPT2TokenizerFast
does), and writes into models/tests/fixtures/tokenizer/:

  edge_cases.json    [{"text", "ids"}] hand-picked hard cases
  random.json        [{"text", "ids"}] seeded random mixes of scripts,
                     whitespace, contractions and special-token fragments
  ordinary.json      [{"text", "ids"}] encoded WITHOUT the special token
                     (what Tokenizer::encode_ordinary must give)
  shakespeare.json   [{"file", ...}] per corpus file: bytes, token count, FNV-1a 64 hash of
                     the ids (little-endian u32), first and last 32 ids
  char_classes.json  for every Unicode scalar value, the class the reference
                     pre-tokenizer gives it (letter / number / whitespace;
                     the rest is "other"), as inclusive code point ranges
  manifest.json      the tokenizers version and what was written

The fixtures are pinned to tokenizers 0.23.3; pass --any-version to
regenerate with another version on purpose.
"""
import argparse
import json
import os
import random
import sys
from pathlib import Path

PINNED_VERSION = "0.23.3"
ROOT = Path(__file__).resolve().parent.parent
VOCAB_DIR = ROOT / "models" / "data" / "gpt2"
CORPUS_DIR = ROOT / "data" / "shakespeare"
OUT_DIR = ROOT / "models" / "tests" / "fixtures" / "tokenizer"
EOT = "<|endoftext|>"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import tokenizers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402


def reference(with_special: bool) -> Tokenizer:
    tk = Tokenizer(
        models.BPE.from_file(str(VOCAB_DIR / "encoder.json"), str(VOCAB_DIR / "vocab.bpe"))
    )
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    if with_special:
        tk.add_special_tokens([EOT])
    return tk


EDGE_CASES = [
    # basics
    "", " ", "  ", "a", "Hello world, it's 2026!", "Hello", " Hello", "hello world",
    # whitespace runs, trailing whitespace, line endings
    "\n", "\t", "\r", "\r\n", "\n\n", "\n\n\n", "a  b", "a   b", "a    b",
    "a \n b", "a\n\nb", "a\n\n\nb", "a\n b", "a \nb", " a", "  a", "   a",
    "a ", "a  ", "a   ", "a\n", "a\n\n", "a \n", "a\t\tb", "a \t b", "\t a", "\t\ta",
    "line1\r\nline2\r\n", "line1\r\n\r\nline2", "trailing spaces   ", "trailing newline\n",
    "   \n   ", " \n \n ", "\n \n", "x\u00a0y", "x\u00a0\u00a0y", "x \u00a0y", "x\u00a0 y",
    "\u3000x", "x\u3000", "a\u2028b", "a\u2029b", "a\u0085b", "a\x0bb\x0cc",
    "\x1c\x1d\x1e\x1fx", "x\u200by", "x\u2009y\u200az", "\u180e", "a\u1680b", "\u205f\u202f",
    "    def f(x):\n        return x\n", "\tindented\n\t\tmore\n",
    # contractions, all cases
    "it's", "it'S", "IT'S", "we'll", "WE'LL", "We'Ll", "we'lL", "you're", "YOU'RE",
    "you'Re", "I've", "I'VE", "I'vE", "I'm", "I'M", "he'd", "HE'D", "don't", "DON'T",
    "can'T", "'s", "'S", "'t", "'re", "'ve", "'m", "'ll", "'d", "'sup", "'tis", "''s",
    "' s", " 's", " 'll", "rock'n'roll", "o'clock", "y'all", "Jones'", "x'", "'", "''''",
    "it\u2019s curly", "'r", "'l", "'v", "'e", "n't", "'s's's", "!'s", "1's", "é's",
    # digits and numbers
    "0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000",
    "12345678901234567890123456789", "2026-11-26", "v1.2.3", " 99 bottles", "x1y2z3",
    "\u0661\u0662\u0663", "\u2460\u2461", "\u00bd", "\u216b", "x\u00b2", "\u0663\u0664 abc",
    "\U0001d7d8\U0001d7d9\U0001d7da", "\uff11\uff12", " \u0967\u0968",
    # punctuation runs
    "!!!", "?!?!", "...", "\u2014", "--", "-->", "(a)", "[b]", "{c}", "#$%^&*", "@user",
    "a.b.c", "foo_bar", "e-mail", "C++", "<html>", "http://example.com/path?x=1&y=2",
    "```rust\nfn main() {}\n```", "a, b; c: d!", " ... ", "!\n!", "~~~", "\\\\", "\"quoted\"",
    "I said, \"Hello!\" \u2014 and left.",
    # scripts, marks, emoji
    "na\u00efve caf\u00e9", "\u00dcn\u00efc\u00f6d\u00e9", "stra\u00dfe", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442", "\u05e2\u05d1\u05e8\u05d9\u05ea",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd", "\u0e44\u0e17\u0e22", "\u4e2d\u6587\u5b57\u7b26", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\ud55c\uad6d\uc5b4", "\u30ab\u30bf\u30ab\u30ca", "e\u0301", "a\u0308\u0301", " e\u0301",
    "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307l\u036e\u0312\u036bg\u030c\u0317\u035a\u031ao",
    "\ufb01 ligature", "\u01c5", "\U0001d518\U0001d52b\U0001d526\U0001d520", "\U00020000\U0002a6d6",
    "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f1fa\U0001f1f8\U0001f1eb\U0001f1f7", "\u2764\ufe0f",
    "1\ufe0f\u20e3", "emoji\U0001f600in\U0001f600text", " \U0001f980 rust", "\U0001f980\U0001f980\U0001f980",
    "Hi \U0001f44b!", "\u20ac100", "\u00a3 and \u00a5",
    # special token inside text and next to words
    EOT, "a" + EOT + "b", EOT + "hello", "hello " + EOT + " world", "hello" + EOT,
    " " + EOT + " ", EOT + EOT, EOT + "\n\nNext document", "<|endoftext", "<|endoftext|",
    "<" + EOT + ">", "<|ENDOFTEXT|>", "endoftext|>", "<|endoftext |>", "x " + EOT,
    "The end." + EOT + "Chapter 2", EOT + " " + EOT,
    # odd code points
    "\x00", "a\x00b", "\x7f", "\u00ad", "\ufeffBOM", "\U0010ffff", "\ue000", "\ufffd", "\u00a0",
    # long runs
    "supercalifragilisticexpialidocious", "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 100, " " * 50, "ab" * 30, "-" * 40, "=" * 80 + "\n", "\n" * 20, "!" * 33, "9" * 50,
    " " * 10 + "x", "\t" * 5 + "x", "\U0001f600" * 10,
    # corpus-like
    "HAMLET. To be, or not to be, that is the question:\n",
    "  Enter KING CLAUDIUS, QUEEN GERTRUDE, POLONIUS.\n\n",
    "Tab\tseparated\tvalues\n",
]

ORDINARY_CASES = [
    EOT, "a" + EOT + "b", "hello " + EOT + " world", EOT + EOT, "<" + EOT + ">",
    "Hello world, it's 2026!", "",
]

RANDOM_ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + [" "] * 12 + ["\n"] * 4 + ["\t", "\r\n", "\r", "  ", "   "]
    + ["'", "'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'ll", "'LL", "'d", "'D"]
    + list(".,;:!?-_()[]{}\"/\\@#$%^&*+=<>|~`")
    + ["\u00e9", "\u00df", "\u0416", "\u4e2d", "\u30fc", "\u0639", "\u0915", "\u093f", "\u05d0", "\u01c5"]
    + ["\u0663", "\u00bd", "\u216b", "\u00b2", "\U0001d7d8"]
    + ["\u00a0", "\u3000", "\u2028", "\u0085", "\x0b", "\x0c", "\u2009", "\u1680"]
    + ["\u0301", "\u0308", "\u200d", "\ufe0f", "\u200b", "\x00", "\x1f", "\u00ad"]
    + ["\U0001f600", "\U0001f44d", "\U0001f3fd", "\U0001f980", "\u2764", "\U0001f1fa"]
    + [EOT, "<|", "|>", "endoftext"]
)


def random_texts(n: int, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(0, 40)
        out.append("".join(rng.choice(RANDOM_ALPHABET) for _ in range(k)))
    return out


def fnv1a64(ids) -> int:
    h = 0xCBF29CE484222325
    for i in ids:
        for b in i.to_bytes(4, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def char_classes() -> dict:
    """Classify every scalar value by how the reference splits it.

    "a"+c is one piece iff c is a letter (\\p{L}); "1"+c iff a number; "!"+c
    iff "other"; the rest is whitespace (\\s).
    """
    pt = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)

    def one_piece(s):
        return len(pt.pre_tokenize_str(s)) == 1

    ranges = {"letter": [], "number": [], "whitespace": []}
    current = None  # (class, lo, hi)
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if one_piece("a" + c):
            k = "letter"
        elif one_piece("1" + c):
            k = "number"
        elif one_piece("!" + c):
            k = "other"
        else:
            k = "whitespace"
        if current and current[0] == k and current[2] + 1 == cp:
            current[2] = cp
        else:
            if current and current[0] != "other":
                ranges[current[0]].append([current[1], current[2]])
            current = [k, cp, cp]
    if current and current[0] != "other":
        ranges[current[0]].append([current[1], current[2]])
    return ranges


def write_json(name: str, value, compact_lists: bool = False) -> None:
    path = OUT_DIR / name
    if compact_lists:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        # One case per line: readable diffs, small files.
        if isinstance(value, list):
            text = "[\n" + ",\n".join(
                json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in value
            ) + "\n]"
        else:
            text = json.dumps(value, ensure_ascii=False, indent=1)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size:,} bytes)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--any-version", action="store_true",
                    help=f"allow a tokenizers version other than {PINNED_VERSION}")
    args = ap.parse_args()
    print(f"tokenizers {tokenizers.__version__} (pinned: {PINNED_VERSION})")
    if tokenizers.__version__ != PINNED_VERSION and not args.any_version:
        print("refusing to regenerate with another version; pass --any-version", file=sys.stderr)
        return 1
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tk = reference(with_special=True)
    plain = reference(with_special=False)
    assert tk.encode("Hello world, it's 2026!").ids == [15496, 995, 11, 340, 338, 1160, 2075, 0]

    def cases(texts, t):
        seen, out = set(), []
        for s in texts:
            if s in seen:
                continue
            seen.add(s)
            out.append({"text": s, "ids": t.encode(s).ids})
        return out

    edge = cases(EDGE_CASES, tk)
    write_json("edge_cases.json", edge)
    rnd = cases(random_texts(400, seed=2026), tk)
    write_json("random.json", rnd)
    write_json("ordinary.json", cases(ORDINARY_CASES, plain))

    files, total = [], 0
    for path in sorted(CORPUS_DIR.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        ids = tk.encode(text).ids
        total += len(ids)
        files.append({
            "file": path.name,
            "bytes": len(text.encode("utf-8")),
            "tokens": len(ids),
            "fnv1a64": f"{fnv1a64(ids):016x}",
            "first": ids[:32],
            "last": ids[-32:],
        })
    write_json("shakespeare.json", files)
    print(f"  {len(files)} corpus files, {total:,} tokens")

    classes = char_classes()
    write_json("char_classes.json", classes, compact_lists=True)
    print("  " + ", ".join(f"{k}: {len(v)} ranges" for k, v in classes.items()))

    write_json("manifest.json", {
        "tokenizers_version": tokenizers.__version__,
        "generator": "scripts/gen_tokenizer_fixtures.py",
        "vocab": "models/data/gpt2/{encoder.json,vocab.bpe}",
        "edge_cases": len(edge),
        "random": len(rnd),
        "ordinary": len(ORDINARY_CASES),
        "shakespeare_files": len(files),
        "shakespeare_tokens": total,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
