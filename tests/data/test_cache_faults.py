"""Cache faults: a full disk mid-build, and a lock left by a process that died holding it."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from src.data import cache
from src.data.cache import load_corpus
from tests.conftest import REPO, write_tiny_corpus


def test_disk_full_while_writing_names_the_fix_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus_dir = write_tiny_corpus(tmp_path / "corpora")
    cache_dir = tmp_path / "cache"
    calls = {"n": 0}
    real = cache._write_ids

    def full_disk(path, tokenizer, vocab, out_path):  # noqa: ANN001 - mirrors _write_ids
        calls["n"] += 1
        if calls["n"] == 2:  # valid split: train already written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, tokenizer, vocab, out_path)

    monkeypatch.setattr(cache, "_write_ids", full_disk)
    with pytest.raises(OSError, match="no space left.*paths.cache_dir") as info:
        load_corpus(corpus_dir, "word", cache_dir)
    assert info.value.errno == errno.ENOSPC
    leftovers = [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    monkeypatch.setattr(cache, "_write_ids", real)
    arrays = load_corpus(corpus_dir, "word", cache_dir)  # space again: builds normally
    assert len(arrays.train) > 0


HOLD_LOCK = textwrap.dedent(
    """
    import os, signal, sys
    from filelock import FileLock
    lock = FileLock(sys.argv[1])
    lock.acquire()
    print("LOCKED", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    corpus_dir = write_tiny_corpus(tmp_path / "corpora")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    key = cache.cache_key(
        "word", {s: cache.file_sha256(p) for s, p in cache.split_paths(corpus_dir).items()}
    )
    lock_path = cache_dir / f"{corpus_dir.name}-{key[:16]}.lock"
    proc = subprocess.run(
        [sys.executable, "-c", HOLD_LOCK, str(lock_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9 and "LOCKED" in proc.stdout
    assert lock_path.exists()  # the dead process left its lock file behind
    arrays = load_corpus(corpus_dir, "word", cache_dir)  # flock died with the process
    assert np.asarray(arrays.valid).size > 0
