"""The pieces that keep a resumed run's records whole (no training here; the SIGKILL tests in
test_resume.py check the whole story)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.training.run_logs import RunCSVLogger, keep_wandb_run_id, wandb_run_id
from tests.helpers.history import read_csv

OLD = "epoch,loss,step,val\n0,3.0,0,\n0,2.5,1,\n0,,1,9.0\n1,2.0,2,\n1,1.5,3,\n1,,3,7.0\n"


def logger_with_old_file(tmp_path: Path) -> RunCSVLogger:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(OLD)
    return RunCSVLogger(save_dir=tmp_path, name="csv", version="")


def test_resume_keeps_rows_up_to_the_checkpoint_and_appends(tmp_path: Path) -> None:
    logger = logger_with_old_file(tmp_path)
    logger.log_hyperparams({"seed": 1})  # starts the writer: the old rows must survive it
    assert (tmp_path / "csv" / "metrics.csv").read_text() == OLD
    logger.keep_until(1)  # the checkpoint had logged step 1: steps 2 and 3 are trained again
    logger.log_metrics({"epoch": 1, "loss": 2.0}, step=2)  # flushed at once (every row)
    header, rows = read_csv(tmp_path / "csv" / "metrics.csv")
    assert header == ["epoch", "loss", "step", "val"]
    assert [(r["step"], r["loss"], r["val"]) for r in rows] == [
        ("0", "3.0", ""),
        ("1", "2.5", ""),
        ("1", "", "9.0"),
        ("2", "2.0", ""),
    ]
    logger.log_metrics({"epoch": 1, "lr": 0.5}, step=3)  # a new column: header rewritten
    header, rows = read_csv(tmp_path / "csv" / "metrics.csv")
    assert header == ["epoch", "loss", "lr", "step", "val"] and len(rows) == 5
    assert rows[-1]["lr"] == "0.5" and rows[0]["loss"] == "3.0"
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]


def test_header_follows_the_kept_rows(tmp_path: Path) -> None:
    """A column seen only after the checkpoint goes with the dropped rows."""
    logger = logger_with_old_file(tmp_path)
    logger.keep_until(0)
    header, rows = read_csv(tmp_path / "csv" / "metrics.csv")
    assert header == ["epoch", "loss", "step"] and len(rows) == 1


def test_a_new_run_in_a_used_folder_keeps_the_old_file_aside(tmp_path: Path) -> None:
    logger = logger_with_old_file(tmp_path)
    logger.log_metrics({"loss": 4.0}, step=0)  # nobody said "resume": a new run
    header, rows = read_csv(tmp_path / "csv" / "metrics.csv")
    assert header == ["loss", "step"] and [r["loss"] for r in rows] == ["4.0"]
    assert (tmp_path / "csv" / "metrics.replaced-1.csv").read_text() == OLD


def test_wandb_run_id_lives_in_the_run_folder(tmp_path: Path) -> None:
    run, job = tmp_path / "run", tmp_path / "multirun" / "3"
    first = wandb_run_id(run, resume=False)
    assert (run / "wandb_run_id").read_text().strip() == first
    assert wandb_run_id(run, resume=True) == first  # a resume continues the run
    assert wandb_run_id(job, resume=True) not in (first, "")  # each job folder its own run
    assert wandb_run_id(run, resume=False) != first  # a new run in the folder: a new wandb run


def test_wandb_logger_config_gets_the_folders_id(tmp_path: Path) -> None:
    def cfg(ckpt_path: str | None, **wandb: str) -> DictConfig:
        node = {"_target_": "lightning.pytorch.loggers.WandbLogger", **wandb}
        logger = {"csv": {"_target_": "src.training.run_logs.RunCSVLogger"}, "wandb": node}
        c = OmegaConf.create(
            {"paths": {"output_dir": str(tmp_path)}, "ckpt_path": ckpt_path, "logger": logger}
        )
        OmegaConf.set_struct(c, True)
        return c

    fresh = cfg(None)
    run_id = keep_wandb_run_id(fresh)
    assert fresh.logger.wandb.id == run_id == (tmp_path / "wandb_run_id").read_text().strip()
    resumed = cfg("last.ckpt")
    assert keep_wandb_run_id(resumed) == run_id and resumed.logger.wandb.id == run_id
    explicit = cfg("last.ckpt", id="mine")
    assert keep_wandb_run_id(explicit) is None and explicit.logger.wandb.id == "mine"
    csv_only = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "logger": {}})
    assert keep_wandb_run_id(csv_only) is None
