"""The deployment figures of the README: PTB test set at batch 1, one thread, tokens/s of

* the standalone C runtime (``awd_int8 model.bin score``) of a QAT checkpoint,
* ``python -m src.eval engine=int8`` of the same model,
* ``python -m src.eval engine=onnxruntime`` of a float checkpoint exported with format=onnx,
* ``python -m src.eval`` of that float checkpoint (PyTorch),

the runtime's stripped binary and model.bin sizes, and how the runtime's perplexity agrees with
``engine=int8``'s (and ONNX Runtime's with PyTorch's). Every command runs ``--repeats`` times,
interleaved; the median is reported. The last line of output is one JSON object.

    python scripts/bench_deploy.py --qat outputs/<qat run>/checkpoints/best.ckpt \\
        --float outputs/<float run>/checkpoints/best.ckpt [--data-dir ../shared/corpora]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def last_json(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def module(name: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", name, *overrides]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qat", type=Path, required=True, help="checkpoint trained with quant=qat")
    parser.add_argument("--float", type=Path, required=True, help="float checkpoint, same shape")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "corpora")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="folder for the exports")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from src.quant.integer import runtime_export

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_deploy."))
    cache = args.cache_dir or out / "cache"
    common = [f"paths.data_dir={args.data_dir}", f"paths.cache_dir={cache}"]
    hydra = [f"hydra.run.dir={out / 'hydra'}"]
    last_json(module("src.export", f"ckpt_path={args.qat}", f"out={out / 'qat.int8.pt'}", *hydra))
    last_json(module("src.export", f"ckpt_path={args.qat}", "format=c", f"out={out / 'c'}", *hydra))
    onnx = out / "float.onnx"
    last_json(module("src.export", f"ckpt_path={args.float}", "format=onnx", f"out={onnx}", *hydra))
    binary = runtime_export.build(out / "c")
    test = args.data_dir / "ptb" / "test.txt"
    evaluate = ["split=test", "batch_size=1", "accelerator=cpu", *common, *hydra]
    engines = {
        "int8_engine": [f"ckpt_path={out / 'qat.int8.pt'}", "engine=int8"],
        "onnxruntime": [f"ckpt_path={onnx}", "engine=onnxruntime"],
        "float_pytorch": [f"ckpt_path={args.float}"],
    }
    commands = {"c_runtime": [str(binary), str(out / "c" / "model.bin"), "score", str(test)]}
    for name, overrides in engines.items():
        commands[name] = module("src.eval", *overrides, *evaluate, f"out={out / name}.json")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            runs[name].append(last_json(command))
    speed = {
        name: statistics.median(r.get("tokens_per_s", r.get("tokens_per_sec")) for r in results)
        for name, results in runs.items()
    }
    ppl = {name: results[0]["ppl"] for name, results in runs.items()}
    report = {
        "tokens_per_s": speed,
        "ppl": ppl,
        "c_vs_int8_rel": abs(ppl["c_runtime"] - ppl["int8_engine"]) / ppl["int8_engine"],
        "onnx_vs_pytorch_rel": abs(ppl["onnxruntime"] - ppl["float_pytorch"])
        / ppl["float_pytorch"],
        "binary_bytes": binary.stat().st_size,
        "stripped_binary_bytes": runtime_export.strip_size(binary),
        "model_bin_bytes": (out / "c" / "model.bin").stat().st_size,
        "onnx_bytes": onnx.stat().st_size,
        "int8_pt_bytes": (out / "qat.int8.pt").stat().st_size,
        "out": str(out),
    }
    print(f"{'':<16}{'tokens/s':>12}{'test ppl':>12}")
    for name in commands:
        print(f"{name:<16}{speed[name]:>12,.0f}{ppl[name]:>12.4f}")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
