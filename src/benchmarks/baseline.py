"""The classical baseline a text classifier must beat: TF-IDF + logistic regression.

``python -m src.benchmarks.baseline data=wt2_sections budget=100 seeds=[0,1,2,3,4]``
(``data=csv data.path=DIR`` for a CSV folder; ``budget=null``: all of train).

Exactly the classifier's split: the documents come from `ClassifyDataModule` with
``data.train_subset=budget data.subset_seed=<seed>`` (`src/data/subsets.py`), so texts, labels,
classes and the labelled subset are the classifier's. The features are the tokens the
classifier reads (``data.tokenizer``, `<eos>` after each line, case kept, cut to
``data.max_len`` from ``data.truncate``'s end), before the vocabulary's `<unk>` mapping; the
TF-IDF vocabulary is fitted on the labelled subset alone (the rest of train is unlabelled).

Per seed: every setting of ``grid`` (C, class_weight, word n-gram range (1, ngram_max),
sublinear_tf, lowercase) is fitted on the subset and scored on the validation split; the best by
``select`` (valid accuracy, the classifier's ``optimized_metric``; ties: the other metric, then
grid order) is scored once on test. Accuracy and macro F1 are `src.eval`'s for classifiers
(torchmetrics, `classification_metrics`). Needs scikit-learn (the ``bench`` extra), which the
product never imports. Prints a table, then one JSON line; writes ``results.json`` in the run
folder (atomically).
"""

from __future__ import annotations

import itertools
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, OmegaConf

import src.config  # noqa: F401  (registers data/labelled_schema for conf/data/*.yaml)
from src.checks import EXIT_CODE, one_line_config_errors
from src.data.documents import RawSplit
from src.data.labelled import ClassifyDataModule
from src.prediction.classifier_eval import classification_metrics
from src.utils.io import atomic_write_json

log = logging.getLogger(__name__)
METRICS = {"acc": "f1", "f1": "acc"}  # selection metric -> its tie-breaker


class Select(str, Enum):
    acc = "acc"  # validation accuracy (the classifier's optimized_metric, val/acc)
    f1 = "f1"  # validation macro F1


@dataclass
class GridConfig:
    C: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0])
    class_weight: list[Any] = field(default_factory=lambda: [None, "balanced"])
    ngram_max: list[int] = field(default_factory=lambda: [1, 2])  # word n-grams (1, ngram_max)
    sublinear_tf: list[bool] = field(default_factory=lambda: [False, True])  # 1 + log(tf)
    lowercase: list[bool] = field(default_factory=lambda: [False, True])  # tokens lowercased


@dataclass
class BaselineConfig:
    task_name: str = "baseline"
    budget: int | None = None  # labelled train documents (data.train_subset); null: all
    seeds: list[int] = field(default_factory=lambda: [0])  # data.subset_seed of each run
    grid: GridConfig = field(default_factory=GridConfig)
    select: Select = Select.acc
    max_iter: int = 5000  # lbfgs iterations of the logistic regression
    data: Any = MISSING
    paths: Any = MISSING


ConfigStore.instance().store(name="baseline_schema", node=BaselineConfig)


def _same(tokens: list[str]) -> list[str]:
    """The documents are token lists already: TF-IDF's preprocessor and tokenizer."""
    return tokens


def _lower(tokens: list[str]) -> list[str]:
    """The preprocessor of ``lowercase=true`` (`<unk>`, `<eos>` stay as they are)."""
    return [t.lower() for t in tokens]


def read_split(dm: ClassifyDataModule, split: str) -> tuple[list[list[str]], np.ndarray]:
    """A split's documents as the classifier reads them (cut to max_len) and their class ids."""
    raw: RawSplit = dm.raw_split(split)
    cut = (lambda t: t[-dm.max_len :]) if dm.truncate == "tail" else (lambda t: t[: dm.max_len])
    class_id = {name: i for i, name in enumerate(dm.classes)}
    return [cut(t) for t in raw.tokens], np.array([class_id[x] for x in raw.labels])


