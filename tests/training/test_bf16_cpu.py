"""``trainer.precision=bf16-mixed`` on the CPU: the float, QAT and classifier runs train and
evaluate; a bf16 QAT checkpoint exports and the int8 engine matches its fake-quantized
evaluation; the QAT recurrence and every fake quantizer stay in float32 under autocast; one
line at start says what this CPU's bf16 units give (flags mocked)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import src.training.precision_advice as advice_mod
from src.quant.config import QuantConfig
from src.quant.qat.lstm import QATLSTMLayer
from src.quant.qat.mlstm import QATMLSTMLayer
from src.train import train
from src.training.precision_advice import bf16_cpu_advice
from tests.conftest import CONF_DIR, compose_train
from tests.helpers.raw_csv import write_raw_csv
from tests.quant.test_qat_e2e import evaluate_in_process

BF16 = "trainer.precision=bf16-mixed"


@pytest.mark.parametrize(
    ("flags", "level", "words"),
    [
        (frozenset({"avx512f", "avx512_bf16", "amx_tile"}), logging.INFO, "AMX"),
        (frozenset({"avx512f", "avx512_bf16"}), logging.WARNING, "no speed-up"),
        (frozenset({"avx2", "fma"}), logging.WARNING, "emulated"),
    ],
)
def test_advice_follows_the_bf16_units(flags: frozenset[str], level: int, words: str) -> None:
    got_level, line = bf16_cpu_advice("bf16-mixed", flags)
    assert got_level == level and words in line and "\n" not in line
    assert "trainer.precision=bf16-mixed" in line
    assert bf16_cpu_advice("32-true", flags) is None


def advice_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == advice_mod.__name__]


def test_float_run_in_bf16_trains_evaluates_and_warns_once(
    run_tiny, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No AMX and no AVX512-BF16 (mocked): one warning at start; the run trains, validates,
    tests its best checkpoint, and that checkpoint reloads with float32 weights."""
    monkeypatch.setattr(advice_mod, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    with caplog.at_level(logging.INFO, logger=advice_mod.__name__):
        results = run_tiny(BF16)
    lines = advice_lines(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "emulated" in lines[0].getMessage()
    assert all(math.isfinite(results[k]) for k in ("val/loss", "test/loss"))
    ckpt = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=False)
    assert {v.dtype for v in ckpt["state_dict"].values() if v.is_floating_point()} == {
        torch.float32
    }


def test_float32_run_says_nothing(run_tiny, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=advice_mod.__name__):
        run_tiny("trainer.max_epochs=1")
    assert advice_lines(caplog) == []


@pytest.mark.parametrize("layer_class", [QATLSTMLayer, QATMLSTMLayer])
def test_qat_recurrence_and_quantizers_stay_float32_under_autocast(
    layer_class: type[torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under bf16 autocast every fake quantizer of the QAT layer gets float32 (a bf16 value
    cannot hold an int16 code) and the outputs and state are float32; the input projection is
    the one GEMM in bf16 (LSTM and mLSTM)."""
    torch.manual_seed(0)
    layer = layer_class(6, 5, quant=QuantConfig(enabled=True, delay_steps=0))
    x = torch.randn(7, 3, 6)
    layer(x)  # the observers see float data first
    seen: list[torch.dtype] = []
    original = torch.fake_quantize_per_tensor_affine

    def spy(t: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append(t.dtype)
        return original(t, *args)

    monkeypatch.setattr(torch, "fake_quantize_per_tensor_affine", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, (h, c) = layer(x)
    assert seen and set(seen) == {torch.float32}
    assert {y.dtype, h.dtype, c.dtype} == {torch.float32}
    assert not torch.is_autocast_enabled("cpu")  # left as found
    y32, _ = layer(x)
    assert y32.dtype == torch.float32 and not torch.equal(y32, y)  # bf16 projection differs


def test_qat_run_in_bf16_exports_and_int8_matches(
    run_tiny, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """A QAT model trained under bf16-mixed: validation in bf16 is close to the float32
    fake-quantized evaluation of its checkpoint, the checkpoint exports, and the int8 engine
    (from the checkpoint and from the file, the same) is within 1% of that evaluation, as for a
    float32-trained model (tests/quant/test_qat_e2e.py)."""
    from src.export import export

    results = run_tiny("quant=qat", BF16, "trainer.max_epochs=3")
    ckpt = Path(results["best_checkpoint"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={ckpt}", f"out={tmp_path / 'm.pt'}"])
    assert export(cfg)["bytes"] == (tmp_path / "m.pt").stat().st_size
    fq = evaluate_in_process(ckpt, tiny_data_dir, tmp_path)
    assert fq["loss"] == pytest.approx(results["val/loss"], rel=0.01)
    from_ckpt = evaluate_in_process(ckpt, tiny_data_dir, tmp_path, "engine=int8")
    from_file = evaluate_in_process(tmp_path / "m.pt", tiny_data_dir, tmp_path, "engine=int8")
    assert from_ckpt["loss"] == from_file["loss"]
    assert from_file["ppl"] == pytest.approx(fq["ppl"], rel=0.01)


def test_classifier_run_in_bf16(tiny_data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    """``task=classify`` under bf16-mixed trains and reports finite validation metrics."""
    csv_dir = write_raw_csv(tmp_path / "raw_csv", n_rows=(40, 8, 8))
    overrides = [
        "task=classify", "experiment=smoke_classify", "data=csv", f"data.path={csv_dir}",
        "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=1.0",
        "trainer.max_epochs=1", BF16, "model.emb_size=8", "model.hidden_size=12",
        "model.num_layers=2", "~callbacks.rich_progress_bar", "trainer.enable_model_summary=false",
        "logger=csv",
    ]  # fmt: skip
    results = train(compose_train(overrides, tmp_path / "clas", tiny_data_dir, cache_dir))
    assert math.isfinite(results["val/loss"]) and 0.0 <= results["val/acc"] <= 1.0
