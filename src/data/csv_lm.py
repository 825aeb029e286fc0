"""``task=lm data=csv``: the texts of a CSV folder as a language-model corpus (ULMFiT stage 2).

The folder's documents become the three token streams of a corpus, then ``LMDataModule``
reads them as any corpus (token-id cache, BPTT windows):

* train: every row of ``train.csv``, the rows of ``valid.csv`` and ``test.csv`` whose label is
  empty (unlabelled text), and every row of ``unlabelled.csv`` (optional, a ``text`` column);
* valid, test: the labelled rows of ``valid.csv``, ``test.csv``.

Each document is split by ``data.tokenizer`` (``tokenize_document``) and starts with
``document_start`` (``xxbos`` for fastai, ``<eos>`` for the others, as a blank line separates
WikiText's paragraphs). A train word seen fewer than ``data.min_freq`` times, and a valid/test
word not in the train vocabulary that leaves, becomes ``<unk>`` (as WikiText was built).

The token streams are written once per (files' sha256, tokenizer, min_freq) to
``<cache_dir>/csv-<folder>-<key[:16]>/{train,valid,test}.txt`` (one line per document line,
tokens joined by spaces: read back with the ``word`` rule they give the same tokens), built in
a temp folder renamed into place, under a file lock.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from filelock import FileLock

from src.data.cache import CorpusArrays, file_sha256, load_corpus
from src.data.corpus import EOS, SPLITS, UNK
from src.data.datamodule import LMDataModule
from src.data.documents import LabelledDataError, read_rows
from src.data.tokenizers import cache_name, document_start, tokenize_document

FORMAT_VERSION = 1
UNLABELLED = "unlabelled.csv"
SOURCES = ("train.csv", "valid.csv", "test.csv", UNLABELLED)


def read_documents(folder: Path, tokenizer: str) -> dict[str, list[list[str]]]:
    """Each split's documents as tokens (module docstring), each led by its start token."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise LabelledDataError(
            f"{folder}: no such folder. Set data.path to the folder holding train.csv, "
            "valid.csv and test.csv"
        )
    docs: dict[str, list[list[str]]] = {split: [] for split in SPLITS}
    start = document_start(tokenizer)
    files = [(folder / f"{split}.csv", split) for split in SPLITS]
    if (folder / UNLABELLED).is_file():
        files.append((folder / UNLABELLED, "train"))
    for path, split in files:
        for where, text, label in read_rows(path, label=path.name != UNLABELLED):
            tokens = tokenize_document(text, tokenizer)
            if not tokens:
                raise LabelledDataError(
                    f"{path}: {where}: empty text; every document needs at least one word "
                    "(fill the text or delete the row)"
                )
            if tokens[0] != start:
                tokens.insert(0, start)
            docs[split if label.strip() else "train"].append(tokens)
    for split in SPLITS:
        if not docs[split]:
            where = folder / f"{split}.csv"
            raise LabelledDataError(f"{where}: no documents for {split} (valid, test: labelled)")
    return docs


def with_unk(docs: dict[str, list[list[str]]], min_freq: int) -> dict[str, list[list[str]]]:
    """Rare train words (fewer than `min_freq`) and valid/test words outside the train words
    kept -> ``<unk>``; refuses when an unknown word would have no ``<unk>`` to map to."""
    counts = Counter(t for doc in docs["train"] for t in doc)
    kept = {t for t, n in counts.items() if n >= min_freq or t == EOS}
    out = {s: [[t if t in kept else UNK for t in doc] for doc in docs[s]] for s in SPLITS}
    has_unk = any(UNK in doc for doc in out["train"])
    if not has_unk and any(UNK in doc for s in ("valid", "test") for doc in out[s]):
        raise LabelledDataError(
            f"valid/test words missing from train and no train word rarer than "
            f"data.min_freq={min_freq} to learn {UNK} from: raise data.min_freq"
        )
    return out


def corpus_key(folder: Path, tokenizer: str, min_freq: int) -> str:
    """sha256 over the format, the tokenizer, min_freq and each CSV file's sha256."""
    parts = [f"csv_lm={FORMAT_VERSION}", f"tokenizer={cache_name(tokenizer)}"]
    parts.append(f"min_freq={min_freq}")
    for name in SOURCES:
        path = folder / name
        parts.append(f"{name}={file_sha256(path) if path.is_file() else 'absent'}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def token_corpus(folder: Path, tokenizer: str, min_freq: int, cache_dir: Path) -> Path:
    """The corpus folder of the CSV folder's token streams, written once (module docstring)."""
    folder, cache_dir = Path(folder).expanduser(), Path(cache_dir).expanduser()
    key = corpus_key(folder, tokenizer, min_freq)
    out = cache_dir / f"csv-{folder.name}-{key[:16]}"
    if (out / "test.txt").is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "test.txt").is_file():
            docs = with_unk(read_documents(folder, tokenizer), min_freq)
            _write(docs, out)
    return out


def _write(docs: dict[str, list[list[str]]], out: Path) -> None:
    """Each split's documents, one line per ``<eos>``-ended line; into a temp folder renamed
    to `out` (test.txt, written last, marks it complete)."""
    shutil.rmtree(out, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for split in SPLITS:
            with open(tmp / f"{split}.txt", "w", encoding="utf-8") as f:
                for doc in docs[split]:
                    line: list[str] = []
                    for token in doc:
                        if token == EOS:
                            f.write(" ".join(line) + "\n")
                            line = []
                        else:
                            line.append(token)
                    if line:
                        f.write(" ".join(line) + "\n")
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class CSVLMDataModule(LMDataModule):
    """``LMDataModule`` over the token streams of a CSV folder (``data=csv`` with ``task=lm``);
    takes ``LabelledDataConfig``'s keys (``max_len``, ``truncate``, ``num_classes`` unused;
    ``train_subset`` too: every train text, labelled or not, is language-model text)."""

    def __init__(
        self,
        *,
        path: str | None = None,
        tokenizer: str = "word",
        min_freq: int = 2,
        format: str = "csv",  # noqa: A002  (the config key)
        max_len: int | None = None,
        truncate: str | None = None,
        num_classes: int | None = None,
        train_subset: int | None = None,
        subset_seed: int = 0,
        **data: object,
    ) -> None:
        if not path:
            raise ValueError("data.path must be a folder holding train.csv, valid.csv, test.csv")
        if tokenizer == "char":
            raise ValueError("data.tokenizer must be word, wikitext or fastai for task=lm data=csv")
        data["corpus"] = Path(path).expanduser().name or "csv"
        super().__init__(tokenizer=tokenizer, **data)  # type: ignore[arg-type]
        self.path = Path(path).expanduser()
        self.min_freq = min_freq

    def _load(self) -> CorpusArrays:
        if self._arrays is None:
            corpus_dir = token_corpus(self.path, self.tokenizer, self.min_freq, self.cache_dir)
            self._arrays = load_corpus(corpus_dir, "word", self.cache_dir)
        return self._arrays
