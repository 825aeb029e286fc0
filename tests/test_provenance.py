"""provenance.json: what produced a run (src/utils/provenance.py), written when the run starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import src.utils.provenance as prov
from src.utils.cpu import mkl_code_path
from tests.analysis.fake_runs import write_job, write_sweep
from tests.conftest import REPO, TINY_OVERRIDES, compose_train


def test_record_of_this_checkout(tmp_path: Path) -> None:
    path = prov.write_provenance(tmp_path, "cpu", argv=["src/train.py", "experiment=smoke"])
    record = json.loads(path.read_text())
    assert path == tmp_path / "provenance.json"
    if prov.git_state()["git_commit"] is not None:  # a clone (CI, development)
        assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"])
        assert isinstance(record["git_dirty"], bool)
    versions = record["versions"]
    assert set(versions) >= {"python", "torch", "lightning", "hydra-core", "omegaconf", "wandb"}
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert versions["torch"] and versions["lightning"] and versions["hydra-core"]
    assert record["device"] == record["cpu"] and record["device"]
    assert record["gpus"] == [] and record["accelerator"] == "cpu"
    assert record["hostname"] and record["argv"] == ["src/train.py", "experiment=smoke"]
    assert record["executable"] == sys.executable and record["started"]
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(record["amx"], bool) and isinstance(record["cpu_pinned"], bool)
    assert record["mkl_code_path"] == mkl_code_path()  # e.g. "auto:AVX512_E1"
    assert not list(tmp_path.glob(".provenance.json.*")), "temporary file left behind"


def test_git_fields_follow_the_checkout() -> None:
    state = prov.git_state(REPO)
    try:
        subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout here")
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert state["git_commit"] == head


def test_not_a_checkout_records_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package: null git fields, never an error."""
    assert prov.git_state(tmp_path) == {"git_commit": None, "git_dirty": None}
    # a package folder inside some other repository is not that repository
    assert prov.git_state(REPO / "src") == {"git_commit": None, "git_dirty": None}
    assert prov.git_state(tmp_path / "missing") == {"git_commit": None, "git_dirty": None}
    monkeypatch.setattr(prov, "PACKAGE_ROOT", tmp_path)
    record = prov.collect("cpu")
    assert record["git_commit"] is None and record["git_dirty"] is None


def test_no_git_and_no_gpu_driver_never_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_program(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(prov.subprocess, "run", no_program)
    assert prov.git_state(REPO) == {"git_commit": None, "git_dirty": None}
    assert prov.collect("cpu")["git_commit"] is None


def test_gpu_name_on_a_gpu_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: f"NVIDIA H200 #{i}")
    record = prov.collect("gpu")
    assert record["device"] == "NVIDIA H200 #0" and len(record["gpus"]) == 2
    assert prov.collect("cpu")["device"] == record["cpu"]  # trainer.accelerator=cpu on a GPU host
    assert prov.on_gpu("auto") and prov.on_gpu("cuda") and not prov.on_gpu("mps")


def test_gpu_name_asks_the_driver_before_cuda_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not initialized yet (fork-based DDP must still start): nvidia-smi, not CUDA."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)

    def no_cuda(i=0):
        raise AssertionError("CUDA initialized")

    monkeypatch.setattr(torch.cuda, "get_device_name", no_cuda)

    def smi(cmd, **kwargs):
        assert cmd[0] == "nvidia-smi"
        return subprocess.CompletedProcess(cmd, 0, stdout="NVIDIA H200\n", stderr="")

    monkeypatch.setattr(prov.subprocess, "run", smi)
    assert prov.gpu_names() == ["NVIDIA H200"]


def test_a_run_that_crashes_has_its_provenance(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import src.train

    def crash(*args: object) -> None:
        raise RuntimeError("the corpus could not be read")

    monkeypatch.setattr(src.train, "build_datamodule", crash)
    cfg = compose_train(TINY_OVERRIDES, tmp_path / "run", tiny_data_dir, tmp_path / "cache")
    with pytest.raises(RuntimeError, match="corpus"):
        src.train.train(cfg)
    record = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert record["accelerator"] == "cpu" and "versions" in record
    assert not (tmp_path / "run" / "results.json").exists()


def test_plot_and_summary_ignore_it(tmp_path: Path) -> None:
    from src.analysis.runs import find_jobs
    from src.analysis.summary import summarize
    from src.plot import make_plots

    sweep = write_sweep(tmp_path / "sweep")
    for job in sweep.iterdir():
        prov.write_provenance(job, "cpu")
    crashed = sweep / "4"  # a job that died before it logged anything
    (crashed / ".hydra").mkdir(parents=True)
    prov.write_provenance(crashed, "cpu")
    assert len(find_jobs(sweep)) == 5
    rows = summarize(sweep).read_text().splitlines()
    assert len(rows) == 6 and "no results" in rows[-1]
    run = write_job(tmp_path / "run", ["experiment=smoke"])
    prov.write_provenance(run, "cpu")
    assert {p.name for p in make_plots(run)} == {"validation.png", "lr_phase.png", "final.png"}
