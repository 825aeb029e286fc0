"""The token-cache build of a ~100M-token corpus, in a child process, beside the authors' loader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

#: The authors' loader (salesforce awd-lstm-lm ``data.Corpus``, one process) on the WikiText-2
#: train file concatenated 48 times, measured on the project's 2-core machine (issue 7).
CACHE_REFERENCE = {"seconds": 262.0, "peak_rss_mb": 1020.0, "repeats": 48}

_CACHE_CHILD = """
import json, resource, sys, time
from pathlib import Path
from src.data.cache import load_corpus

def peak_kb():
    # VmHWM: this process's peak RSS since its exec (ru_maxrss would also count the pre-exec
    # copy of the parent, torch and all, that started it)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

before = peak_kb()
start = time.perf_counter()
arrays = load_corpus(Path(sys.argv[1]), "word", Path(sys.argv[2]))
seconds = time.perf_counter() - start
tokens = sum(len(arrays.split(s)) for s in ("train", "valid", "test"))
print(json.dumps({"seconds": seconds, "tokens": tokens, "train_tokens": len(arrays.train),
                  "vocab": len(arrays.vocab), "rss_before_kb": before, "peak_kb": peak_kb()}))
"""


def find_wikitext2(source: str | None) -> Path:
    """The WikiText-2 folder: ``cache_source``, else $AWD_DATA_DIR, ./data, ../shared/corpora."""
    if source:
        candidates = [Path(source)]
    else:
        repo = Path(__file__).resolve().parents[2]
        roots = [
            os.environ.get("AWD_DATA_DIR"),
            "data",
            repo / "data",
            repo.parent / "shared/corpora",
        ]
        candidates = [Path(r) / "wikitext-2" for r in roots if r]
    for folder in candidates:
        if all((folder / f"{s}.txt").is_file() for s in ("train", "valid", "test")):
            return folder
    raise FileNotFoundError(
        "cache_bench needs WikiText-2 ({train,valid,test}.txt); looked in "
        + ", ".join(str(c) for c in candidates)
        + " (set cache_source=<folder> or AWD_DATA_DIR)"
    )


def write_repeated_corpus(source: Path, dest: Path, repeats: int) -> int:
    """``dest/{train,valid,test}.txt``: train = ``repeats`` copies of the source's train file."""
    dest.mkdir(parents=True)
    with open(dest / "train.txt", "wb") as out:
        for _ in range(repeats):
            with open(source / "train.txt", "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    for split in ("valid", "test"):
        shutil.copyfile(source / f"{split}.txt", dest / f"{split}.txt")
    return (dest / "train.txt").stat().st_size


def run_cache_child(corpus_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """Build the cache in a child process that imports only ``src.data.cache``; its report
    holds the seconds, the token counts and its peak RSS (``peak_kb``)."""
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _CACHE_CHILD, str(corpus_dir), str(cache_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        cwd=repo,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cache build failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cache_bench(cfg: DictConfig) -> dict[str, Any]:
    """Time the cache build of WikiText-2 train x ``cache_repeats`` (see the module docstring)."""
    source = find_wikitext2(cfg.cache_source)
    repeats = int(cfg.cache_repeats)
    tmp = Path(tempfile.mkdtemp(prefix="awd-cache-bench-", dir=cfg.cache_tmp_dir))
    try:
        corpus_dir = tmp / f"wikitext-2x{repeats}"
        train_bytes = write_repeated_corpus(source, corpus_dir, repeats)
        report = run_cache_child(corpus_dir, tmp / "cache")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = report["seconds"]
    figures = {
        "cache/source": str(source),
        "cache/repeats": repeats,
        "cache/train_bytes": train_bytes,
        "cache/tokens": report["tokens"],
        "cache/train_tokens": report["train_tokens"],
        "cache/vocab": report["vocab"],
        "cache/seconds": round(seconds, 2),
        "cache/tokens_per_s": round(report["tokens"] / seconds, 1),
        "cache/peak_rss_mb": round(report["peak_kb"] * 1024 / 1e6, 1),
        "cache/rss_before_build_mb": round(report["rss_before_kb"] * 1024 / 1e6, 1),
        "cache/reference_seconds": CACHE_REFERENCE["seconds"],
        "cache/reference_peak_rss_mb": CACHE_REFERENCE["peak_rss_mb"],
    }
    if repeats == CACHE_REFERENCE["repeats"]:  # the reference was measured at 48 copies
        figures["cache/speedup_vs_reference"] = round(CACHE_REFERENCE["seconds"] / seconds, 2)
    print_cache_table(figures)
    return figures


def print_cache_table(f: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"token cache build: wikitext-2 train x {f['cache/repeats']} "
        f"({f['cache/train_bytes'] / 1e6:,.0f} MB, {f['cache/tokens']:,} tokens); "
        "target: peak RSS < 400 MB, >= 3x the reference"
    )
    for col in ("loader", "seconds", "tokens/s", "peak RSS (MB)", "speed-up"):
        table.add_column(col, justify="right" if col != "loader" else "left")
    table.add_row(
        "src.data.cache (child process)",
        f"{f['cache/seconds']:.1f}",
        f"{f['cache/tokens_per_s']:,.0f}",
        f"{f['cache/peak_rss_mb']:,.0f} ({f['cache/rss_before_build_mb']:,.0f} before the build)",
        f"{f['cache/speedup_vs_reference']:.2f}x" if "cache/speedup_vs_reference" in f else "n/a",
    )
    reference = "cache/speedup_vs_reference" in f
    table.add_row(
        "salesforce data.Corpus (reference, x48)",
        f"{CACHE_REFERENCE['seconds']:.0f}",
        f"{f['cache/tokens'] / CACHE_REFERENCE['seconds']:,.0f}" if reference else "n/a",
        f"{CACHE_REFERENCE['peak_rss_mb']:,.0f}",
        "1.00x",
    )
    Console().print(table)
