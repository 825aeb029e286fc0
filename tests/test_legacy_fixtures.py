"""Files written by older code still load and give the same numbers, on every x86 CPU.

``tests/fixtures/legacy`` holds checkpoints and exported integer files written by commit
fef8003 (before QAT became a model transform and ``src/quant`` was split by concern), and the
numbers that code gives. Fake quantization turns the last-bit differences between CPU kernels
(AVX2 / AVX-512 reductions, SLEEF vs libm, MKL and oneDNN dispatch, thread count) into other
integer codes, so the numbers are measured where every CPU computes the same bits: in a child
process under ``python -m src.pinned`` (``src/utils/cpu.py``), by ``measure.py``, the script
that recorded them from the old code. Every loss compares to 1e-6 relative and every integer
code exactly: a refactor must not move a number.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, once_per_session
from tests.fixtures.legacy.measure import int8_codes

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
EXPECTED: dict[str, dict[str, Any]] = {
    k: v for k, v in json.loads((LEGACY / "expected.json").read_text()).items() if k[0] != "_"
}
SMOKE: dict[str, dict[str, float]] = json.loads((LEGACY / "smoke_expected.json").read_text())[
    "runs"
]
QAT = [name for name, record in EXPECTED.items() if "int8_codes" in record]
REL = 1e-6


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=0.0)


def measure_pinned(what: str, out: Path, *options: str) -> dict[str, Any]:
    """``python -m src.pinned tests.fixtures.legacy.measure <what> <out> <options>``'s report;
    the child must have run under the pin (a pin that did not take effect fails here, not as a
    number)."""
    module = "tests.fixtures.legacy.measure"
    cmd = [sys.executable, "-m", "src.pinned", module, what, str(out), *options]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    cpu = report["numerics"]
    assert cpu["cpu_pinned"] and cpu["cpu_capability"] == "DEFAULT", cpu
    assert cpu["num_threads"] == 1 and cpu["mkl_code_path"] in (None, "COMPATIBLE"), cpu
    return report


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every variant's numbers, measured once per session in one pinned child process."""
    out = tmp_path_factory.mktemp("legacy") / "variants.json"
    return once_per_session(
        tmp_path_factory, "legacy_variants", lambda: measure_pinned("variants", out)["variants"]
    )


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("split", ["valid", "test"])
def test_legacy_checkpoint_evaluates_as_before(
    name: str, split: str, measured: dict[str, dict[str, Any]]
) -> None:
    """Float and fake-quantized checkpoints (one with NT-ASGD's live weights and ranges)."""
    got, want = measured[name]["eval"][split], EXPECTED[name]["eval"][split]
    assert close(got, want), (got, want)


@pytest.mark.parametrize("name", QAT)
def test_legacy_integer_models_evaluate_as_before(
    name: str, measured: dict[str, dict[str, Any]]
) -> None:
    """The integer engine from the QAT checkpoint and from the file exported by old code: the
    same int32 logits as the old code, and the same loss."""
    got, want = measured[name], EXPECTED[name]
    assert got["int8_codes"] == want["int8_codes"]
    assert close(got["int8_from_checkpoint"], want["int8_from_checkpoint"])
    assert close(got["int8_from_export"], want["int8_from_export"])


@pytest.mark.parametrize("name", QAT)
def test_integer_codes_are_the_same_on_the_native_cpu_paths(name: str) -> None:
    """Integer arithmetic needs no pin: this process's own kernels (AVX-512 VNNI, AVX2, ...)
    give the old code's int32 logits bit for bit."""
    want = EXPECTED[name]["int8_codes"]
    assert int8_codes(LEGACY / f"{name}.ckpt") == want["checkpoint"]
    assert int8_codes(LEGACY / f"{name}.int8.pt") == want["export"]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_training_reproduces_legacy_runs(name: str, measured: dict[str, dict[str, Any]]) -> None:
    """Training with the same overrides and seed gives the old run's val and test loss."""
    assert measured[name]["overrides"] == EXPECTED[name]["overrides"]
    for key, want in EXPECTED[name]["train"].items():
        got = measured[name]["train"][key]
        assert close(got, want), (key, got, want)


@pytest.mark.slow
def test_smoke_runs_on_ptb_reproduce_legacy_numbers(tmp_path: Path, corpora_dir: Path) -> None:
    """``experiment=smoke`` on real PTB with the QAT transform (LSTM and mLSTM), as the old code
    gave. (All four were checked when the pin landed; the float runs are the same code path as
    the tiny float reruns above, so CI runs only the two that go through ``prepare``.)"""
    runs = [k for k in SMOKE if "quant=qat" in k]
    out = tmp_path / "smoke.json"
    report = measure_pinned("smoke", out, "--data-dir", str(corpora_dir), "--only", *runs)
    for run in runs:
        for key, want in SMOKE[run].items():
            got = report["smoke"][run][key]
            assert close(got, want), (run, key, got, want)
