"""task=classify: the classifier's parameter groups, the encoder transfer, the majority
baseline, and end-to-end runs of the real entry point on a tiny labelled CSV (from scratch,
from a tiny language model, bidirectional, resumed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from src.models.awd import AWDLSTMConfig
from src.models.classifier import AWDClassifier
from src.training.encoder_transfer import encoder_state
from src.training.param_groups import clas_split, parameter_groups, set_trainable
from src.training.tasks import majority_baseline
from tests.conftest import TINY_OVERRIDES, compose_train, write_tiny_corpus
from tests.helpers.labelled import write_tiny_csv

SIZES = dict(vocab_size=30, emb_size=6, hidden_size=10, num_layers=3, weight_drop=0.5)


def classifier(**kw: object) -> AWDClassifier:
    torch.manual_seed(0)
    return AWDClassifier(AWDLSTMConfig(**{**SIZES, **kw}), num_classes=4, lin_sizes=[5])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_clas_split_covers_every_parameter_once(bidirectional: bool) -> None:
    model = classifier(bidirectional=bidirectional)
    groups = clas_split(model)
    assert len(groups) == model.config.num_layers + 2
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert [id(p) for p in groups[0]] == [id(model.embedding.weight)]
    for k, layer in enumerate(model.layers):
        assert {id(p) for p in groups[k + 1]} == {id(p) for p in layer.parameters()}
    assert {id(p) for p in groups[-1]} == {id(p) for p in model.head.parameters()}


def test_clas_split_rates_and_unfreezing() -> None:
    model = classifier()
    groups = parameter_groups(model, "clas_split", 1e-2, 2.6)
    assert [g["lr"] for g in groups] == pytest.approx([1e-2 / 2.6**k for k in (4, 3, 2, 1, 0)])
    set_trainable(groups, 2)  # the head and the top layer
    assert all(p.requires_grad for g in groups[-2:] for p in g["params"])
    assert not any(p.requires_grad for g in groups[:-2] for p in g["params"])


def lm_state(model: AWDClassifier) -> dict[str, torch.Tensor]:
    """A language model's state dict for the classifier's encoder sizes (and a decoder)."""
    from src.models.awd import AWDLSTM

    torch.manual_seed(5)
    lm = AWDLSTM(model.config)
    return {f"model.{k}": v for k, v in lm.state_dict().items()}


def test_encoder_state_copies_the_lm_and_grows_the_vocabulary() -> None:
    model = classifier(vocab_size=31)
    target = {f"model.{k}": v for k, v in model.state_dict().items()}
    source = lm_state(classifier())  # 30 words; the classifier has <pad> on top
    old = [f"w{i}" for i in range(30)]
    state, shared = encoder_state(source, target, old, [*old, "<pad>"], embedding_only=False)
    assert shared == 30
    assert "model.encoder.layers.0.module.weight_hh_l0_raw" in state
    assert not any("decoder" in k or ".head." in k for k in state)
    emb = state["model.encoder.embedding.weight"]
    assert torch.equal(emb[:30], source["model.embedding.weight"])
    assert torch.allclose(emb[30], source["model.embedding.weight"].mean(0))  # <pad>: the mean
    encoder_keys = {k for k in target if k.startswith("model.encoder.")}
    assert set(state) == encoder_keys


def test_encoder_state_bidirectional_takes_the_embedding_only() -> None:
    model = classifier(bidirectional=True)
    target = {f"model.{k}": v for k, v in model.state_dict().items()}
    vocab = [f"w{i}" for i in range(30)]
    state, _ = encoder_state(lm_state(classifier()), target, vocab, vocab, embedding_only=True)
    assert list(state) == ["model.encoder.embedding.weight"]
    with pytest.raises(ValueError, match="lacks"):  # no layer of the LM has their names
        encoder_state(lm_state(classifier()), target, vocab, vocab, embedding_only=False)


def test_majority_baseline() -> None:
    acc, f1 = majority_baseline([5, 20, 3], [10, 30, 10])
    assert acc == pytest.approx(0.6)
    assert f1 == pytest.approx(2 * 0.6 / 1.6 / 3)


# ------------------------------------------------------------------------------ end to end

CLASSIFY = [
    "task=classify",
    "data=csv",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.test_batch_size=8",
    "data.bptt=4",
    "data.min_freq=1",
    "model.emb_size=8",
    "model.hidden_size=12",
    "model.num_layers=2",
    "task.lin_sizes=[6]",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "~callbacks.rich_progress_bar",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpora root with the tiny LM corpus, folder of the tiny labelled CSVs)."""
    root = tmp_path_factory.mktemp("classify")
    write_tiny_corpus(root / "corpora")
    return root / "corpora", write_tiny_csv(root / "csv")


def classify(folders: tuple[Path, Path], out: Path, *overrides: str) -> dict[str, Any]:
    from src.train import train

    corpora, csv = folders
    cfg = compose_train(
        [*CLASSIFY, f"data.path={csv}", *overrides], out, corpora, out.parent / "cache"
    )
    return train(cfg)


def test_classifier_trains_and_reports(folders: tuple[Path, Path], tmp_path: Path) -> None:
    results = classify(folders, tmp_path / "run")
    for key in ("val/loss", "val/acc", "val/f1", "test/loss", "test/acc", "test/f1"):
        assert 0.0 <= results[key] < 10.0, key
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results
    ckpt = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=False)
    assert ckpt["classes"] == ["animal", "colour"]
    assert "<pad>" in ckpt["vocab"]
    assert ckpt["hyper_parameters"]["num_classes"] == 2
    header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0]
    for column in ("train/loss", "val/acc", "val/f1", "lr"):
        assert column in header
    from src.training.checkpoint import load_module

    with pytest.raises(ValueError, match="is a classifier"):  # src.eval reads language models
        load_module(Path(results["best_checkpoint"]))


