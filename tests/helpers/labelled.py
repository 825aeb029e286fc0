"""A tiny labelled CSV folder for `data=csv` tests (and end-to-end classifier runs)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

#: two classes a bag of words can tell apart: the word pools overlap only in SHARED
POOLS = {
    "animal": ["cat", "dog", "mouse", "horse", "bird", "fish"],
    "colour": ["red", "blue", "green", "yellow", "black", "white"],
}
SHARED = ["the", "a", "is", "was", "very", "small", "big", "and"]


def write_tiny_csv(
    folder: Path, n_rows: tuple[int, int, int] = (48, 12, 12), seed: int = 0
) -> Path:
    """`<folder>/{train,valid,test}.csv` (columns text, label; labels `animal`, `colour`),
    deterministic for `seed`. Each split has both classes, alternating by row; documents have
    3 to 12 words, and the first train row is quoted (a comma, a doubled quote, a newline).
    Every word of valid/test occurs in train at least twice. Returns `folder`."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = sorted(POOLS)
    for split, count in zip(("train", "valid", "test"), n_rows, strict=True):
        rows = []
        for i in range(count):
            label = labels[i % len(labels)]
            n = rng.randint(3, 12)
            words = [rng.choice(POOLS[label] if rng.random() < 0.5 else SHARED) for _ in range(n)]
            rows.append({"text": " ".join(words), "label": label})
        if split == "train":
            rows[0]["text"] = 'the cat , said "hi"\nand the dog'
            for label in labels:  # every word at least twice (min_freq=2 keeps it)
                rows.append({"text": " ".join(POOLS[label] * 2 + SHARED * 2), "label": label})
        with open(folder / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    return folder