def scores(model: Any, x: Any, y: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy and macro F1 of a fitted model (src.eval's torchmetrics definitions)."""
    logits = torch.from_numpy(np.log(np.clip(model.predict_proba(x), 1e-12, None)))
    found = classification_metrics(logits, torch.from_numpy(y), classes)
    return {"acc": found["acc"], "f1": found["f1"]}


def fit_one_subset(cfg: DictConfig, budget: int | None, seed: int) -> dict[str, Any]:
    """Grid on valid, then the chosen setting once on test, for one labelled subset."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.update(train_subset=budget, subset_seed=seed)  # type: ignore[union-attr]
    dm = ClassifyDataModule(**data, seed=seed)  # type: ignore[arg-type]
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (
        read_split(dm, s) for s in ("train", "valid", "test")
    )
    select, tie = cfg.select.value, METRICS[cfg.select.value]
    best: tuple[tuple[float, float], dict[str, Any], Any, Any] | None = None
    grid = cfg.grid
    features = itertools.product(grid.ngram_max, grid.sublinear_tf, grid.lowercase)
    for ngram_max, sublinear, lower in features:
        ngram_max = int(ngram_max)
        tfidf = TfidfVectorizer(
            preprocessor=_lower if lower else _same, tokenizer=_same, token_pattern=None,
            lowercase=False, ngram_range=(1, ngram_max), sublinear_tf=bool(sublinear),
        )  # fmt: skip
        train_features = tfidf.fit_transform(x_train)
        valid_features = tfidf.transform(x_valid)
        for C, weight in itertools.product(grid.C, grid.class_weight):
            model = LogisticRegression(C=float(C), class_weight=weight, max_iter=cfg.max_iter)
            model.fit(train_features, y_train)
            found = scores(model, valid_features, y_valid, dm.classes)
            rank = (found[select], found[tie])
            if best is None or rank > best[0]:  # a tie keeps the earlier setting
                settings = {"C": float(C), "class_weight": weight, "ngram_range": [1, ngram_max],
                            "sublinear_tf": bool(sublinear), "lowercase": bool(lower)}  # fmt: skip
                best = (rank, {**settings, "valid": found}, tfidf, model)
    if best is None:
        raise ValueError("grid: every list (C, class_weight, ngram_max, ...) needs a value")
    _, chosen, tfidf, model = best
    valid = chosen.pop("valid")
    test = scores(model, tfidf.transform(x_test), y_test, dm.classes)
    log.info(
        "seed %d, %d documents: %s; valid %s; test %s", seed, len(y_train), chosen, valid, test
    )
    return {
        "seed": seed,
        "train_documents": len(y_train),
        "unlabelled_documents": len(dm.unlabelled_train),
        "settings": chosen,
        "valid_acc": valid["acc"],
        "valid_f1": valid["f1"],
        "test_acc": test["acc"],
        "test_f1": test["f1"],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1; 0 for one run) of the test figures."""
    out: dict[str, float] = {}
    for key in ("test_acc", "test_f1"):
        values = [r[key] for r in runs]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every seed's run and their summary (the JSON line)."""
    if not cfg.seeds:
        raise ValueError("seeds must list at least one data.subset_seed, e.g. seeds=[0,1,2]")
    start = time.perf_counter()
    runs = [fit_one_subset(cfg, cfg.budget, int(seed)) for seed in cfg.seeds]
    data = cfg.data
    return {
        "method": "tfidf_logreg",
        "data": data.format.value if hasattr(data.format, "value") else str(data.format),
        "source": str(data.path) if data.get("path") else str(data.corpus),
        "tokenizer": str(getattr(data.tokenizer, "value", data.tokenizer)),
        "budget": cfg.budget,
        "select": f"valid_{cfg.select.value}",
        "runs": runs,
        **summarize(runs),
        "seconds": round(time.perf_counter() - start, 2),
    }


def print_table(figures: dict[str, Any]) -> None:
    print(f"TF-IDF + logistic regression on {figures['source']}, budget {figures['budget']}")
    for r in figures["runs"]:
        s = r["settings"]
        print(
            f"  seed {r['seed']}: {r['train_documents']} docs, C={s['C']:g} "
            f"class_weight={s['class_weight']} ngrams={tuple(s['ngram_range'])} "
            f"sublinear={s['sublinear_tf']} lower={s['lowercase']}: valid acc "
            f"{r['valid_acc']:.3f} f1 {r['valid_f1']:.3f}; "
            f"test acc {r['test_acc']:.3f} f1 {r['test_f1']:.3f}"
        )
    print(
        f"  test acc {figures['test_acc_mean']:.3f} +- {figures['test_acc_std']:.3f}, macro F1 "
        f"{figures['test_f1_mean']:.3f} +- {figures['test_f1_std']:.3f}"
    )


@hydra.main(version_base="1.3", config_path="../../conf", config_name="baseline")
def main(cfg: DictConfig) -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("baseline error: scikit-learn is missing; pip install -e '.[bench]'", file=sys.stderr)
        raise SystemExit(EXIT_CODE) from None
    try:
        figures = run(cfg)
    except ValueError as ex:  # LabelledDataError too: one line naming the file or key
        print(f"baseline error: {ex}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODE) from None
    out = Path(HydraConfig.get().runtime.output_dir) / "results.json"
    atomic_write_json(out, figures, sort_keys=False)  # in the order the table reads
    print_table(figures)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
