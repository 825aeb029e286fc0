"""The bad-input catalogue, continued: what a config asks of the machine and its files
(src/checks/machine.py, files.py, memory.py). Each bad input gives one line naming the key and
the fix: in-process rows (compose, then ``check_machine``), the memory estimate against a
given amount of memory, and the issue's rows through the real CLIs (exit 2, one line)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from src.checks import (
    ConfigError,
    check_eval_data,
    check_machine,
    load_checkpoint,
    one_line_config_errors,
    validate,
)
from src.checks import memory as mem
from src.data.datamodule import LMDataModule
from tests.conftest import REPO, write_tiny_corpus
from tests.test_config_checks import assert_one_line, compose_any

LEGACY = REPO / "tests" / "fixtures" / "legacy" / "lstm_float.ckpt"


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files that are not checkpoints, by what they are."""
    root = tmp_path_factory.mktemp("bad")
    files = {name: root / f"{name}.ckpt" for name in ("text", "empty", "truncated", "tensor")}
    files["text"].write_text("not a checkpoint\n")
    files["empty"].write_bytes(b"")
    whole = LEGACY.read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    torch.save({"weights": torch.zeros(3)}, files["tensor"])
    files["zip"] = root / "other.zip"
    with zipfile.ZipFile(files["zip"], "w") as archive:
        archive.writestr("readme.txt", "a zip archive, not torch.save's")
    files["run_dir"] = root / "run"
    (files["run_dir"] / "checkpoints").mkdir(parents=True)
    (files["run_dir"] / "checkpoints" / "last.ckpt").write_bytes(whole)
    return files


def machine_errors(entry: str, overrides: list[str], tmp: Path) -> list[ConfigError]:
    """What the entry point reports once the config values pass: check_machine's errors."""
    cfg = compose_any(entry, overrides, tmp)
    validate(cfg)  # the values themselves are fine
    try:
        check_machine(cfg)
    except ConfigError as error:
        return [error]
    return []


#: (entry, overrides ({name}: a file of the ``bad`` fixture), key, a phrase of the line)
ROWS = [
    ("train", ["ckpt_path={text}"], "ckpt_path", "not a checkpoint"),
    ("train", ["ckpt_path={empty}"], "ckpt_path", "empty"),
    ("train", ["ckpt_path={truncated}"], "ckpt_path", "truncated"),
    ("train", ["ckpt_path={tensor}"], "ckpt_path", "no state_dict"),
    ("train", ["ckpt_path={zip}"], "ckpt_path", "zip archive"),
    ("train", ["ckpt_path={run_dir}"], "ckpt_path", "checkpoints/last.ckpt"),
    ("train", ["+finetune=asgd", "callbacks.finetune.ckpt_path={truncated}"],
     "callbacks.finetune.ckpt_path", "truncated"),
    ("train", ["trainer.accelerator=tpu"], "trainer.accelerator", "not available"),
    ("train", ["data.corpus=/no/such/folder", "data.download=false"], "data.corpus", "missing"),
    ("train", ["data.corpus=my_corpus"], "data.corpus", "put train.txt"),
    ("train", ["data.download=false", "paths.data_dir=/no/such"], "data.corpus", "data.download"),
    ("eval", ["ckpt_path={text}"], "ckpt_path", "not a checkpoint"),
    ("eval", ["ckpt_path={truncated}"], "ckpt_path", "truncated"),
    ("eval", ["ckpt_path={run_dir}"], "ckpt_path", "a folder"),
    ("eval", [f"ckpt_path={LEGACY}", "accelerator=tpu"], "accelerator", "not available"),
    ("export", ["ckpt_path={empty}"], "ckpt_path", "empty"),
    ("export", ["ckpt_path={tensor}"], "ckpt_path", "no state_dict"),
    ("generate", ["ckpt_path={zip}"], "ckpt_path", "zip archive"),
    ("generate", ["ckpt_path={truncated}"], "ckpt_path", "truncated"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "overrides", "key", "phrase"),
    ROWS,
    ids=[f"{e}:{' '.join(o)}" for e, o, _, _ in ROWS],
)
def test_what_the_machine_lacks_is_one_line(
    entry: str, overrides: list[str], key: str, phrase: str, bad: dict[str, Path], tmp_path: Path
) -> None:
    given = [o.format(**bad) for o in overrides]
    if entry == "train":
        given = ["experiment=smoke", *given]
    line = assert_one_line(machine_errors(entry, given, tmp_path), key)
    assert phrase in line, line


