"""ULMFiT's three stages on raw text, end to end with tiny models: a general language model
(`data.tokenizer=wikitext`) -> `task=lm data=csv` from it -> `task=classify` from that; a
transfer between checkpoints of different tokenizers is refused at start (one line, exit 2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from src.train import train
from src.training.transfer import checkpoint_tokenizer
from tests.conftest import TINY_OVERRIDES, compose_train, write_tiny_corpus
from tests.helpers.raw_csv import write_raw_csv
from tests.test_train_e2e import run_cli

TINY_MODEL = ["model.emb_size=8", "model.hidden_size=12", "model.num_layers=2"]
QUIET = ["~callbacks.rich_progress_bar", "trainer.enable_model_summary=false", "logger=csv"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("ulmfit")
    data_dir, cache = root / "corpora", root / "cache"
    write_tiny_corpus(data_dir)
    csv_dir = write_raw_csv(root / "raw_csv", n_rows=(40, 8, 8))
    general = train(
        compose_train([*TINY_OVERRIDES, "data.tokenizer=wikitext"], root / "lm0", data_dir, cache)
    )
    lm_overrides = [
        "task=lm", "data=csv", f"data.path={csv_dir}", "data.tokenizer=wikitext",
        "data.batch_size=4", "data.bptt=8", "data.eval_batch_size=2", "data.test_batch_size=1",
        "trainer.max_epochs=1", f"+transfer.ckpt_path={general['best_checkpoint']}",
        *TINY_MODEL, *QUIET,
    ]  # fmt: skip
    lm = train(compose_train(lm_overrides, root / "lm1", data_dir, cache))
    clas_overrides = [
        "task=classify", "experiment=smoke_classify", "data=csv", f"data.path={csv_dir}",
        "data.tokenizer=wikitext", "trainer.limit_train_batches=1.0",
        "trainer.limit_val_batches=1.0", f"+transfer.ckpt_path={lm['best_checkpoint']}",
        *TINY_MODEL, *QUIET,
    ]  # fmt: skip
    clas = train(compose_train(clas_overrides, root / "clas", data_dir, cache))
    return {"lm": lm, "clas": clas, "csv": csv_dir, "root": root, "cache": cache}


def _ckpt(results: object) -> dict:
    return torch.load(results["best_checkpoint"], map_location="cpu", weights_only=False)  # type: ignore[index]


def test_language_model_on_csv_text(stages: dict) -> None:
    lm = stages["lm"]
    assert math.isfinite(lm["val/ppl"]) and math.isfinite(lm["test/ppl"])
    ckpt = _ckpt(lm)
    assert checkpoint_tokenizer(ckpt) == "wikitext"  # the checkpoint records its tokenizer
    assert {"@,@", "@-@", "'s", "<unk>"} <= set(ckpt["vocab"])  # raw text, WikiText's tokens


def test_classifier_from_the_csv_language_model(stages: dict) -> None:
    clas = stages["clas"]
    assert 0.0 <= clas["test/acc"] <= 1.0 and math.isfinite(clas["test/loss"])
    ckpt = _ckpt(clas)
    assert checkpoint_tokenizer(ckpt) == "wikitext"
    assert ckpt["vocab"][: len(_ckpt(stages["lm"])["vocab"])] == _ckpt(stages["lm"])["vocab"]


def test_transfer_between_tokenizers_is_refused_at_start(stages: dict, tmp_path: Path) -> None:
    proc = run_cli(
        "src.train", "task=classify", "experiment=smoke_classify", "data=csv",
        f"data.path={stages['csv']}", "data.tokenizer=word", f"paths.cache_dir={stages['cache']}",
        f"+transfer.ckpt_path={stages['lm']['best_checkpoint']}", f"hydra.run.dir={tmp_path}",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "data.tokenizer=word" in lines[0] and "data.tokenizer=wikitext" in lines[0]
    assert not (tmp_path / "checkpoints").exists()


def test_a_checkpoint_without_a_tokenizer_means_word() -> None:
    assert checkpoint_tokenizer({"hyper_parameters": {"data": {"corpus": "ptb"}}}) == "word"
    assert checkpoint_tokenizer({"hyper_parameters": {}}) == "word"


@pytest.mark.parametrize(
    "experiment",
    ["ulmfit_general", "ulmfit_lm_csv", "ulmfit_clas_csv", "ulmfit_lm_wt2", "ulmfit_clas_wt2"],
)
def test_ulmfit_experiments_compose(experiment: str, tmp_path: Path) -> None:
    cfg = compose_train([f"experiment={experiment}"], tmp_path, tmp_path, tmp_path)
    assert cfg.task_name == experiment and cfg.data.tokenizer.value == "wikitext"
    assert cfg.task.name.value == ("classify" if "clas" in experiment else "lm")
    assert cfg.data.get("format") == ("csv" if "csv" in experiment else cfg.data.get("format"))
