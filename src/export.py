"""Export a trained model: ``python -m src.export ckpt_path=PATH [format=int8|c|onnx] [out=...]``.

``format=int8`` (default): loads a checkpoint trained with ``quant=qat``, converts it
(``src.quant.integer.convert``: int8 weights, int32 biases, scales, fixed-point multipliers and
shifts, lookup tables), writes the file atomically with the vocabulary and data settings that
``python -m src.eval ckpt_path=FILE engine=int8`` needs, and prints its size beside the
checkpoint's. ``format=c``: the same integer model as ``model.bin`` plus the C99 sources of the
standalone runtime ``awd_int8``, in the folder ``out`` (``src.quant.integer.runtime_export``;
the checkpoint may also be an exported ``.int8.pt``). ``format=onnx``: a float checkpoint as an
ONNX graph with the state as inputs and outputs (``src.deploy.onnx_export``; QAT checkpoints
are refused), a classifier checkpoint as a graph from padded tokens and lengths to class
probabilities (``src.deploy.onnx_classifier``, for ``src.predict engine=onnxruntime``). The
last line of output is one JSON object.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from src.checks import check_config, one_line_config_errors
from src.config import register_configs
from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.quant.integer import runtime_export
from src.quant.integer.lm import IntegerLM
from src.training.checkpoint import is_classifier, load_classifier, load_module, read_checkpoint

log = logging.getLogger(__name__)
register_configs()


_SUFFIX = {"int8": ".int8.pt", "c": ".c", "onnx": ".onnx"}


def default_out(ckpt_path: Path, fmt: str = "int8") -> Path:
    """``<checkpoint stem>.int8.pt``, ``.c`` (a folder) or ``.onnx`` beside the checkpoint."""
    name = ckpt_path.name
    stem = name[: -len(".int8.pt")] if name.endswith(".int8.pt") else ckpt_path.stem
    return ckpt_path.with_name(f"{stem}{_SUFFIX[fmt]}")


def _value(option: Any) -> str:
    return option.value if hasattr(option, "value") else str(option)


def _meta(module: Any, ckpt_path: Path) -> dict[str, Any]:
    return {
        "vocab": module.vocab,
        "data": dict(module.hparams.data),
        "model": dict(module.hparams.model),
        "quant": dict(module.hparams.quant or {}),
        "source": str(ckpt_path),
        "source_bytes": ckpt_path.stat().st_size,
    }


def _integer_model(ckpt_path: Path, tables: str) -> tuple[IntegerLM, dict[str, Any], str]:
    """(integer model, meta, tables) of a QAT checkpoint, or of a file ``format=int8`` wrote."""
    try:
        payload = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - load_module below names the problem
        payload = None
    if qexport.is_export(payload):
        return qexport.from_payload(payload), payload.get("meta", {}), payload["tables"]
    del payload
    module, _ = load_module(ckpt_path)
    lm, _ = qconvert.convert(module.model, tables=tables)
    return qexport.expand_tables(lm), _meta(module, ckpt_path), tables


def _export_c(ckpt_path: Path, out: Path, tables: str) -> dict[str, Any]:
    lm, meta, tables = _integer_model(ckpt_path, tables)
    report = runtime_export.write_runtime(out, lm, meta, tables)
    return {"bytes": report["model_bin_bytes"], "tables": tables, **report}


def _export_onnx(ckpt_path: Path, out: Path) -> dict[str, Any]:
    from src.deploy.onnx_export import export_onnx

    if is_classifier(read_checkpoint(ckpt_path)):
        return _export_onnx_classifier(ckpt_path, out)
    module, _ = load_module(ckpt_path)
    if (module.hparams.quant or {}).get("enabled"):
        raise ValueError(
            f"{ckpt_path} was trained with quant=qat: format=onnx exports float models. Deploy "
            "the integer model with format=c (a standalone C runtime) or format=int8"
        )
    meta = _meta(module, ckpt_path)
    del meta["quant"]
    return export_onnx(module.model, out, meta)


def _export_onnx_classifier(ckpt_path: Path, out: Path) -> dict[str, Any]:
    """A ``task=classify`` checkpoint as an ONNX graph: tokens + lengths -> probabilities."""
    from src.deploy.onnx_classifier import export_classifier_onnx

    module, _ = load_classifier(ckpt_path)
    meta = {
        "vocab": module.vocab,
        "classes": module.classes,
        "data": dict(module.hparams.data),
        "model": dict(module.hparams.model),
        "source": str(ckpt_path),
    }
    return export_classifier_onnx(module.model, out, meta)


def export(cfg: DictConfig) -> dict[str, Any]:
    ckpt_path = Path(cfg.ckpt_path)
    fmt = _value(cfg.get("format", "int8"))
    tables = _value(cfg.tables)
    out = Path(cfg.out) if cfg.out else default_out(ckpt_path, fmt)
    if fmt == "c":
        report = _export_c(ckpt_path, out, tables)
    elif fmt == "onnx":
        report = _export_onnx(ckpt_path, out)
    else:
        module, _ = load_module(ckpt_path)
        lm, scales = qconvert.convert(module.model, tables=tables)
        meta = _meta(module, ckpt_path)
        report = {"bytes": qexport.save(out, qexport.to_payload(lm, tables, scales, meta))}
        report["tables"] = tables
    ckpt_size = ckpt_path.stat().st_size
    return {
        "format": fmt,
        "out": str(out),
        **report,
        "checkpoint": str(ckpt_path),
        "checkpoint_bytes": ckpt_size,
        "ratio": report["bytes"] / ckpt_size,
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    check_config(cfg)  # bad values: one line each, exit 2, before the checkpoint is read
    r = export(cfg)
    mib = 2.0**20
    what = {"int8": "integer model", "c": "C runtime", "onnx": "ONNX model"}[r["format"]]
    size = r.get("model_bin", r["out"])
    print(
        f"{what}: {size}  {r['bytes'] / mib:.2f} MiB  "
        f"(checkpoint {r['checkpoint_bytes'] / mib:.2f} MiB, {100 * r['ratio']:.1f}%)"
    )
    if r["format"] == "c":
        print(f"build: make -C {r['out']}   (or: cd {r['out']} && {runtime_export.BUILD_COMMAND})")
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
