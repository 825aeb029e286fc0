"""The TF-IDF + logistic regression baseline (`src/benchmarks/baseline.py`) end to end on a tiny
labelled CSV folder, checked against scikit-learn fitted here on the subset read independently."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")  # the `bench` extra (also in `dev`)

from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

from src.benchmarks import baseline  # noqa: E402
from src.checks import one_line_config_errors  # noqa: E402
from src.data.documents import tokenize_text  # noqa: E402
from src.data.subsets import stratified_subset  # noqa: E402
from tests.helpers.labelled import write_tiny_csv  # noqa: E402

GRID = ["grid.C=[0.1,10.0]", "grid.class_weight=[null,balanced]", "grid.ngram_max=[1,2]",
        "grid.sublinear_tf=[false]", "grid.lowercase=[true]"]  # fmt: skip


def read(path: Path) -> tuple[list[list[str]], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [tokenize_text(r["text"]) for r in rows], [r["label"] for r in rows]


def sklearn_scores(folder: Path, seed: int, budget: int, settings: dict, split: str) -> tuple:
    """(accuracy, macro F1) of `settings` fitted on the stratified subset, on `split`."""
    docs, labels = read(folder / "train.csv")
    picked = stratified_subset(labels, budget, seed)
    tfidf = TfidfVectorizer(
        analyzer="word", tokenizer=lambda d: d, preprocessor=lambda d: [t.lower() for t in d],
        token_pattern=None, lowercase=False, ngram_range=tuple(settings["ngram_range"]),
        sublinear_tf=settings["sublinear_tf"],
    )  # fmt: skip
    x = tfidf.fit_transform([docs[i] for i in picked])
    model = LogisticRegression(C=settings["C"], class_weight=settings["class_weight"],
                               max_iter=5000).fit(x, [labels[i] for i in picked])  # fmt: skip
    other_docs, other_labels = read(folder / f"{split}.csv")
    found = model.predict(tfidf.transform(other_docs))
    return accuracy_score(other_labels, found), f1_score(other_labels, found, average="macro")


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["src.benchmarks.baseline", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with one_line_config_errors():
        baseline.main()


def test_baseline_on_a_csv_folder_matches_sklearn_on_the_same_subset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_tiny_csv(tmp_path / "csv", n_rows=(60, 20, 20), seed=1)  # 62 train rows
    out = tmp_path / "run"
    run_main(monkeypatch, "data=csv", f"data.path={folder}", "budget=12", "seeds=[0,1]",
             f"hydra.run.dir={out}", *GRID)  # fmt: skip
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = json.loads(last)
    assert figures == json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in figures["runs"]] == [0, 1]
    for r in figures["runs"]:
        assert (r["train_documents"], r["unlabelled_documents"]) == (12, 50)
        chosen = r["settings"]
        # the chosen setting is the grid's best on valid (ties: the first tried)
        tried = [
            {"C": c, "class_weight": w, "ngram_range": [1, k], "sublinear_tf": False}
            for k in (1, 2) for c in (0.1, 10.0) for w in (None, "balanced")
        ]  # fmt: skip
        valid = [sklearn_scores(folder, r["seed"], 12, s, "valid") for s in tried]
        best = max(range(len(tried)), key=lambda i: (valid[i], -i))
        assert {k: chosen[k] for k in tried[0]} == tried[best] and chosen["lowercase"] is True
        assert (r["valid_acc"], r["valid_f1"]) == pytest.approx(valid[best], abs=1e-6)
        test = sklearn_scores(folder, r["seed"], 12, tried[best], "test")
        assert (r["test_acc"], r["test_f1"]) == pytest.approx(test, abs=1e-6)
    accs = [r["test_acc"] for r in figures["runs"]]
    assert figures["test_acc_mean"] == pytest.approx(sum(accs) / 2)
    assert figures["test_acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    for bad in (f"data.path={tmp_path / 'nosuch'}", "budget=0"):
        folder = write_tiny_csv(tmp_path / "csv")
        args = ["data=csv", f"data.path={folder}", bad, f"hydra.run.dir={out}", *GRID]
        with pytest.raises(SystemExit) as info:
            run_main(monkeypatch, *args)
        assert info.value.code == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
        assert ("nosuch" if "nosuch" in bad else "data.train_subset") in lines[0]
        assert not (out / "results.json").exists()