@pytest.fixture(scope="module")
def language_model(folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny language model (the classifier's encoder sizes) trained one epoch."""
    from src.train import train

    out = tmp_path_factory.mktemp("lm")
    overrides = [*TINY_OVERRIDES, "trainer.max_epochs=1", "model.emb_size=8"]
    train(compose_train(overrides, out, folders[0], out / "cache"))
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_from_a_language_model(
    folders: tuple[Path, Path], language_model: Path, tmp_path: Path, bidirectional: bool
) -> None:
    """The encoder starts from the language model (its vocabulary, then <pad>); with gradual
    unfreezing the first epoch trains the head only, so the encoder is still the LM's."""
    lm = torch.load(language_model, map_location="cpu", weights_only=False)
    classify(
        folders,
        tmp_path / "run",
        f"+transfer.ckpt_path={language_model}",
        "transfer.gradual_unfreeze=true",
        "optim.groups=clas_split",
        "optim.lr_decay_per_group=2.6",
        "trainer.max_epochs=1",
        f"model.bidirectional={str(bidirectional).lower()}",
    )
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    n = len(lm["vocab"])  # the tiny corpus has no <unk>: the datamodule adds it, then <pad>
    assert ckpt["vocab"][:n] == lm["vocab"] and ckpt["vocab"][n:] == ["<unk>", "<pad>"]
    state, old = ckpt["state_dict"], lm["state_dict"]
    emb = state["model.encoder.embedding.weight"]
    assert torch.equal(emb[: len(lm["vocab"])], old["model.embedding.weight"])
    key = "layers.1.module.weight_ih_l0"
    if bidirectional:  # only the embedding transfers; the layers have other shapes
        assert f"model.encoder.{key}" not in state
    else:
        assert torch.equal(state[f"model.encoder.{key}"], old[f"model.{key}"])


def test_transfer_refuses_other_sizes(
    folders: tuple[Path, Path], language_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="does not fit the configured model"):
        classify(
            folders, tmp_path / "run", f"+transfer.ckpt_path={language_model}",
            "model.hidden_size=14",
        )  # fmt: skip


def test_language_model_refuses_bidirectional(tmp_path: Path) -> None:
    from src.train import train

    data = tmp_path / "corpora"
    write_tiny_corpus(data)
    cfg = compose_train([*TINY_OVERRIDES, "model.bidirectional=true"], tmp_path, data, tmp_path)
    with pytest.raises(ValueError, match="backward direction would see the targets"):
        train(cfg)


def classify_cli(run: Path, folders: tuple[Path, Path], *extra: str) -> int:
    """``python -m src.train`` with the tiny classifier, 3 epochs, a step checkpoint every 4."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    corpora, csv = folders
    args = [
        *CLASSIFY,
        f"data.path={csv}",
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "trainer.enable_progress_bar=false",
        "callbacks.step_checkpoint.every_n_train_steps=4",
        f"paths.data_dir={corpora}",
        f"paths.cache_dir={run.parent / 'cache'}",
        f"hydra.run.dir={run}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode in (0, -9), proc.stderr[-3000:]
    return proc.returncode


def test_killed_classifier_resumes_exactly(folders: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGKILL in epoch 2 (step 10, checkpoint at step 8), resume from last.ckpt: the same
    weights and results as the uninterrupted run (data position, RNG, optimizer, schedule)."""
    full, run = tmp_path / "full", tmp_path / "killed"
    assert classify_cli(full, folders) == 0
    killer = [
        "+callbacks.killer._target_=tests.helpers.kill.KillAtStep",
        "+callbacks.killer.step=10",
    ]
    assert classify_cli(run, folders, *killer) == -9
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 8 and saved["epoch"] == 1  # mid-epoch 2
    assert classify_cli(run, folders, f"ckpt_path={last}") == 0
    a = json.loads((full / "results.json").read_text())
    b = json.loads((run / "results.json").read_text())
    assert Path(a.pop("best_checkpoint")).name == Path(b.pop("best_checkpoint")).name
    assert a == b
    wa = torch.load(full / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    wb = torch.load(last, weights_only=False)["state_dict"]
    for name, tensor in wa.items():
        assert torch.equal(tensor, wb[name]), name


def test_balanced_class_weights_follow_the_train_counts(tmp_path: Path) -> None:
    """task.class_weight=balanced: scikit-learn's n / (C * n_c) over the labelled subset, in
    the training loss only; the weights travel in the checkpoint's hyperparameters."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from src.training.classify_module import ClassifierModule
    from src.training.tasks import balanced_weights

    dm = SimpleNamespace(class_counts=lambda split: {"a": 6, "b": 2, "c": 0})
    assert balanced_weights(dm) == pytest.approx([8 / 18, 8 / 6, 0.0])
    model = {"emb_size": 8, "hidden_size": 12, "num_layers": 1, "vocab_size": 20}
    module = ClassifierModule(model, {}, {}, {"name": "adam", "lr": 1e-3}, 3, None, [0.5, 2.0, 1.0])
    module.log = lambda *a, **k: None
    module.trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[{"lr": 0.1}])])
    tokens, lengths = torch.randint(0, 20, (4, 5)), torch.tensor([5, 4, 3, 2])
    labels = torch.tensor([0, 1, 1, 2])
    torch.manual_seed(0)
    loss = module.training_step((tokens, lengths, labels), 0)
    torch.manual_seed(0)
    logits = module.model(tokens, lengths)
    weights = torch.tensor([0.5, 2.0, 1.0])
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels, weight=weights).item())
    assert loss.item() != pytest.approx(F.cross_entropy(logits, labels).item())
    assert module.hparams.class_weights == [0.5, 2.0, 1.0]