def test_real_checkpoints_corpora_and_accelerators_pass(tmp_path: Path) -> None:
    ckpt = f"ckpt_path={LEGACY}"
    for entry, overrides in [
        ("train", ["experiment=smoke", ckpt, "trainer.accelerator=cpu"]),
        ("train", ["experiment=smoke", "ckpt_path=last", "trainer.accelerator=auto"]),
        ("eval", [ckpt, "accelerator=cpu"]),
        ("export", [f"ckpt_path={LEGACY.with_name('lstm_qat.int8.pt')}"]),
        ("generate", [ckpt]),
    ]:
        assert machine_errors(entry, overrides, tmp_path) == [], (entry, overrides)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx file is not torch.save's: not opened here")
    assert machine_errors("eval", [f"ckpt_path={onnx}", "engine=onnxruntime"], tmp_path) == []
    write_tiny_corpus(tmp_path / "corpora")
    tiny = ["experiment=smoke", "data.corpus=tiny", f"paths.data_dir={tmp_path / 'corpora'}"]
    assert machine_errors("train", tiny, tmp_path) == []


def test_load_checkpoint_raises_the_one_line(bad: dict[str, Path]) -> None:
    """The loader entry points share (src.predict too): torch's error becomes a ConfigError."""
    assert "state_dict" in load_checkpoint(LEGACY)
    for name, phrase in [("text", "not a checkpoint"), ("truncated", "truncated")]:
        with pytest.raises(ConfigError) as info:
            load_checkpoint(bad[name], key="ckpt_path")
        line = assert_one_line([info.value], "ckpt_path")
        assert phrase in line and str(bad[name]) in line, line


# ------------------------------------------------------------------------------ memory


def window(
    what: str = "training", batch: int = 10, bptt: int = 70, tokens: int = 10**6
) -> mem.Window:
    return mem.Window(what, "data.batch_size", batch, "data.bptt", bptt, tokens)


MODEL = {"num_layers": 3, "hidden_size": 50, "emb_size": 20}


def test_the_estimate_is_the_documented_bound() -> None:
    w = window(batch=10, bptt=70)
    n, v, widths = 10 * 70, 1000, 2 * 50 + 20
    assert mem.step_bytes(w, 70, v, MODEL, {}) == 4 * n * (2 * v + 4 * widths + 20)
    chunked = {"softmax": "chunked", "chunk_size": 100}
    assert mem.step_bytes(w, 70, v, MODEL, chunked) == 4 * n * (2 * v * 100 / n + 4 * widths + 20)
    assert mem.step_bytes(window("evaluation"), 70, v, MODEL, {}) == 4 * n * v
    assert mem.step_bytes(w, 70, v, MODEL, {"softmax": "split"}) < 4 * n * v


