"""Shared fixtures: where the real corpora are, a tiny corpus, and in-process Hydra runs."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import src.config  # noqa: F401  (registers the structured-config schemas)

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


def pytest_addoption(parser: pytest.Parser) -> None:
    default = os.environ.get("AWD_DATA_DIR", str(REPO.parent / "shared" / "corpora"))
    parser.addoption(
        "--data-dir",
        default=default,
        help="folder holding the real corpora (<name>/{train,valid,test}.txt); passed to the "
        "runs as paths.data_dir. Default: $AWD_DATA_DIR or ../shared/corpora",
    )


#: The session fixture whose two real-PTB epochs take longest. Under pytest-xdist (``-n 2``) one
#: worker trains them (:func:`ptb_tiny_runs`) while the other runs the rest of the suite.
LONG_FIXTURE = "ptb_tiny_runs"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The first test that needs :data:`LONG_FIXTURE` runs first and the others last, so the
    training overlaps the suite, and no worker sits waiting for it (stable: order kept
    otherwise)."""
    users = [item for item in items if LONG_FIXTURE in getattr(item, "fixturenames", ())]
    rank = {id(item): 2 for item in users[1:]}
    if users:
        rank[id(users[0])] = 0
    items.sort(key=lambda item: rank.get(id(item), 1))


@pytest.fixture(scope="session", autouse=True)
def _quiet_wandb() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def corpora_dir(request: pytest.FixtureRequest) -> Path:
    """The real corpora. Missing corpora fail under CI (which must run every check) else skip."""
    path = Path(request.config.getoption("--data-dir")).resolve()
    if not (path / "ptb" / "train.txt").is_file():
        msg = f"real corpora not found under {path}: pass --data-dir=<folder with ptb/>"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One token cache for the whole session, so PTB is tokenized once."""
    return tmp_path_factory.mktemp("cache")


TINY_WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "log",
    "big",
    "small",
    "red",
    "blue",
    "quickly",
    "slowly",
]


def write_tiny_corpus(
    root: Path, name: str = "tiny", n_lines: tuple[int, int, int] = (60, 12, 12), seed: int = 0
) -> Path:
    """A few hundred word tokens with some structure, in <root>/<name>/{train,valid,test}.txt."""
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "valid", "test"), n_lines, strict=True):
        lines = []
        for _ in range(count):
            n = rng.randint(3, 9)
            lines.append(" " + " ".join(rng.choice(TINY_WORDS) for _ in range(n)) + " ")
        if split == "train":  # every word appears in train so valid/test have no OOV
            lines.append(" " + " ".join(TINY_WORDS) + " ")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture()
def tiny_data_dir(tmp_path: Path) -> Path:
    write_tiny_corpus(tmp_path / "corpora")
    return tmp_path / "corpora"


TINY_OVERRIDES = [
    "data.corpus=tiny",
    "data.batch_size=4",
    "data.bptt=8",
    "data.eval_batch_size=2",
    "data.test_batch_size=1",
    "data.download=false",
    "model.emb_size=8",
    "model.hidden_size=12",
    "model.num_layers=2",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "~callbacks.rich_progress_bar",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


def compose_train(
    overrides: Sequence[str], out_dir: Path, data_dir: Path, cache: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``conf/train.yaml`` as the CLI would, with the run's paths made explicit."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.cache_dir = str(cache)
    return cfg


@pytest.fixture()
def run_tiny(tmp_path: Path, tiny_data_dir: Path, cache_dir: Path) -> Callable[..., dict[str, Any]]:
    """Train in-process on the tiny corpus with extra overrides; return results.json's dict."""
    from src.train import train

    def _run(*overrides: str, out: str = "run") -> dict[str, Any]:
        cfg = compose_train([*TINY_OVERRIDES, *overrides], tmp_path / out, tiny_data_dir, cache_dir)
        return train(cfg)

    return _run


PTB_TINY = ["experiment=ptb_tiny", "logger=csv", "~callbacks.rich_progress_bar"]


@pytest.fixture(scope="session")
def ptb_tiny_runs(
    tmp_path_factory: pytest.TempPathFactory, corpora_dir: Path, cache_dir: Path
) -> dict[str, dict[str, Any]]:
    """One epoch of experiment=ptb_tiny on real PTB, float and QAT, trained once per session
    and side by side: the QAT run in a child process and the float run here, one thread each
    (the custom QAT cell gains little from a second thread, so this saves CI minutes over two
    2-thread runs in a row; float results are identical at 1 and 2 threads). Shared by the
    real-corpus checks: the float acceptance figure and the QAT comparison. Under pytest-xdist
    the first worker to ask trains and the others read its results (the xdist-documented
    file-lock recipe; :func:`pytest_collection_modifyitems` orders the users so none waits)."""
    return once_per_session(
        tmp_path_factory,
        "ptb_tiny_runs",
        lambda: _train_ptb_tiny_pair(tmp_path_factory.mktemp("ptb_tiny"), corpora_dir, cache_dir),
    )


def once_per_session(
    tmp_path_factory: pytest.TempPathFactory, name: str, compute: Callable[[], Any]
) -> Any:
    """``compute()`` once per test session, shared by every pytest-xdist worker: the first
    worker to ask computes and writes ``<name>.json`` in the session's base folder (under a
    file lock), the others read it (the recipe of the xdist docs). Results must be JSON."""
    import json

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's base folder, common to all workers
    done = shared / f"{name}.json"
    with FileLock(str(done) + ".lock"):
        if done.is_file():
            return json.loads(done.read_text())
        results = compute()
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(results))
        tmp.replace(done)
        return results


def _train_ptb_tiny_pair(out: Path, corpora_dir: Path, cache_dir: Path) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    import torch

    from src.train import train

    qat_dir, log = out / "qat", out / "qat.log"
    cmd = [
        sys.executable,
        "-m",
        "src.train",
        *PTB_TINY,
        "quant=qat",
        "test=false",
        "trainer.enable_progress_bar=false",
        f"paths.data_dir={corpora_dir}",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={qat_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        qat_proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        float_results = train(compose_train(PTB_TINY, out / "float", corpora_dir, cache_dir))
    finally:
        torch.set_num_threads(threads)
        returncode = qat_proc.wait(timeout=3600)
    assert returncode == 0, log.read_text()[-3000:]
    qat_results = json.loads((qat_dir / "results.json").read_text())
    return {"float": float_results, "qat": qat_results}


@pytest.fixture(scope="session")
def ptb_tiny_float(ptb_tiny_runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The float half of :func:`ptb_tiny_runs` (results.json of the run)."""
    return ptb_tiny_runs["float"]
