"""How well ``data.tokenizer=wikitext`` turns raw text back into WikiText's tokens.

WikiText-2's test text is detokenized (`` @-@ ``, `` @,@ ``, `` @.@ `` -> ``-``, ``,``, ``.``
attached, then sacremoses' Moses detokenizer per line), tokenized back with ``wikitext``, and
compared with the original tokens, line by line:

* recovered: the tokens of the original that the back-tokenized line keeps, in order (the
  matching blocks of ``difflib.SequenceMatcher`` on the two token lists, no junk heuristic),
  over all original tokens;
* ``<unk>`` rate: tokens outside the WikiText-2 train vocabulary or equal to ``<unk>``, over all
  tokens, for the original test text and for the back-tokenized one.

Prints one JSON object. ``<eos>`` is not counted (the line structure is kept).
    python scripts/wikitext_roundtrip.py [--corpus ../shared/corpora/wikitext-2]
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import time
from pathlib import Path

from sacremoses import MosesDetokenizer

from src.data.corpus import UNK
from src.data.tokenizers import LINE_RULES

_ATTACH = re.compile(r" @([-,.])@ ")


def detokenize(line: str, moses: MosesDetokenizer) -> str:
    """WikiText tokens -> raw text: separators attached, then the Moses detokenizer."""
    return moses.detokenize(_ATTACH.sub(r"\1", line).split())


def unk_rate(lines: list[list[str]], vocab: set[str]) -> float:
    total = sum(map(len, lines))
    unknown = sum(1 for line in lines for t in line if t == UNK or t not in vocab)
    return unknown / total


def measure(corpus: Path) -> dict[str, object]:
    split = LINE_RULES["wikitext"]
    moses = MosesDetokenizer(lang="en")
    vocab = {t for line in (corpus / "train.txt").open(encoding="utf-8") for t in line.split()}
    original, back = [], []
    start = time.perf_counter()
    for line in (corpus / "test.txt").open(encoding="utf-8"):
        tokens = line.split()
        if tokens:
            original.append(tokens)
            back.append(split(detokenize(line, moses)))
    seconds = time.perf_counter() - start
    kept = sum(
        block.size
        for a, b in zip(original, back, strict=True)
        for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks()
    )
    n_original = sum(map(len, original))
    return {
        "corpus": str(corpus),
        "lines": len(original),
        "tokens_original": n_original,
        "tokens_back": sum(map(len, back)),
        "recovered": kept / n_original,
        "lines_exact": sum(a == b for a, b in zip(original, back, strict=True)) / len(original),
        "unk_rate_original": unk_rate(original, vocab),
        "unk_rate_back": unk_rate(back, vocab),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "wikitext-2"
    parser.add_argument("--corpus", type=Path, default=default)
    print(json.dumps(measure(parser.parse_args().corpus)))


if __name__ == "__main__":
    main()
