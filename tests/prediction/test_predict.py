"""python -m src.predict: classifier and language-model outputs, the ensemble mean, the ONNX
engine against torch, standard input, and every bad input (one line, exit 2, no output)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR, REPO


def predict_cfg(*overrides: str) -> Any:
    import src.predict  # noqa: F401  (stores the schema)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="predict", overrides=list(overrides))


def run_predict(*overrides: str) -> dict[str, Any]:
    from src.predict import run

    return run(predict_cfg(*overrides))


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def ckpt_list(paths: list[Path]) -> str:
    return "ckpt_path=[" + ",".join(str(p) for p in paths) + "]"


def test_classifier_labels_and_probabilities(classifiers: list[Path], labelled, tmp_path) -> None:
    """test.csv (text and label columns): every row gets label and p_<class> (sum 1); the
    input's own label column is kept as input_label; the summary counts the labels."""
    out = tmp_path / "pred.csv"
    source = labelled[1] / "test.csv"
    summary = run_predict(f"ckpt_path={classifiers[0]}", f"input={source}", f"output={out}")
    rows, given = read_rows(out), read_rows(source)
    assert len(rows) == len(given) == summary["documents"]
    assert list(rows[0]) == ["text", "input_label", "label", "p_animal", "p_colour"]
    for row, original in zip(rows, given, strict=True):
        probs = {c: float(row[f"p_{c}"]) for c in ("animal", "colour")}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert row["label"] == max(probs, key=probs.get)
        assert (row["text"], row["input_label"]) == (original["text"], original["label"])
    labels = [row["label"] for row in rows]
    assert summary["labels"] == {c: labels.count(c) for c in ("animal", "colour")}
    assert summary["tokens"] > summary["documents"] and summary["seconds"] > 0


def test_classifier_probabilities_match_the_module(classifiers: list[Path], tmp_path) -> None:
    """The written probabilities are the checkpoint's softmax on the document's ids."""
    from src.training.checkpoint import load_classifier

    docs = ["the cat and the dog", "red blue green , very big"]
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    run_predict(f"ckpt_path={classifiers[0]}", f"input={tmp_path / 'in.txt'}",
                f"output={tmp_path / 'out.csv'}")  # fmt: skip
    module, _ = load_classifier(classifiers[0])
    stoi = {w: i for i, w in enumerate(module.vocab)}
    for doc, row in zip(docs, read_rows(tmp_path / "out.csv"), strict=True):
        ids = [stoi.get(w, stoi["<unk>"]) for w in doc.split()] + [stoi["<eos>"]]
        with torch.no_grad():
            want = torch.softmax(module(torch.tensor([ids]), torch.tensor([len(ids)])), -1)[0]
        got = [float(row["p_animal"]), float(row["p_colour"])]
        assert got == pytest.approx(want.tolist(), abs=1e-6)


def test_a_backward_classifier_reads_each_document_reversed(
    classifiers: list[Path], tmp_path
) -> None:
    """The backward classifier (``data.reverse=true``) scores the document's ids backwards."""
    from src.training.checkpoint import load_classifier

    docs = ["the cat and the dog", "red blue green , very big"]
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    run_predict(f"ckpt_path={classifiers[1]}", f"input={tmp_path / 'in.txt'}",
                f"output={tmp_path / 'out.csv'}")  # fmt: skip
    module, _ = load_classifier(classifiers[1])
    assert module.hparams.data["reverse"] is True
    stoi = {w: i for i, w in enumerate(module.vocab)}
    for doc, row in zip(docs, read_rows(tmp_path / "out.csv"), strict=True):
        ids = [stoi.get(w, stoi["<unk>"]) for w in doc.split()] + [stoi["<eos>"]]
        got = [float(row["p_animal"]), float(row["p_colour"])]
        with torch.no_grad():
            for order, close in ((ids[::-1], True), (ids, False)):
                logits = module(torch.tensor([order]), torch.tensor([len(order)]))
                want = torch.softmax(logits, -1)[0].tolist()
                assert (got == pytest.approx(want, abs=1e-6)) is close


