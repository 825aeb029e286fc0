"""Walk a composed config: the schemas' own checks, the value rules, ``_target_`` arguments."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.config import TaskConfig
from src.models.awd import AWDLSTMConfig
from src.quant.config import QuantConfig

from .errors import NO_VALUE, ConfigError, _one_line
from .rules import (
    EXPORT_RULES,
    GENERATE_RULES,
    GROUP_RULES,
    LOSS_RULES,
    OPTIM_RULES,
    TRAIN_TOP_RULES,
    Rule,
    eval_cross_rules,
    eval_rules,
    export_cross_rules,
    loss_cross_rules,
    task_cross_rules,
    trainer_rules,
)
from .targets import check_target, target_nodes
from .transfer import check_transfer_tokenizer

# ------------------------------------------------------------------------------ walking


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full key, value) of every leaf of a plain container; lists are leaves."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                yield from _leaves(v, key)
            else:
                yield key, v


def _get(data: dict[str, Any], key: str, default: Any = NO_VALUE) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _apply_rules(data: dict[str, Any], rules: dict[str, Rule]) -> list[ConfigError]:
    errors = []
    for key, value in _leaves(data):
        for pattern, rule in rules.items():
            if key == pattern or ("*" in pattern and fnmatch.fnmatchcase(key, pattern)):
                if not ((value is None and rule.nullable) or rule.ok(value)):
                    accepted = rule.accepted
                    if rule.nullable and not accepted.startswith("null"):
                        accepted = f"null or {accepted}"
                    errors.append(ConfigError(key, value, accepted))
                break
    return errors


def _resolve(cfg: DictConfig) -> tuple[dict[str, Any] | None, list[ConfigError]]:
    """The config as plain, resolved data; else the keys that are unset (???) or unresolvable."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            return None, [
                ConfigError(key, "???", f"a value: it has no default, set it with {key}=...")
                for key in missing
            ]
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), []  # type: ignore
    except OmegaConfBaseException as ex:
        raw: Any = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
        key = str(getattr(ex, "full_key", "") or "")
        value = _get(raw, key) if key else NO_VALUE
        # data.cache_dir: ${paths.cache_dir} -> name the key that holds the failing interpolation
        while isinstance(value, str) and (ref := re.fullmatch(r"\$\{([\w.]+)\}", value)):
            key, value = ref.group(1), _get(raw, ref.group(1))
        msg = str(getattr(ex, "msg", "") or ex).splitlines()[0]
        return None, [ConfigError(key or "<config>", value, message=f"cannot resolve: {msg}")]


# ------------------------------------------------------------------------------ schemas


def _message_error(key: str, value: Any, message: str) -> ConfigError:
    """A ConfigError from a reused check's message (``<name> must be X, got V`` -> X)."""
    text = _one_line(message)
    found = re.search(r"\bmust be (.+), got\b", text)
    if found:
        return ConfigError(key, value, _noun_phrase(found.group(1)))
    text = re.sub(r",? got .*$", "", text)
    # drop the check's own (short) name of the key at the start of its message
    head, _, rest = text.partition(" ")
    if rest and key.endswith(head):
        text = rest
    return ConfigError(key, value, message=text)


def _noun_phrase(accepted: str) -> str:
    """``positive`` -> ``a positive value``, ``in (0, 1]`` -> ``a value in (0, 1]``."""
    if accepted.startswith(("a ", "an ", "one of", "null", "true", "false")):
        return accepted
    if accepted.startswith(("in ", "at ", "between ")):
        return f"a value {accepted}"
    return f"a {accepted} value"


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def _schema_leaves(values: dict[str, Any], default: Any, path: tuple[str, ...] = ()) -> Iterator:
    for name, value in values.items():
        sub = getattr(default, name, NO_VALUE)
        if isinstance(value, dict) and dataclasses.is_dataclass(sub):
            yield from _schema_leaves(value, sub, (*path, name))
        else:
            yield (*path, name), value, sub


