"""docs/ulmfit.md runs as written: every command of its bash blocks, in order, on a small
raw-text CSV folder this test writes (punctuation attached, capitals, hyphens, numbers with
commas), with tiny sizes appended as overrides. Then the outputs are checked: labels and
probabilities, the metrics and the confusion matrix, the ONNX predictions against torch's.

The stages use the experiments and features of issue 21's items 1 and 2 (``data.tokenizer=
wikitext``, ``task=lm data=csv``, ``experiment=ulmfit_*``).
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.helpers.labelled import POOLS, SHARED

DOC = REPO / "docs" / "ulmfit.md"

QUIET = [
    "logger=csv",
    "~callbacks.rich_progress_bar",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
SIZES = ["model.emb_size=8", "model.hidden_size=12", "model.num_layers=2"]
LM_DATA = ["data.batch_size=4", "data.bptt=8", "data.eval_batch_size=2", "data.test_batch_size=1"]
#: what each documented run gets appended, by its run folder
TINY = {
    "general": [*LM_DATA, *SIZES, *QUIET, "data.corpus=general", "data.download=false",
                "trainer.max_epochs=1"],
    "finetuned": [*LM_DATA, *SIZES, *QUIET, "trainer.max_steps=6", "trainer.max_epochs=1"],
    "classifier": [*SIZES, "data.batch_size=8", "data.eval_batch_size=8",
                   "data.test_batch_size=8", "data.bptt=4", "task.lin_sizes=[6]",
                   "trainer.max_epochs=2", "~callbacks.rich_progress_bar",
                   "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"],
}  # fmt: skip


def documented_commands() -> list[str]:
    """The shell lines of the doc's bash blocks (continuations joined), in order."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [" ".join(line.split()) for line in lines if line.strip()]


def raw_sentence(rng: random.Random, label: str) -> str:
    words = [rng.choice(POOLS[label] if rng.random() < 0.6 else SHARED) for _ in range(6)]
    words[0] = words[0].capitalize()
    extra = rng.choice(["well-made", "1,200", "3.5", "isn't", "it's"])
    return f"{' '.join(words[:3])}, {extra} {' '.join(words[3:])}{rng.choice('.!?')}"


def write_raw_data(root: Path) -> tuple[Path, Path]:
    """(corpora root with a small general corpus, folder of raw-text labelled CSVs)."""
    rng = random.Random(21)
    general = root / "corpora" / "general"
    general.mkdir(parents=True)
    vocab = sorted({w for pool in POOLS.values() for w in pool} | set(SHARED))
    for split, n in (("train", 80), ("valid", 12), ("test", 12)):
        lines = [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 10))) for _ in range(n)]
        (general / f"{split}.txt").write_text("\n".join(f" {line} " for line in lines) + "\n")
    data = root / "my_reviews"
    data.mkdir()
    for split, n in (("train", 40), ("valid", 10), ("test", 10)):
        with open(data / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text", "label"])
            for i in range(n):
                label = sorted(POOLS)[i % 2]
                text = raw_sentence(rng, label) + " " + raw_sentence(rng, label)
                writer.writerow([i, text, label])
    return root / "corpora", data


def tiny_overrides(args: list[str]) -> list[str]:
    """What a documented ``src.train`` run gets appended (by its run folder), else nothing."""
    folder = next((a.rsplit("/", 1)[-1] for a in args if a.startswith("hydra.run.dir=")), None)
    return TINY.get(folder or "", [])


def run_lines(lines: list[str], work: Path, env: dict[str, str]) -> dict[str, str]:
    """The documented lines in order: ``python -m`` ones in one interpreter
    (``tests/helpers/run_documented.py``, tiny overrides appended), others in bash. Returns
    each python line's stdout."""
    printed: dict[str, str] = {}
    batch: list[tuple[str, list[Any]]] = []

    def flush() -> None:
        if not batch:
            return
        proc = subprocess.run(
            [sys.executable, str(REPO / "tests" / "helpers" / "run_documented.py")],
            input=json.dumps([cmd for _, cmd in batch]),
            cwd=work, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        for line, (_, _, out) in batch:
            printed[line] = Path(out).read_text()
        batch.clear()

    for i, line in enumerate(lines):
        if line.startswith("python -m "):
            module, *args = shlex.split(os.path.expandvars(line.removeprefix("python -m ")))
            out = str(work / f"stdout_{i}.txt")
            batch.append((line, [module, [*args, *tiny_overrides(args)], out]))
            continue
        flush()
        proc = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True)
        assert proc.returncode == 0, f"{line}: {proc.stderr[-2000:]!r}"
    flush()
    return printed


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_ulmfit_workflow_runs_as_documented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpora, data = write_raw_data(tmp_path)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "WANDB_SILENT": "true",
        "DATA": str(data),
        "RUNS": str(tmp_path / "runs"),
        "AWD_DATA_DIR": str(corpora),
        "AWD_CACHE_DIR": str(tmp_path / "cache"),
    }
    for key in ("DATA", "RUNS"):
        monkeypatch.setenv(key, env[key])  # for expandvars in run_lines
    lines = [line for line in documented_commands() if not re.match(r"(DATA|RUNS)=", line)]
    stdout = run_lines(lines, tmp_path, env)
    runs = tmp_path / "runs"

    predictions = read_rows(runs / "predictions.csv")
    new_text = (tmp_path / "new_reviews.txt").read_text().splitlines()
    assert [r["text"] for r in predictions] == new_text
    for row in predictions:
        probs = [float(row["p_animal"]), float(row["p_colour"])]
        assert sum(probs) == pytest.approx(1.0, abs=1e-9) and row["label"] in POOLS
    onnx = read_rows(runs / "predictions_onnx.csv")
    for a, b in zip(predictions, onnx, strict=True):
        for key in ("p_animal", "p_colour"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-4)

    evaluation = next(json.loads(out.splitlines()[-1]) for cmd, out in stdout.items()
                      if cmd.startswith("python -m src.eval"))  # fmt: skip
    assert evaluation["documents"] == 10 and 0.0 <= evaluation["acc"] <= 1.0
    assert sum(c["support"] for c in evaluation["per_class"].values()) == 10
    png = runs / "classifier" / "confusion_matrix_test.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert evaluation["wandb"].startswith("logged to offline run")  # the run logged to wandb
    scores = read_rows(runs / "lm_scores.csv")  # the fine-tuned language model's
    assert len(scores) == len(predictions) and all(float(r["ppl"]) > 1 for r in scores)
    assert all(int(r["tokens"]) > len(r["text"].split()) for r in scores)  # punctuation split
