"""The prepared GPU check (`scripts/device_check.sh`) in its CPU dry-run mode, so the one script a
session with a lent device runs is known to work before that session spends device time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_device_check_dry_run(tmp_path: Path, corpora_dir: Path) -> None:
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "OUT": str(tmp_path / "out"),
        "AWD_DATA_DIR": str(corpora_dir),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["bash", "scripts/device_check.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8  # what the device tool brings back
    for name in ("fp32", "bf16"):
        assert json.loads((out / f"epoch_{name}.json").read_text())["val/ppl"] > 1
    bench = json.loads((out / "bench_bf16.log").read_text().strip().splitlines()[-1])
    assert bench["amp"] == "bfloat16" and bench["compile_cell"] is True
    assert "one PTB epoch: val ppl fp32" in proc.stdout