@pytest.mark.parametrize(
    ("batch", "bptt", "key"),
    [(10, 10**6, "data.bptt"), (10**5, 20, "data.batch_size")],
)
def test_a_window_too_large_names_its_larger_side(
    batch: int, bptt: int, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = window(batch=batch, bptt=bptt, tokens=10**6)
    steps = min(bptt, 10**6 // batch - 1)
    need = mem.step_bytes(w, steps, 1000, MODEL, {})
    monkeypatch.setattr(mem, "available_bytes", lambda cuda: (need - 1, "available"))
    error = mem.window_error(w, 1000, MODEL, {}, world=1, cuda=False)
    line = assert_one_line([error], key)
    assert f"{need / mem.GB:.1f} GB" in line and "lower" in line, line
    monkeypatch.setattr(mem, "available_bytes", lambda cuda: (need, "available"))
    assert mem.window_error(w, 1000, MODEL, {}, world=1, cuda=False) is None


def test_more_streams_than_tokens_is_refused() -> None:
    error = mem.window_error(window(batch=600_000), 1000, MODEL, {}, world=1, cuda=False)
    line = assert_one_line([error], "data.batch_size")
    assert "use at most 500,000" in line, line


def test_eval_window_too_large_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tiny_corpus(tmp_path / "corpora")
    kwargs = {"data_dir": str(tmp_path / "corpora"), "cache_dir": str(tmp_path / "cache")}
    ok = LMDataModule(corpus="tiny", download=False, eval_batch_size=2, **kwargs)
    check_eval_data(ok, "valid", "cpu")  # fits: returns
    monkeypatch.setattr(mem, "available_bytes", lambda cuda: (10, "available"))
    for split, batch, phrase in [("valid", 2, "needs at least"), ("test", 10**6, "too large")]:
        dm = LMDataModule(corpus="tiny", download=False, test_batch_size=batch, **kwargs)
        with pytest.raises(SystemExit) as info:
            check_eval_data(dm, split, "cpu")
        assert info.value.code == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("config error: batch_size="), lines
        assert phrase in lines[0], lines
    missing = LMDataModule(corpus="nosuch", download=False, **kwargs)
    with pytest.raises(SystemExit):
        check_eval_data(missing, "valid", "cpu")
    assert capsys.readouterr().err.startswith("config error: paths.data_dir=")


# ------------------------------------------------------------------------------ the real CLIs

#: the issue's rows (and neighbours) through each entry point's ``main``: (module, overrides, key)
CLI_ROWS = [
    ("src.train", ["data.corpus=/no/such/folder", "data.download=false"], "data.corpus"),
    ("src.train", ["ckpt_path={text}"], "ckpt_path"),
    ("src.train", ["data=wikitext2", "data.bptt=1000000"], "data.bptt"),  # > 500 GB
    ("src.train", ["data.batch_size=10000000"], "data.batch_size"),
    ("src.train", ["trainer.accelerator=tpu"], "trainer.accelerator"),
    ("src.eval", ["ckpt_path={truncated}"], "ckpt_path"),
    ("src.export", ["ckpt_path={run_dir}"], "ckpt_path"),
    ("src.generate", ["ckpt_path={text}"], "ckpt_path"),
]


def cli_args(module: str, overrides: list[str], bad: dict[str, Path], data: Path, cache: Path,
             run_dir: Path) -> list[str]:  # fmt: skip
    args = [o.format(**bad) for o in overrides] + [f"hydra.run.dir={run_dir}"]
    if module == "src.train":
        paths = [f"paths.data_dir={data}", f"paths.cache_dir={cache}"]
        args = ["experiment=smoke", "logger=csv", *paths, *args]
    return args


def assert_cli_line(code: object, out: str, err: str, key: str) -> None:
    """Status 2 and exactly one line (stdout and stderr together) naming the key."""
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2, (key, code, out, err)
    assert len(lines) == 1 and lines[0].startswith(f"config error: {key}="), lines


@pytest.mark.parametrize(
    ("module", "overrides", "key"), CLI_ROWS, ids=[f"{m}:{' '.join(o)}" for m, o, _ in CLI_ROWS]
)
def test_entry_points_exit_2_with_one_line(
    module: str,
    overrides: list[str],
    key: str,
    bad: dict[str, Path],
    corpora_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each row through the entry point's ``main`` as ``python -m`` runs it (Hydra's argument
    parsing, composition, the task), in this process: one import of torch for every row."""
    entry = importlib.import_module(module)
    args = cli_args(module, overrides, bad, corpora_dir, cache_dir, tmp_path / "run")
    monkeypatch.setattr(sys, "argv", [module, *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info, one_line_config_errors():
        entry.main()
    out, err = capsys.readouterr()
    assert_cli_line(info.value.code, out, err, key)


def test_python_m_exits_2_with_one_line(
    corpora_dir: Path, cache_dir: Path, tmp_path: Path, bad: dict[str, Path]
) -> None:
    """One row through a real ``python -m src.train`` process: the window check inside the task."""
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    args = cli_args("src.train", ["data.bptt=1000000", "model.hidden_size=20000"], bad,
                    corpora_dir, cache_dir, tmp_path / "run")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=REPO, env=env, text=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert_cli_line(proc.returncode, proc.stdout, proc.stderr, "data.bptt")


def test_a_failed_download_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No network: a corpus that must be downloaded ends with one line naming the URL and the
    fixes, and status 2 (no traceback); nothing is left in the corpus folder."""
    import src.data.download as download
    import src.train as entry
    from src.data.download import DownloadError

    def offline(url: str, dest: Path, sha256: str | None, what: str) -> Path:
        raise DownloadError(
            f"downloading {what} failed: <urlopen error [Errno -2] Name or service not known>. "
            "Check the network, point data.url_overrides at a mirror, or place the split files "
            "in the corpus folder yourself."
        )

    monkeypatch.setattr(download, "_fetch", offline)
    data = tmp_path / "data"
    args = [
        "experiment=smoke",
        "logger=csv",
        f"paths.data_dir={data}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    monkeypatch.setattr(sys, "argv", ["src.train", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info, one_line_config_errors():
        entry.main()
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert info.value.code == 2
    assert len(lines) == 1 and lines[0].startswith("download error: downloading http"), lines
    assert "data.url_overrides" in lines[0]
    assert not (data / "ptb").exists() or not any((data / "ptb").iterdir())
