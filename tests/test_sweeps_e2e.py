"""Sweeps through the real CLI on the tiny corpus: Hydra multirun (summary, one wandb run per
job), Optuna search, the submitit launcher, SLURM launcher config, and DDP equivalence."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from tests.conftest import CONF_DIR, TINY_OVERRIDES, write_tiny_corpus
from tests.test_train_e2e import run_cli

OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
needs_optuna = pytest.mark.skipif(
    not OPTUNA, reason='needs the sweep extra: pip install -e ".[sweep]"'
)
needs_submitit = pytest.mark.skipif(
    not SUBMITIT, reason='needs the sweep extra: pip install -e ".[sweep]"'
)


def tiny_args(data_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        *TINY_OVERRIDES,
        "trainer.enable_progress_bar=false",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache}",
        *extra,
    ]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_multirun_sweep_one_wandb_run_per_job_and_summary(tiny_data_dir: Path, tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "src.train",
        "-m",
        "model=awd_lstm,mlstm",
        "quant=none,qat",
        *tiny_args(tiny_data_dir, tmp_path / "cache", "logger=wandb"),
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    names = set()
    for job in jobs:
        assert (job / "results.json").is_file()
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
        wandb_cfg = yaml.safe_load((job / "config.yaml").read_text())["logger"]["wandb"]
        assert wandb_cfg["group"] == f"train/{sweep.parent.name}/{sweep.name}"
        names.add(wandb_cfg["name"])
    assert len(names) == 4 and all("model=" in n and "quant=" in n for n in names)
    summary = rows(sweep / "summary.csv")
    assert [(r["model"], r["quant"]) for r in summary] == [
        ("awd_lstm", "none"),
        ("awd_lstm", "qat"),
        ("mlstm", "none"),
        ("mlstm", "qat"),
    ]
    assert all(float(r["val/ppl"]) > 1 for r in summary)
    assert "Sweep summary" in proc.stdout and "best (min val/ppl)" in proc.stdout
    plots = run_cli("src.plot", str(sweep)).stdout.split()
    assert {Path(p).name for p in plots} == {"validation.png", "lr_phase.png", "final.png"}


@pytest.mark.slow
@needs_optuna
def test_optuna_search_reports_the_best_trial(tiny_data_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    proc = run_cli(
        "src.train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        *tiny_args(tiny_data_dir, tmp_path / "cache"),
        f"hydra.sweep.dir={sweep}",
    )
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [float(r["val/ppl"]) for r in rows(sweep / "summary.csv")]
    assert len(values) == 2 and best["best_value"] == pytest.approx(min(values))
    assert set(best["best_params"]) >= {"optim.lr", "model.dropout_input", "model.weight_drop"}
    assert "Best value" in proc.stdout + proc.stderr


@pytest.mark.slow
@needs_submitit
def test_submitit_local_launcher_runs_a_sweep(tiny_data_dir: Path, tmp_path: Path) -> None:
    """4 concurrent jobs prepare the same (not yet built) corpus cache: it is built once, under
    the file lock, and every job trains on it."""
    sweep = tmp_path / "submitit"
    cache = tmp_path / "cache"
    run_cli(
        "src.train",
        "-m",
        "hydra/launcher=submitit_local",
        *tiny_args(
            tiny_data_dir, cache, "optim=nt_asgd,adam", "model.weight_drop_mode=elementwise,row"
        ),
        f"hydra.sweep.dir={sweep}",
    )
    assert (sweep / ".submitit").is_dir()
    assert [r["status"] for r in rows(sweep / "summary.csv")] == ["ok"] * 4
    built = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert len(built) == 1 and built[0].startswith("tiny-"), built


@needs_submitit
def test_slurm_launcher_runs_one_task_per_device() -> None:
    import src.train  # noqa: F401  (registers the resolvers the config uses)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "trainer=ddp",
                "trainer.accelerator=gpu",
                "trainer.devices=4",
                "trainer.num_nodes=2",
            ],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["nodes"], launcher["gpus_per_node"]) == (4, 2, 4)


def wandb_node(tmp_path: Path, mode: str) -> dict:
    """The wandb logger config resolved as inside a job of the given Hydra mode."""
    import src.train  # noqa: F401  (registers the resolvers)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=["logger=wandb", f"hydra.mode={mode}"], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "2025-01-31" / "12-00-00")
        cfg.hydra.job.override_dirname = "optim=adam"
        cfg.hydra.runtime.output_dir = str(tmp_path)
    try:
        HydraConfig.instance().set_config(cfg)
        return OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    finally:
        HydraConfig.instance().cfg = None


def test_wandb_names_jobs_by_overrides_only_in_multirun(tmp_path: Path) -> None:
    single, swept = wandb_node(tmp_path, "RUN"), wandb_node(tmp_path, "MULTIRUN")
    assert (single["name"], single["group"]) == ("train", None)
    assert (swept["name"], swept["group"]) == ("optim=adam", "train/2025-01-31/12-00-00")


@needs_optuna
def test_optuna_search_space_composes(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.optimized_metric == "val/ppl"
    assert cfg.hydra.sweeper.direction == "minimize"
    assert str(cfg.hydra.mode) in ("MULTIRUN", "RunMode.MULTIRUN")
    assert "optim.lr" in cfg.hydra.sweeper.params


def test_main_returns_the_optimized_metric() -> None:
    from src.train import optimized_value

    results = {"val/ppl": 120.0, "val/loss": 4.79}
    assert optimized_value(results, "val/loss") == 4.79
    with pytest.raises(KeyError, match="test=true"):
        optimized_value(results, "test/ppl")


DDP_OVERRIDES = [
    "data.corpus=tiny",
    "data.batch_size=4",
    "data.bptt=8",
    "data.eval_batch_size=2",
    "data.test_batch_size=2",
    "data.download=false",
    "data.variable_bptt=false",
    "model.emb_size=8",
    "model.hidden_size=12",
    "model.num_layers=2",
    "model.dropout_emb=0",
    "model.dropout_input=0",
    "model.dropout_hidden=0",
    "model.dropout_output=0",
    "model.weight_drop=0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=2",
    "trainer.deterministic=true",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "~callbacks.rich_progress_bar",
    "+callbacks.step_losses._target_=tests.helpers.step_losses.StepLosses",
    "test=false",
]


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process(tmp_path: Path) -> None:
    """All dropouts 0, fixed BPTT: two gloo ranks with 2 streams each take the same steps as one
    process with all 4 (gradients are averaged; each rank's loss is its shard's mean)."""
    data = tmp_path / "corpora"
    write_tiny_corpus(data, n_lines=(300, 20, 20))
    common = [*DDP_OVERRIDES, f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'c'}"]
    run_cli("src.train", *common, "trainer=cpu", f"hydra.run.dir={tmp_path / 'one'}")
    run_cli("src.train", *common, "trainer=ddp", f"hydra.run.dir={tmp_path / 'two'}")
    single = json.loads((tmp_path / "one" / "step_losses_rank0.json").read_text())
    rank0 = json.loads((tmp_path / "two" / "step_losses_rank0.json").read_text())
    rank1 = json.loads((tmp_path / "two" / "step_losses_rank1.json").read_text())
    assert len(single) == len(rank0) == len(rank1) == 20
    assert rank0 != rank1  # the ranks did see different streams
    both = [(a + b) / 2 for a, b in zip(rank0, rank1, strict=True)]
    rel = max(abs(x - y) / abs(y) for x, y in zip(both, single, strict=True))
    print(f"DDP (2 ranks) vs one process, 20 steps: max relative difference {rel:.2e}")
    assert rel < 1e-5
