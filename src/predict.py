"""Predict on new documents:
``python -m src.predict ckpt_path=CKPT input=FILE output=FILE [engine=float|onnxruntime]``.

``input``: a ``.csv`` with a ``text`` column (other columns are copied through), a ``.txt`` with
one document per line, or ``-`` for standard input. A classifier checkpoint (or a list of them
with the same classes, ``ckpt_path=[fwd.ckpt,bwd.ckpt]``: their probabilities are averaged)
writes ``label`` and ``p_<class>`` per document; a language model writes ``tokens``, ``loss``
(mean nats per token) and ``ppl``. ``engine=onnxruntime`` runs classifiers exported by
``python -m src.export format=onnx`` (``ckpt_path=model.onnx``). The last line of output is
one JSON summary. Bad input (a missing or non-UTF-8 file, a CSV without ``text``, an empty
document) stops with one line naming the file and row, exit status 2, and no output file.
Logic: :mod:`src.prediction`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from src.checks import EXIT_CODE, ConfigError, one_line_config_errors, report
from src.prediction.inputs import STDIN, InputError
from src.prediction.run import predict


class PredictEngine(str, Enum):
    float = "float"  # checkpoints, in PyTorch
    onnxruntime = "onnxruntime"  # .onnx classifiers of python -m src.export format=onnx


@dataclass
class PredictConfig:
    task_name: str = "predict"
    ckpt_path: Any = MISSING  # a checkpoint (or .onnx file), or a list of classifiers
    input: str = MISSING  # .csv (a text column), .txt (one document per line) or - (stdin)
    output: str = MISSING  # the CSV to write (atomically)
    engine: PredictEngine = PredictEngine.float
    batch_size: int = 32  # documents per forward pass
    progress: bool | None = None  # null: a bar on stderr from 2000 documents


ConfigStore.instance().store(name="predict_schema", node=PredictConfig)


def checkpoint_paths(cfg: DictConfig) -> list[str]:
    """``ckpt_path`` as a list of existing files of the engine's kind (else ConfigError)."""
    value = cfg.ckpt_path
    paths = [str(p) for p in value] if isinstance(value, (ListConfig, list)) else [str(value)]
    engine = cfg.engine.value
    suffix = ".onnx" if engine == "onnxruntime" else None
    for path in paths or [""]:
        if not Path(path).expanduser().is_file():
            raise ConfigError("ckpt_path", value, "an existing checkpoint file, or a list of them")
        if (suffix == ".onnx") != path.endswith(".onnx"):
            want = (
                "onnxruntime for .onnx files"
                if suffix is None
                else "float for checkpoints (onnxruntime reads .onnx files)"
            )
            raise ConfigError("engine", engine, want)
    return paths


def check_predict_config(cfg: DictConfig) -> list[str]:
    """The checkpoint paths, after the keys that need no model: batch size, output file."""
    for key in sorted(OmegaConf.missing_keys(cfg)):
        raise ConfigError(key, "???", f"a value: it has no default, set it with {key}=...")
    if cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, "an integer >= 1")
    out = Path(cfg.output).expanduser()
    if cfg.output == STDIN or out.is_dir() or not out.parent.is_dir():
        raise ConfigError("output", cfg.output, "a file path in an existing folder")
    return checkpoint_paths(cfg)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Check ``cfg`` and predict; configuration and input errors end the process (exit 2)."""
    try:
        paths = check_predict_config(cfg)
        return predict(
            paths,
            cfg.input,
            cfg.output,
            engine=cfg.engine.value,
            batch_size=int(cfg.batch_size),
            progress=cfg.progress,
        )
    except ConfigError as ex:
        report(ex)
    except (InputError, ValueError, FileNotFoundError) as ex:
        sys.stdout.flush()
        print(f"predict error: {ex}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CODE)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