def test_ensemble_is_the_mean_of_the_single_predictions(
    classifiers: list[Path], labelled, tmp_path
) -> None:
    source = labelled[1] / "valid.csv"
    singles = []
    for i, ckpt in enumerate(classifiers):
        run_predict(f"ckpt_path={ckpt}", f"input={source}", f"output={tmp_path / f'{i}.csv'}")
        singles.append(read_rows(tmp_path / f"{i}.csv"))
    summary = run_predict(ckpt_list(classifiers), f"input={source}",
                          f"output={tmp_path / 'both.csv'}")  # fmt: skip
    assert summary["models"] == 2
    both = read_rows(tmp_path / "both.csv")
    differs = 0.0
    for row, a, b in zip(both, *singles, strict=True):
        for key in ("p_animal", "p_colour"):
            mean = (float(a[key]) + float(b[key])) / 2
            assert float(row[key]) == pytest.approx(mean, abs=1e-6)
            differs = max(differs, abs(float(a[key]) - float(b[key])))
    assert differs > 1e-3  # two different models, so the mean is not either of them


def test_ensemble_with_other_classes_is_refused(
    classifiers: list[Path], labelled, tmp_path, capsys
) -> None:
    ckpt = torch.load(classifiers[1], map_location="cpu", weights_only=False)
    ckpt["classes"] = ["cat", "colour"]
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    out = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as exit_info:
        run_predict(ckpt_list([classifiers[0], other]), f"input={labelled[1] / 'test.csv'}",
                    f"output={out}")  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different classes" in err[0] and "cat" in err[0]
    assert not out.exists()


def test_language_model_loss_matches_src_eval(
    language_model: Path, labelled, tmp_path, cache_dir
) -> None:
    """A document's loss is src.eval's loss on a test file holding a blank line (the line
    start) and the document: the same tokens predicted from the same zero state."""
    from src.eval import evaluate

    doc = "the big cat sat on the red mat quickly"
    corpora = tmp_path / "corpora"
    (corpora / "tiny").mkdir(parents=True)
    for split in ("train", "valid"):
        text = (labelled[0] / "tiny" / f"{split}.txt").read_text()
        (corpora / "tiny" / f"{split}.txt").write_text(text)
    (corpora / "tiny" / "test.txt").write_text(f"\n {doc} \n")
    (tmp_path / "in.txt").write_text(f"{doc}\nthe dog ran\n")
    summary = run_predict(f"ckpt_path={language_model}", f"input={tmp_path / 'in.txt'}",
                          f"output={tmp_path / 'out.csv'}")  # fmt: skip
    rows = read_rows(tmp_path / "out.csv")
    assert [int(r["tokens"]) for r in rows] == [10, 4]  # the words and <eos>
    assert float(rows[0]["ppl"]) == pytest.approx(math.exp(float(rows[0]["loss"])), rel=1e-9)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[
            f"ckpt_path={language_model}", "split=test", "batch_size=1", "accelerator=cpu",
            f"paths.data_dir={corpora}", f"paths.cache_dir={cache_dir}",
            f"out={tmp_path / 'eval.json'}",
        ])  # fmt: skip
    assert float(rows[0]["loss"]) == pytest.approx(evaluate(cfg)["loss"], abs=1e-5)
    total = sum(float(r["loss"]) * int(r["tokens"]) for r in rows) / 14
    assert summary["tokens"] == 14 and summary["loss"] == pytest.approx(total, rel=1e-9)
    assert summary["ppl"] == pytest.approx(math.exp(total), rel=1e-9)


