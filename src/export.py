"""Export the integer-only model: ``python -m src.export ckpt_path=PATH [out=FILE]``.

Loads a checkpoint trained with ``quant=qat``, converts it (``src.quant.integer.convert``:
int8 weights, int32 biases, scales, fixed-point multipliers and shifts, lookup tables), writes
the file atomically with the vocabulary and data settings that ``python -m src.eval
ckpt_path=FILE engine=int8`` needs, and prints its size beside the checkpoint's; the last line
of output is one JSON object.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.checks import check_config, one_line_config_errors
from src.config import register_configs
from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.training.checkpoint import load_module

log = logging.getLogger(__name__)
register_configs()


def default_out(ckpt_path: Path) -> Path:
    return ckpt_path.with_name(f"{ckpt_path.stem}.int8.pt")


def export(cfg: DictConfig) -> dict[str, Any]:
    ckpt_path = Path(cfg.ckpt_path)
    module, _ = load_module(ckpt_path)
    tables = cfg.tables.value if hasattr(cfg.tables, "value") else str(cfg.tables)
    lm, scales = qconvert.convert(module.model, tables=tables)
    meta = {
        "vocab": module.vocab,
        "data": dict(module.hparams.data),
        "model": dict(module.hparams.model),
        "quant": dict(module.hparams.quant or {}),
        "source": str(ckpt_path),
        "source_bytes": ckpt_path.stat().st_size,
    }
    out = Path(cfg.out) if cfg.out else default_out(ckpt_path)
    size = qexport.save(out, qexport.to_payload(lm, tables, scales, meta))
    ckpt_size = ckpt_path.stat().st_size
    return {
        "out": str(out),
        "bytes": size,
        "checkpoint": str(ckpt_path),
        "checkpoint_bytes": ckpt_size,
        "ratio": size / ckpt_size,
        "tables": tables,
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    check_config(cfg)  # bad values: one line each, exit 2, before the checkpoint is read
    r = export(cfg)
    mib = 2.0**20
    print(
        f"integer model: {r['out']}  {r['bytes'] / mib:.2f} MiB  "
        f"(float checkpoint {r['checkpoint_bytes'] / mib:.2f} MiB, {100 * r['ratio']:.1f}%)"
    )
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
