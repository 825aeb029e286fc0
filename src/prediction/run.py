"""``python -m src.predict``: read the documents, run the model(s), write one output row per
document (a CSV, written to a temporary file and renamed, so it appears complete or not at all)
and return the summary that the entry point prints as its last line.

Classifiers: ``label`` (the most probable class) and ``p_<class>`` for every class, the mean of
the models' softmax outputs when several are given (ULMFiT's forward + backward ensemble).
Language models: ``tokens`` (predicted tokens, ``<eos>`` included), ``loss`` (mean nats per
token) and ``ppl`` = exp(loss). Input columns are copied first; one whose name an output column
takes is kept as ``input_<name>``.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from src.utils.io import atomic_write_text

from .inputs import Documents, read_documents
from .predictors import Classifier, check_same_classes, load_models, perplexity

#: documents from which a progress bar is shown (``progress=null``)
PROGRESS_FROM = 2000


def _tokens(model: Any, docs: Documents) -> list[list[str]]:
    return [model.tokenize(text) for text in docs.texts]


def classify(
    models: Sequence[Classifier], docs: Documents, batch_size: int, bar: tqdm
) -> tuple[list[str], np.ndarray, int]:
    """(classes, mean probabilities [N, C], tokens read by the first model)."""
    classes = check_same_classes(models)
    by_tokenizer: dict[str, list[list[str]]] = {}
    total = np.zeros((len(docs), len(classes)), np.float64)
    for model in models:
        name = getattr(model, "tokenizer", "word")
        if name not in by_tokenizer:
            by_tokenizer[name] = _tokens(model, docs)
        total += model.probs(by_tokenizer[name], docs.where, batch_size, bar.update)
    first = by_tokenizer[getattr(models[0], "tokenizer", "word")]
    return classes, total / len(models), sum(map(len, first))


def _rows(docs: Documents, new: dict[str, list[Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    renamed = {c: (f"input_{c}" if c in new else c) for c in docs.columns}
    columns = [*renamed.values(), *new]
    rows = []
    for i, row in enumerate(docs.rows):
        out: dict[str, Any] = {renamed[c]: v for c, v in row.items()}
        out.update({c: values[i] for c, values in new.items()})
        rows.append(out)
    return columns, rows


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """The rows as CSV (header first), atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def predict(
    ckpt_paths: Sequence[str],
    input_path: str,
    output: str,
    *,
    engine: str = "float",
    batch_size: int = 32,
    progress: bool | None = None,
    stdin: BinaryIO | None = None,
) -> dict[str, Any]:
    """Predict on every document of ``input_path``, write ``output``, return the summary."""
    out_path = Path(output).expanduser()
    models, lm = load_models(ckpt_paths, engine)
    docs = read_documents(input_path, stdin)
    show = len(docs) >= PROGRESS_FROM if progress is None else progress
    start = time.perf_counter()
    summary: dict[str, Any] = {"documents": len(docs), "models": len(ckpt_paths)}
    with tqdm(total=len(docs) * max(len(models), 1), disable=not show, unit="doc") as bar:
        if lm is not None:
            tokens = _tokens(lm, docs)
            nll = lm.nll(tokens, docs.where, batch_size, bar.update)
            counts = np.array([len(t) for t in tokens], np.float64)
            loss = nll / counts
            new: dict[str, list[Any]] = {
                "tokens": counts.astype(int).tolist(),
                "loss": loss.tolist(),
                "ppl": [perplexity(v, 1) for v in loss],
            }
            summary.update(tokens=int(counts.sum()), loss=float(nll.sum() / counts.sum()))
            summary["ppl"] = perplexity(float(nll.sum()), int(counts.sum()))
        else:
            classes, probs, n_tokens = classify(models, docs, batch_size, bar)
            labels = [classes[i] for i in probs.argmax(1)]
            new = {"label": labels}
            new.update({f"p_{c}": probs[:, k].tolist() for k, c in enumerate(classes)})
            counts_by_label = Counter(labels)
            summary.update(tokens=n_tokens, labels={c: counts_by_label[c] for c in classes})
    summary["seconds"] = time.perf_counter() - start
    write_csv(out_path, *_rows(docs, new))
    summary.update(output=str(out_path), engine=engine)
    return summary