def test_onnx_classifier_agrees_with_torch(classifiers: list[Path], labelled, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from src.export import export

    model = tmp_path / "model.onnx"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="export", overrides=[
            f"ckpt_path={classifiers[0]}", "format=onnx", f"out={model}"])  # fmt: skip
    report = export(cfg)
    assert report["format"] == "onnx" and report["max_abs_diff"] < 1e-4
    source = labelled[1] / "train.csv"  # documents of 3 to 28 tokens: batches of many lengths
    run_predict(f"ckpt_path={classifiers[0]}", f"input={source}", f"output={tmp_path / 't.csv'}")
    summary = run_predict(f"ckpt_path={model}", "engine=onnxruntime", f"input={source}",
                          f"output={tmp_path / 'o.csv'}", "batch_size=5")  # fmt: skip
    assert summary["engine"] == "onnxruntime"
    torch_rows, onnx_rows = read_rows(tmp_path / "t.csv"), read_rows(tmp_path / "o.csv")
    for a, b in zip(torch_rows, onnx_rows, strict=True):
        for key in ("p_animal", "p_colour"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-4)
        assert a["label"] == b["label"]


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "src.predict", *args],
        cwd=REPO, env=env, input=stdin, capture_output=True, timeout=300,
    )  # fmt: skip


def test_cli_reads_standard_input_and_ends_with_json(classifiers: list[Path], tmp_path) -> None:
    out = tmp_path / "out.csv"
    proc = cli(f"ckpt_path={classifiers[0]}", "input=-", f"output={out}",
               f"hydra.run.dir={tmp_path / 'run'}",
               stdin=b"the cat , the dog\nred and blue\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert summary["documents"] == 2 and sum(summary["labels"].values()) == 2
    assert [r["text"] for r in read_rows(out)] == ["the cat , the dog", "red and blue"]


def test_cli_missing_input_file(classifiers: list[Path], tmp_path) -> None:
    out = tmp_path / "out.csv"
    proc = cli(f"ckpt_path={classifiers[0]}", f"input={tmp_path / 'nope.csv'}", f"output={out}",
               f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "nope.csv: file not found" in err[0], err
    assert not out.exists()


BAD_INPUTS = {
    "empty_txt_line": ("docs.txt", b"the cat\n\nthe dog\n", "docs.txt: line 2: empty document"),
    "empty_csv_text": (
        "docs.csv",
        b"id,text\n1,the cat\n2,  \n",
        "docs.csv: row 2 (line 3): empty document",
    ),
    "not_utf8_csv": (
        "docs.csv",
        b"id,text\n1,the cat\n2,caf\xe9 noir\n",
        "docs.csv: row 2 (line 3): invalid UTF-8",
    ),
    "not_utf8_txt": ("docs.txt", b"ok\n\xff\xfe bad\n", "docs.txt: line 2: invalid UTF-8"),
    "no_text_column": ("docs.csv", b"id,body\n1,the cat\n", "docs.csv: row 0 (line 1): no 'text'"),
    "no_documents": ("docs.txt", b"", "docs.txt: no documents"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_exit_2(classifiers: list[Path], tmp_path, capsys, case: str) -> None:
    name, data, message = BAD_INPUTS[case]
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as exit_info:
        run_predict(f"ckpt_path={classifiers[0]}", f"input={tmp_path / name}", f"output={out}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ckpt_path=/no/such.ckpt"], "config error: ckpt_path=/no/such.ckpt"),
        (
            ["engine=onnxruntime"],
            "config error: engine=onnxruntime: expected float for checkpoints",
        ),
        (["output=/no/such/folder/out.csv"], "config error: output="),
        (["batch_size=0"], "config error: batch_size=0"),
        (["input=???"], "config error: input=???: expected a value"),
    ],
)
def test_bad_settings_one_line_exit_2(
    classifiers: list[Path], labelled, tmp_path, capsys, overrides: list[str], message: str
) -> None:
    base = [f"ckpt_path={classifiers[0]}", f"input={labelled[1] / 'test.csv'}",
            f"output={tmp_path / 'out.csv'}"]  # fmt: skip
    keys = {o.split("=")[0] for o in overrides}
    with pytest.raises(SystemExit) as exit_info:
        run_predict(*[o for o in base if o.split("=")[0] not in keys], *overrides)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_progress_bar_on_stderr(classifiers: list[Path], tmp_path, capsys) -> None:
    (tmp_path / "in.txt").write_text("the cat\nred\n" * 20)
    run_predict(f"ckpt_path={classifiers[0]}", f"input={tmp_path / 'in.txt'}",
                f"output={tmp_path / 'o.csv'}", "progress=true")  # fmt: skip
    assert "40/40" in capsys.readouterr().err
