"""`data=wt2_sections`: WikiText paragraphs labelled with the heading of their section.

The rule, applied to each of `train.txt`, `valid.txt`, `test.txt` of the corpus folder on its
own (so no valid or test paragraph was seen by a language model pretrained on train.txt):

* A heading is a line `= Title =` (level 1: an article), `= = Title = =` (level 2: a
  section), `= = = Title = = =` (level 3) and so on: equal runs of ` =` on both sides.
* A paragraph is any other non-blank line. It is labelled with the title of the level-2
  section it is in; a level-3 or deeper sub-section inherits its level-2 section (e.g. the
  paragraphs under `= = = Music = = =` inside `= = Development = =` are Development). A
  paragraph before an article's first level-2 heading (the lead) has no label and is dropped.
* Informative headings: never one containing `<unk>`; never a reference or navigation heading
  (`NON_INFORMATIVE`; WikiText dropped those sections, the list guards other corpora).
* The classes are the `num_classes` informative headings that head the most sections in
  train.txt, i.e. that the most articles use: counting paragraphs instead would let one long
  article make its own heading a class. Ties go to the heading with more train paragraphs,
  then to the name. Paragraphs of other sections are dropped, in every split.

On WikiText-2 with 8 classes: Background, Description, History, Legacy, Plot, Production,
Reception, Route description. Some are easy from surface words ("Route description" names
highways and junctions, "Plot" retells a story, usually in the present tense). The heading is
never part of the text, and its word rarely is, except "route" (41 of the 83 train Route
description paragraphs) and "production" (69 of 339).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from src.data.corpus import SPLITS, UNK
from src.data.documents import LabelledDataError, RawSplit, tokenize_text

NON_INFORMATIVE = frozenset(
    {
        "References",
        "Notes",
        "External links",
        "See also",
        "Further reading",
        "Bibliography",
        "Sources",
        "Footnotes",
        "Citations",
    }
)


class Paragraph(NamedTuple):
    """One paragraph line: its level-2 section (None in an article's lead), tokens, line."""

    section: str | None
    tokens: list[str]
    lineno: int


def heading(words: list[str]) -> tuple[int, str] | None:
    """(level, title) of a heading line's words, else None (`= = A = =` -> (2, "A"))."""
    if len(words) < 3 or words[0] != "=" or words[-1] != "=":
        return None
    level = 0
    while level < len(words) and words[level] == "=":
        level += 1
    if len(words) < 2 * level + 1 or any(w != "=" for w in words[-level:]):
        return None
    title = words[level:-level]
    if title[-1] == "=":  # unequal runs of `=` on the two sides: not a heading
        return None
    return level, " ".join(title)


def paragraphs(path: Path) -> Iterator[Paragraph]:
    """Every paragraph of a WikiText file with its level-2 section."""
    for section, line, lineno in _lines(path):
        if line is not None:
            yield Paragraph(section, tokenize_text(line), lineno)


def _lines(path: Path) -> Iterator[tuple[str | None, str | None, int]]:
    """(level-2 section, paragraph line or None for a level-2 heading, line number)."""
    section: str | None = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.lstrip().startswith("="):
                if not line.isspace():
                    yield section, line, lineno
                continue
            found = heading(line.split())
            if found is None:
                yield section, line, lineno
            elif found[0] == 1:
                section = None
            elif found[0] == 2:
                section = found[1]
                yield section, None, lineno


def informative(title: str) -> bool:
    """Whether a section heading may be a class (no `<unk>`, not a reference heading)."""
    return UNK not in title.split() and title not in NON_INFORMATIVE


def choose_sections(train_path: Path, num_classes: int) -> list[str]:
    """The `num_classes` informative headings heading the most sections of the train file."""
    sections: Counter[str] = Counter()  # level-2 headings
    lines: Counter[str] = Counter()  # paragraphs under them
    for section, line, _ in _lines(train_path):
        if section is not None and informative(section):
            (lines if line is not None else sections)[section] += 1
    ranked = sorted(sections, key=lambda t: (-sections[t], -lines[t], t))
    ranked = [t for t in ranked if lines[t] > 0]
    if len(ranked) < num_classes:
        raise LabelledDataError(
            f"{train_path}: only {len(ranked)} informative level-2 headings (= = Title = =) "
            f"with paragraphs, fewer than data.num_classes={num_classes}; lower "
            "data.num_classes, or check that data.corpus is a WikiText corpus"
        )
    return ranked[:num_classes]


def read_sections(corpus_dir: Path, num_classes: int) -> tuple[dict[str, RawSplit], list[str]]:
    """The three labelled splits of a WikiText folder and the classes (sorted by name)."""
    corpus_dir = Path(corpus_dir)
    paths = {split: corpus_dir / f"{split}.txt" for split in SPLITS}
    for path in paths.values():
        if not path.is_file():
            raise LabelledDataError(f"{path}: file not found (data=wt2_sections reads it)")
    classes = sorted(choose_sections(paths["train"], num_classes))
    kept = set(classes)
    splits = {}
    for split, path in paths.items():
        raw = RawSplit(split, path)
        for section, line, lineno in _lines(path):
            if line is not None and section in kept:  # tokenize only the kept paragraphs
                raw.tokens.append(tokenize_text(line))
                raw.labels.append(section)
                raw.where.append(f"line {lineno}")
        splits[split] = raw
    return splits, classes