def _fields(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []


def _unknown_key(key: str, value: Any, known: list[str], where: str) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(key, value, f"a key of {where}: {', '.join(known)}{hint}")


def check_schema(prefix: str, cls: type, values: dict[str, Any]) -> list[ConfigError]:
    """Build ``cls(**values)`` so its ``__post_init__`` checks run; name the failing key.

    The key is the one leaf (nested dataclass fields included) that fails on its own with
    every other field at its default; a cross-field error with no such leaf names the group.
    """
    try:
        cls(**values)
        return []
    except (ValueError, TypeError) as err:
        first = err
    default = cls()
    for path, value, dflt in _schema_leaves(values, default):
        if dflt is not NO_VALUE and value == _plain(dflt):
            continue
        try:
            cls(**_nest(path, value))
        except TypeError as err:
            key = ".".join((prefix, *path))
            parent = default
            for part in path[:-1]:
                parent = getattr(parent, part, None)
            if dflt is NO_VALUE:
                return [_unknown_key(key, value, _fields(parent), ".".join((prefix, *path[:-1])))]
            return [_message_error(key, value, str(err))]
        except ValueError as err:
            return [_message_error(".".join((prefix, *path)), value, str(err))]
    return [ConfigError(prefix, message=_one_line(str(first)))]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value.value if hasattr(value, "value") and not isinstance(value, str) else value


def _check_data(data: dict[str, Any]) -> list[ConfigError]:
    """The datamodule's own checks (its messages name the full key); reads nothing.
    Labelled data (``data=csv|wt2_sections``, which have a ``format`` key) is checked by
    ``ClassifyDataModule``, a corpus by ``LMDataModule``."""
    from src.data.datamodule import LMDataModule
    from src.data.labelled import ClassifyDataModule

    values = data.get("data")
    if not isinstance(values, dict):
        return []
    if not all(isinstance(values.get(k), str) for k in ("data_dir", "cache_dir")):
        return []  # an unset path: reported by the paths rules
    module = ClassifyDataModule if "format" in values else LMDataModule
    try:
        module(**values, seed=data.get("seed", 0))
    except TypeError as err:
        found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if found:
            key = f"data.{found.group(1)}"
            return [_unknown_key(key, values[found.group(1)], sorted(values), "data")]
        return [ConfigError("data", message=_one_line(str(err)))]
    except ValueError as err:
        found = re.match(r"(data\.\w+) ", str(err))
        if found:
            key = found.group(1)
            return [_message_error(key, values.get(key[5:], NO_VALUE), str(err))]
        return [ConfigError("data", message=_one_line(str(err)))]
    return []


def _check_model(data: dict[str, Any]) -> list[ConfigError]:
    model = data.get("model")
    if not isinstance(model, dict):
        return []
    # vocab_size comes from the corpus (build_module replaces the configured value)
    values = {k: v for k, v in model.items() if k != "vocab_size"}
    errors = check_schema("model", AWDLSTMConfig, values)
    if errors:
        return errors
    return _check_cell_runner(model, bool(_get(data, "quant.enabled", False)))


def _check_cell_runner(model: dict[str, Any], quantized: bool) -> list[ConfigError]:
    """``model.cell`` and ``model.runner`` against the registered recurrent layers."""
    from src.models.recurrent import LAYERS, load_plugins

    load_plugins()
    cell, runner = model.get("cell", "lstm"), model.get("runner", "auto")
    cells = sorted({c for c, _ in LAYERS})
    if cell not in cells:
        return [ConfigError("model.cell", cell, f"one of {', '.join(cells)}")]
    if quantized:
        import src.quant.qat  # noqa: F401  (registers the ("<cell>", "qat") layers)

        qat_cells = sorted(c for c, r in LAYERS if r == "qat")
        if cell not in qat_cells:
            return [ConfigError("model.cell", cell, f"{' or '.join(qat_cells)} with quant=qat")]
    if model.get("recurrent_dropout", 0) > 0 and (cell, "loop") not in LAYERS:
        own = "; its forget-gate zoneout is model.qrnn.zoneout" if cell == "qrnn" else ""
        why = f"recurrent dropout needs a per-step loop runner, which {cell} has not{own}"
        return [ConfigError("model.recurrent_dropout", model["recurrent_dropout"], f"0 ({why})")]
    # ("<cell>", "qat") layers are swapped in by quant=qat, never built from model.runner
    runners = ["auto", *sorted({r for c, r in LAYERS if c == cell and r != "qat"})]
    if quantized and runner not in ("auto", "qat"):
        return [ConfigError("model.runner", runner, "auto or qat with quant=qat")]
    if not quantized and runner not in runners:
        return [ConfigError("model.runner", runner, f"one of {', '.join(runners)} for {cell}")]
    if runner == "cudnn" and model.get("recurrent_dropout", 0) > 0:
        return [
            ConfigError(
                "model.runner",
                runner,
                "auto or loop with model.recurrent_dropout > 0 (the fused "
                "kernel never exposes h_{t-1})",
            )
        ]
    return []


def _check_quant(data: dict[str, Any]) -> list[ConfigError]:
    quant = data.get("quant")
    return check_schema("quant", QuantConfig, quant) if isinstance(quant, dict) else []


# ------------------------------------------------------------------------------ entry points


def _results_keys(data: dict[str, Any]) -> list[str]:
    """What ``results.json`` will hold (``optimized_metric`` must be one of these)."""
    if _get(data, "task.name", "lm") == "classify":
        keys = ["val/loss", "val/acc", "val/f1", "n_parameters"]
        if data.get("test", True):
            keys += ["test/loss", "test/acc", "test/f1", "test/majority_acc", "test/majority_f1"]
        return keys
    keys = ["val/loss", "val/ppl", "n_parameters"]
    char_level = bool(_get(data, "data.char_level", False))
    if char_level:
        keys.append("val/bpc")
    if data.get("test", True):
        keys += ["test/loss", "test/ppl"] + (["test/bpc"] if char_level else [])
    return keys


def _check_train(data: dict[str, Any]) -> list[ConfigError]:
    errors = _check_data(data) + _check_model(data) + _check_quant(data)
    if isinstance(data.get("task"), dict):
        errors += check_schema("task", TaskConfig, data["task"])
    errors += _apply_rules(data, {**OPTIM_RULES, **LOSS_RULES, **trainer_rules()})
    if not isinstance(data.get("trainer"), dict) or "_target_" not in data["trainer"]:
        errors.append(ConfigError("trainer", message="expected a trainer node with a _target_"))
    for key, node in target_nodes(data):
        errors += check_target(key, node)
    errors += _apply_rules(data, {**GROUP_RULES, **TRAIN_TOP_RULES})
    errors += _check_policies(data)
    errors += check_transfer_tokenizer(data)
    errors += [ConfigError(*e) for e in loss_cross_rules(data)]
    metric = data.get("optimized_metric")
    keys = _results_keys(data)
    if metric is not None and metric not in keys:
        errors.append(
            ConfigError("optimized_metric", metric, f"a results.json key: {', '.join(keys)}")
        )
    return errors


def _check_policies(data: dict[str, Any]) -> list[ConfigError]:
    """Keys that exclude each other: a schedule with NT-ASGD, unfreezing without groups."""
    schedule = _get(data, "scheduler.name", "none")
    if (
        schedule != "none"
        and _get(data, "optim.name", "sgd") == "sgd"
        and _get(data, "optim.nt_asgd", False)
    ):
        return [
            ConfigError(
                "scheduler",
                schedule,
                message="NT-ASGD (optim.nt_asgd=true) already sets the rate: two policies for "
                "one learning rate; use optim.nt_asgd=false, optim=adam or scheduler=none",
            )
        ]
    split = "clas_split" if _get(data, "task.name", "lm") == "classify" else "lm_split"
    if _get(data, "transfer.gradual_unfreeze", False) and _get(data, "optim.groups") != split:
        return [
            ConfigError(
                "transfer.gradual_unfreeze",
                True,
                message=f"unfreezes parameter groups one by one: set optim.groups={split}",
            )
        ]
    return _check_task(data)


def _check_task(data: dict[str, Any]) -> list[ConfigError]:
    return [ConfigError(key, value, message=msg) for key, value, msg in task_cross_rules(data)]


def _kind(cfg: DictConfig) -> str:
    if "trainer" in cfg:
        return "train"
    if "engine" in cfg:
        return "eval"
    if "tables" in cfg:
        return "export"
    if "tokens" in cfg:
        return "generate"
    return "other"


def problems(cfg: DictConfig) -> list[ConfigError]:
    """Every error found in the composed config ``cfg`` (empty when it is fine)."""
    data, errors = _resolve(cfg)
    if data is None:
        return errors
    kind = _kind(cfg)
    if kind == "train":
        return _check_train(data)
    if kind == "eval":
        errors = _apply_rules(data, {**eval_rules(), "paths.*": GROUP_RULES["paths.*"]})
        return errors or [ConfigError(*e) for e in eval_cross_rules(data)]
    if kind == "export":
        errors = _apply_rules(data, {**EXPORT_RULES, "paths.*": GROUP_RULES["paths.*"]})
        return errors or [ConfigError(*e) for e in export_cross_rules(data)]
    if kind == "generate":
        return _apply_rules(data, GENERATE_RULES)
    return []


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (the first error, the rest in ``.others``) if ``cfg`` is bad.

    Cheap: reads no data and builds no model, so an entry point calls it first."""
    errors = problems(cfg)
    if errors:
        first = errors[0]
        first.others = errors[1:]
        raise first
