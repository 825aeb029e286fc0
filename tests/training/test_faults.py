"""Numerical faults and impossible configurations: clear errors, untouched checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import src.training.module as module_mod
from src.training.loss import lm_loss


def nan_on_call(n: int):
    """lm_loss that returns a NaN loss on its n-th call (1-based)."""
    calls = {"n": 0}

    def patched(*args, **kwargs):  # noqa: ANN002, ANN003
        terms = lm_loss(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            return terms._replace(loss=terms.loss * float("nan"))
        return terms

    return patched


def test_nan_loss_stops_naming_step_and_checkpoint(run_tiny, monkeypatch, tmp_path: Path) -> None:
    first = run_tiny("trainer.max_epochs=1", out="first")
    best = Path(first["best_checkpoint"])
    before = best.read_bytes()
    monkeypatch.setattr(module_mod, "lm_loss", nan_on_call(3))
    with pytest.raises(FloatingPointError) as info:
        run_tiny(
            "trainer.max_epochs=1",
            f"ckpt_path={best.with_name('last.ckpt')}",
            "trainer.max_epochs=2",
            out="first",
        )
    message = str(info.value)
    assert "non-finite loss (loss nan" in message and "step " in message
    assert "best.ckpt" in message and "optim.nonfinite=skip" in message
    assert best.read_bytes() == before, "the best checkpoint was overwritten"


def test_nan_loss_skip_policy_keeps_training(run_tiny, monkeypatch) -> None:
    monkeypatch.setattr(module_mod, "lm_loss", nan_on_call(3))
    results = run_tiny("optim.nonfinite=skip")
    assert torch.isfinite(torch.tensor(results["val/loss"]))
    ckpt = torch.load(results["best_checkpoint"], weights_only=False)
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.bptt=0"], "data.bptt must be a positive integer"),
        (["data.batch_size=100000"], "data.batch_size=100000: is too large"),
        (["model.dropout_input=1.0"], "dropout_input must be a probability in [0, 1)"),
        (["model.weight_drop=-0.1"], "weight_drop must be a probability"),
        (["model.recurrent_dropout=0.2", "model.runner=cudnn"], "cannot apply recurrent_dropout"),
        (["model.weight_drop_mode=gates"], "elementwise"),
        (["model.runner=fused"], "no layer for cell"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_impossible_values_fail_with_the_key(run_tiny, overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        run_tiny(*overrides)
    assert message in str(info.value)


def test_incompatible_groups_quant_qat_with_cudnn_runner(run_tiny) -> None:
    with pytest.raises(ValueError, match="cannot fake-quantize"):
        run_tiny("quant=qat", "model.runner=cudnn")


def test_checkpoint_of_another_model_is_refused(run_tiny, tmp_path: Path) -> None:
    from src.training.checkpoint import load_module

    results = run_tiny("trainer.max_epochs=1")
    ckpt = torch.load(results["best_checkpoint"], weights_only=False)
    ckpt["hyper_parameters"]["model"]["hidden_size"] += 4  # hparams no longer match the weights
    tampered = tmp_path / "tampered.ckpt"
    torch.save(ckpt, tampered)
    with pytest.raises(ValueError, match="does not match the model"):
        load_module(tampered)
