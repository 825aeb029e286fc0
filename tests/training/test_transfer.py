"""Transfer to a new corpus through the real entry point (tiny corpora): vocabulary matching,
gradual unfreezing, discriminative rates with schedules, NT-ASGD keeping its groups, float ->
QAT, and the refusals."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import TINY_OVERRIDES, TINY_WORDS, compose_train, write_tiny_corpus

#: the target corpus shares half its words with the tiny corpus and brings its own
OTHER_WORDS = TINY_WORDS[::2] + ["tree", "bird", "flew", "over", "green", "house", "fast", "old"]


def write_other_corpus(root: Path) -> None:
    rng = random.Random(1)
    folder = root / "other"
    folder.mkdir(parents=True)
    for split, count in (("train", 60), ("valid", 12), ("test", 12)):
        lines = [
            " ".join(rng.choice(OTHER_WORDS) for _ in range(rng.randint(3, 9)))
            for _ in range(count)
        ]
        if split == "train":
            lines.append(" ".join(OTHER_WORDS))
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transfer_corpora")
    write_tiny_corpus(root)
    write_other_corpus(root)
    return root


@pytest.fixture(scope="module")
def pretrained(corpora: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float model trained on the tiny corpus (its last.ckpt)."""
    from src.train import train

    out = tmp_path_factory.mktemp("pretrained")
    cfg = compose_train([*TINY_OVERRIDES, "trainer.max_epochs=1"], out, corpora, out / "cache")
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def run(corpora: Path, out: Path, *overrides: str) -> dict[str, Any]:
    from src.train import train

    cfg = compose_train(
        [*TINY_OVERRIDES, "data.corpus=other", *overrides], out, corpora, out / "cache"
    )
    return train(cfg)


def state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_gradual_unfreezing_trains_only_the_top_group_first(
    corpora: Path, pretrained: Path, tmp_path: Path
) -> None:
    """Epoch 1 of a transfer with gradual unfreezing: the layers keep the pretrained weights bit
    for bit (weight decay on), the embedding trains; the vocabulary is the target's, shared
    words started from their pretrained rows."""
    run(
        corpora,
        tmp_path,
        f"+transfer.ckpt_path={pretrained}",
        "transfer.gradual_unfreeze=true",
        "optim.groups=lm_split",
        "optim.lr_decay_per_group=2.6",
        "trainer.max_epochs=1",
        "optim.weight_decay=0.01",
    )
    old, new = state(pretrained), state(tmp_path / "checkpoints" / "last.ckpt")
    layer_keys = [k for k in old["state_dict"] if k.startswith("model.layers.")]
    assert layer_keys
    for key in layer_keys:
        assert torch.equal(old["state_dict"][key], new["state_dict"][key]), key
    assert not torch.equal(
        new["state_dict"]["model.decoder.bias"][:3], new["state_dict"]["model.decoder.bias"][:3] * 0
    )
    assert new["vocab"] != old["vocab"] and set(new["vocab"]) >= set(OTHER_WORDS)
    opt = new["optimizer_states"][0]["param_groups"]
    assert len(opt) == 3 and opt[1]["lr"] / opt[0]["lr"] == pytest.approx(2.6)


def test_transfer_into_qat_with_adam_one_cycle_and_discriminative_rates(
    corpora: Path, pretrained: Path, tmp_path: Path
) -> None:
    """The issue's command in small, into a QAT model: num_layers + 1 groups whose peak rates
    grow by 2.6x; the float checkpoint's quantizers start fresh; the run stops at max_steps
    mid-epoch and still validates and checkpoints."""
    results = run(
        corpora,
        tmp_path,
        f"+transfer.ckpt_path={pretrained}",
        "quant=qat",
        "optim=adam",
        "scheduler=one_cycle",
        "optim.groups=lm_split",
        "optim.lr_decay_per_group=2.6",
        "trainer.max_steps=5",
        "trainer.max_epochs=5",
    )
    assert results["best_checkpoint"] and results["val/loss"] == results["val/loss"]
    ckpt = state(tmp_path / "checkpoints" / "last.ckpt")
    groups = ckpt["optimizer_states"][0]["param_groups"]
    peaks = [g["max_lr"] for g in groups]
    assert len(groups) == 3 and ckpt["global_step"] == 5
    assert [b / a for a, b in zip(peaks, peaks[1:], strict=False)] == pytest.approx([2.6, 2.6])
    assert ckpt["hyper_parameters"]["quant"]["enabled"]
    assert any(k.endswith("observer.initialized") for k in ckpt["state_dict"])


def test_nt_asgd_switch_keeps_the_groups_and_their_rates(
    corpora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import src.training.module as module_mod

    monkeypatch.setattr(module_mod.nt_asgd, "should_switch_to_asgd", lambda h, v, n: True)
    run(corpora, tmp_path, "optim.groups=lm_split", "optim.lr_decay_per_group=2.0")
    ckpt = state(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["nt_asgd"]["active"]
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert len(groups) == 3 and all("t0" in g for g in groups)  # ASGD's groups
    assert [g["lr"] for g in groups] == pytest.approx([30 / 4, 30 / 2, 30])


def test_a_checkpoint_of_other_sizes_is_refused(
    corpora: Path, pretrained: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"hidden_size=12.*hidden_size=16"):
        run(corpora, tmp_path, f"+transfer.ckpt_path={pretrained}", "model.hidden_size=16")


def test_a_backward_language_model_pretrains_and_fine_tunes(
    corpora: Path, pretrained: Path, tmp_path: Path
) -> None:
    """``data.reverse=true`` trains a backward model, which records its direction; it fine-tunes
    into a backward run, and a forward checkpoint is refused there (and the reverse)."""
    from src.checks.transfer import check_transfer_tokenizer
    from src.train import train

    out = tmp_path / "bwd"
    cfg = compose_train(
        [*TINY_OVERRIDES, "trainer.max_epochs=1", "data.reverse=true"], out, corpora, out / "cache"
    )
    results = train(cfg)
    backward = out / "checkpoints" / "last.ckpt"
    assert state(backward)["hyper_parameters"]["data"]["reverse"] is True
    forward_loss = json.loads((pretrained.parent.parent / "results.json").read_text())["val/loss"]
    assert results["val/loss"] != pytest.approx(forward_loss, abs=1e-4)  # other text, other loss
    tuned = run(corpora, tmp_path / "tuned", f"+transfer.ckpt_path={backward}", "data.reverse=true")
    assert tuned["val/loss"] > 0
    with pytest.raises(ValueError, match=r"data.reverse=false but .* data.reverse=true"):
        run(corpora, tmp_path / "refused", f"+transfer.ckpt_path={backward}")
    errors = check_transfer_tokenizer(
        {"data": {"reverse": True}, "transfer": {"ckpt_path": str(pretrained)}}
    )
    assert [e.key for e in errors] == ["data.reverse"]
    assert "reads text forwards; set data.reverse=false" in str(errors[0])
