"""``python -m src.bench``: a smoke run at tiny shapes (training-step table, int8 engine vs float
evaluation, token-cache build of a repeated tiny corpus) and the cache-bench helpers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.benchmarks import cache as bench
from src.data import corpus
from src.quant.integer.kernel import compiler
from tests.conftest import REPO, write_tiny_corpus


def test_bench_cli_smoke(tmp_path: Path) -> None:
    source = write_tiny_corpus(tmp_path / "corpora", name="wikitext-2")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "src.bench",
        "++shape_overrides={vocab:40,emb:8,hidden:12,batch:3,bptt:5}",
        "variants=[awd_lstm]",
        "warmup=1",
        "steps=1",
        "rounds=1",
        "engine_batches=[1,2]",
        "engine_cells=[lstm,mlstm]",
        "cache_bench=true",
        "cache_repeats=3",
        f"cache_source={source}",
        f"cache_tmp_dir={scratch}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])  # one JSON object, last line
    assert figures["shape_vocab"] == 40 and figures["threads"] == 1
    assert figures["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512") and "amx" in figures
    assert "mkl_code_path" in figures  # which kernels made the figures (src.utils.cpu)
    for name in ("raw_lstm", "awd_lstm"):
        assert figures[f"{name}/train_tokens_per_s"] > 0 and f"{name}/eval_ratio" in figures
    assert figures["engine/bptt"] == 5
    assert figures["engine/path"] in ("torch", "c", "c-vnni", "c-avx2")
    if compiler() is not None:  # the C runtime at batch 1 beside engine=int8, with its target
        r = figures["engine/b1/runtime_tokens_per_s"]
        i = figures["engine/b1/int8_eval_tokens_per_s"]
        assert r > 0 and figures["engine/b1/runtime_ratio"] == pytest.approx(r / i, rel=0.01)
        assert figures["engine/b1/runtime_ratio_target"] == 1.5
    assert figures["engine/b1/int8_ratio_target"] == 2.0
    assert "engine/b2/int8_ratio_target" not in figures  # targets only where issue 23 set one
    for b in (1, 2):
        f, i = (
            figures[f"engine/b{b}/float_eval_tokens_per_s"],
            figures[f"engine/b{b}/int8_eval_tokens_per_s"],
        )
        assert (
            f > 0 and i > 0 and figures[f"engine/b{b}/int8_ratio"] == pytest.approx(i / f, rel=0.01)
        )
    assert figures["engine/mlstm/b2/int8_eval_tokens_per_s"] > 0
    assert figures["engine/mlstm/path"] == figures["engine/path"]  # both cells have a C kernel
    train = sum(len(line.tokens) for line in corpus.tokenize(source / "train.txt", "word"))
    other = sum(
        len(line.tokens)
        for s in ("valid", "test")
        for line in corpus.tokenize(source / f"{s}.txt", "word")
    )
    assert figures["cache/train_tokens"] == 3 * train
    assert figures["cache/tokens"] == 3 * train + other
    assert figures["cache/train_bytes"] == 3 * (source / "train.txt").stat().st_size
    assert 0 < figures["cache/rss_before_build_mb"] <= figures["cache/peak_rss_mb"] < 400
    assert "cache/speedup_vs_reference" not in figures  # the reference is for 48 copies
    assert not list(scratch.iterdir())  # the temp corpus and its cache are gone
    assert "int8 engine" in proc.stdout and "salesforce" in proc.stdout  # the tables


def test_find_wikitext2_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cache_source"):
        bench.find_wikitext2(str(tmp_path / "nowhere"))
    folder = write_tiny_corpus(tmp_path, name="wikitext-2")
    assert bench.find_wikitext2(str(folder)) == folder


def test_repeated_corpus(tmp_path: Path) -> None:
    source = write_tiny_corpus(tmp_path / "src", name="wikitext-2")
    size = bench.write_repeated_corpus(source, tmp_path / "x4", 4)
    text = (source / "train.txt").read_bytes()
    assert (tmp_path / "x4" / "train.txt").read_bytes() == text * 4 and size == 4 * len(text)
    for split in ("valid", "test"):
        assert (tmp_path / "x4" / f"{split}.txt").read_bytes() == (
            source / f"{split}.txt"
        ).read_bytes()


def test_bench_mixed_precision_rows(tmp_path: Path) -> None:
    """``amp=bfloat16``: the variants run under autocast beside a raw row in the same precision
    and their own float32 twins (``<variant>/amp_train_speedup``); ratios stay relative to the
    fp32 raw stack."""
    cmd = [
        sys.executable,
        "-m",
        "src.bench",
        "++shape_overrides={vocab:40,emb:8,hidden:12,batch:3,bptt:5}",
        "variants=[mlstm]",
        "amp=bfloat16",
        "engine=false",
        "warmup=1",
        "steps=1",
        "rounds=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["amp"] == "bfloat16" and figures["raw_lstm/train_ratio"] == 1.0
    for name in ("raw_lstm_bfloat16", "mlstm", "mlstm_fp32"):  # + the variant's float32 twin
        assert figures[f"{name}/train_tokens_per_s"] > 0
    speedup = figures["mlstm/train_tokens_per_s"] / figures["mlstm_fp32/train_tokens_per_s"]
    assert figures["mlstm/amp_train_speedup"] == pytest.approx(speedup, rel=0.01)
    assert "mlstm/amp_train_speedup_target" not in figures  # the 1.2x target is QAT's
    assert "training under amp at" in proc.stdout


def test_softmax_bench_at_a_small_vocabulary(tmp_path: Path) -> None:
    """``softmax_bench=true`` (tiny V through the overrides): every kind's loss, tokens/s and peak
    memory (peak in a fresh process per kind, speed interleaved in one); full and chunked give
    the same loss; the split/reference ratio is the median of the rounds' paired ratios."""
    cmd = [
        sys.executable,
        "-m",
        "src.bench",
        "++shape_overrides={vocab:40,emb:8,hidden:12,batch:3,bptt:5}",
        "variants=[]",
        "engine=false",
        "softmax_bench=true",
        "softmax.vocab=3000",
        "softmax.emb=16",
        "softmax.tokens=200",
        "softmax.chunk_size=16",
        "softmax.steps=3",
        "warmup=1",
        "steps=1",
        "rounds=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["softmax/vocab"] == 3000 and figures["softmax/splits"] == [31, 224, 852]
    for kind in ("full", "chunked", "split", "adaptive_torch"):  # + torch's, the reference
        assert figures[f"softmax/{kind}/tokens_per_s"] > 0
        assert figures[f"softmax/{kind}/peak_mb"] >= 0
        assert math.isfinite(figures[f"softmax/{kind}/loss"])
    assert figures["softmax/chunked/loss"] == pytest.approx(figures["softmax/full/loss"], rel=1e-5)
    assert "peak" in figures["softmax/memory"] and "peak memory:" in proc.stdout
    paired = figures["softmax/split/vs_adaptive_torch_rounds"]
    assert len(paired) == 3 and all(r > 0 for r in paired)
    assert figures["softmax/split/vs_adaptive_torch"] == sorted(paired)[1]
    assert figures["softmax/split/peak_vs_adaptive_torch"] >= 0
