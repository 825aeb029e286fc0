"""A folder of raw-text CSV files (punctuation attached, capitals, hyphens, numbers with commas)
for the raw-text tokenizers and ULMFiT's stages on `data=csv`."""

from __future__ import annotations

import csv
import random
from pathlib import Path

#: sentences of each class, written as people write (the `wikitext` tokenizer splits them)
SENTENCES = {
    "pos": [
        "It's great, isn't it?",
        "A well-known film: I loved it!",
        "Superb acting; 1,250 fans cheered.",
        "GREAT fun, really great.",
    ],
    "neg": [
        "It's awful, isn't it?",
        "A long-winded mess: I hated it!",
        "Poor acting; 3.5 hours wasted.",
        "BAD film, really bad.",
    ],
}


def write_raw_csv(
    folder: Path, n_rows: tuple[int, int, int] = (240, 40, 40), seed: int = 0
) -> Path:
    """`<folder>/{train,valid,test}.csv` (text, label: pos / neg alternating), one unlabelled
    train row, and `unlabelled.csv` (text only); deterministic for `seed`. 240 train rows give
    the smoke experiment's 15 windows of 10 x 20 tokens. Returns `folder`."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "valid", "test"), n_rows, strict=True):
        rows = []
        for i in range(count):
            label = ("pos", "neg")[i % 2]
            text = " ".join(rng.sample(SENTENCES[label], 2))
            rows.append([f"{text} Seen by {rng.randint(1000, 99999):,} people.", label])
        if split == "train":
            rows.append(["Unlabelled text, by a co-author.", ""])
        with open(folder / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    with open(folder / "unlabelled.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text"], ["More raw text: well-made, 2,000 times."]])
    return folder
