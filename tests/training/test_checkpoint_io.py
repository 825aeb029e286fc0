"""Atomic checkpoint writes: a process killed mid-write leaves the previous file intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from src.training.checkpoint import read_checkpoint
from src.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import REPO

SLOW_WRITER = textwrap.dedent(
    """
    import sys, time, torch
    from src.training.checkpoint_io import AtomicCheckpointIO

    real_save = torch.save

    def slow_save(obj, f):
        # write a large payload in pieces so the parent can kill us mid-write
        with open(f, "wb") as fh:
            for _ in range(200):
                fh.write(b"x" * (1 << 20))
                fh.flush()
                print("WRITING", flush=True)
                time.sleep(0.05)
        real_save(obj, f)

    torch.save = slow_save
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, sys.argv[1])
    """
)


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "a.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "hyper_parameters": {}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["a.ckpt"]  # no temp file left


def test_kill_during_write_keeps_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "best.ckpt"
    AtomicCheckpointIO().save_checkpoint(
        {"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {}}, path
    )
    before = path.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("WRITING"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert path.read_bytes() == before
    ckpt = read_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["w"], torch.zeros(3))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_corrupt_checkpoint_names_the_problem(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "best.ckpt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_checkpoint(path)


def test_missing_checkpoint_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoints/best.ckpt"):
        read_checkpoint(tmp_path / "nope.ckpt")
