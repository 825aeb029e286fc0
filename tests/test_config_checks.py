"""Configuration errors up front, one line each (src/checks/).

A table of bad overrides covering every config group, checked in-process (compose, then
``problems`` or the translation of Hydra's composition error), and the acceptance rows through
the real CLIs (exit status 2, exactly one line naming the key, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, open_dict

import src.generate  # noqa: F401  (registers generate_schema)
from src.checks import ConfigError, from_hydra, problems, validate
from src.utils.resolvers import register_resolvers
from tests.conftest import CONF_DIR, REPO, TINY_OVERRIDES

register_resolvers()  # the wandb logger's name and group (src.train registers them on import)


def compose_any(config_name: str, overrides: Sequence[str], tmp: Path) -> DictConfig:
    """Compose like the CLI; only the keys that need Hydra's runtime are filled in."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    if "paths" in cfg:
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp)
            cfg.paths.output_dir = str(tmp / "out")
    return cfg


def errors_of(config_name: str, overrides: Sequence[str], tmp: Path) -> list[ConfigError]:
    """What the entry point would report: Hydra's composition error, else validate()'s."""
    try:
        cfg = compose_any(config_name, overrides, tmp)
    except (ConfigCompositionException, OverrideParseException) as ex:
        error = from_hydra(ex)
        assert error is not None, f"not translated: {ex!r}"
        return [error]
    return problems(cfg)


#: (group, overrides, the full key the one line must name)
TRAIN_ROWS = [
    # model (AWDLSTMConfig.__post_init__, MLSTMOptions, registered cells/runners, Hydra's types)
    ("model", ["model.emb_size=-1"], "model.emb_size"),
    ("model", ["model.hidden_size=0"], "model.hidden_size"),
    ("model", ["model.weight_drop=1.5"], "model.weight_drop"),
    ("model", ["model.dropout_emb=-0.1"], "model.dropout_emb"),
    ("model", ["model.weight_drop_mode=rows"], "model.weight_drop_mode"),
    ("model", ["model.init_range=0"], "model.init_range"),
    ("model", ["model.cell=rnn_tanh"], "model.cell"),
    ("model", ["model.weight_drop_targets=[kernel]"], "model.weight_drop_targets"),
    ("model", ["model.weight_drop_targets=[]"], "model.weight_drop_targets"),
    ("model", ["model=qrnn", "model.qrnn.zoneout=1.5"], "model.qrnn.zoneout"),
    ("model", ["model=qrnn", "model.qrnn.window=3"], "model.qrnn.window"),
    ("model", ["model.qrnn.zoneout=0.1"], "model.qrnn.zoneout"),  # with cell=lstm
    ("model", ["model=qrnn", "model.recurrent_dropout=0.1"], "model.recurrent_dropout"),
    ("model", ["model=qrnn", "model.runner=loop"], "model.runner"),
    ("model", ["model.cell=gru", "model.runner=scan"], "model.runner"),
    ("model", ["model.runner=cudnn", "model.recurrent_dropout=0.1"], "model.runner"),
    ("model", ["model.runner=fused"], "model.runner"),
    ("model", ["model=mlstm", "model.mlstm.cell_clip=-1"], "model.mlstm.cell_clip"),
    ("model", ["model.mlstm.proj_size=8"], "model.mlstm.proj_size"),
    ("model", ["model=mlstm", "model.mlstm.proj_clip=1.0"], "model.mlstm.proj_clip"),
    ("model", ["model.emb_size=abc"], "model.emb_size"),
    ("model", ["model.nosuchkey=1"], "model.nosuchkey"),
    ("model", ["+model.foo=1"], "model.foo"),
    ("model", ["model=nosuch"], "model"),
    # quant (QuantConfig.__post_init__)
    ("quant", ["quant=qat", "quant.weight_bits=9"], "quant.weight_bits"),
    ("quant", ["quant.tensors=[foo]"], "quant.tensors"),
    ("quant", ["quant.ema_momentum=0"], "quant.ema_momentum"),
    ("quant", ["quant.delay_steps=-1"], "quant.delay_steps"),
    ("quant", ["quant=qat", "model.runner=loop"], "model.runner"),
    ("quant", ["quant=qat", "model.cell=gru"], "model.cell"),  # QAT: lstm and mlstm only
    ("quant", ["quant=qat", "model=qrnn"], "model.cell"),
    ("quant", ["quant=int4"], "quant"),
    # data (LMDataModule's constructor checks; Hydra's enum)
    ("data", ["data.bptt=0"], "data.bptt"),
    ("data", ["data.batch_size=0"], "data.batch_size"),
    ("data", ["data.eval_batch_size=-2"], "data.eval_batch_size"),
    ("data", ["data.test_batch_size=0"], "data.test_batch_size"),
    ("data", ["data.bptt_p=1.5"], "data.bptt_p"),
    ("data", ["data.min_bptt=0"], "data.min_bptt"),
    ("data", ["data.corpus=''"], "data.corpus"),
    ("data", ["data.tokenizer=xyz"], "data.tokenizer"),
    # optim
    ("optim", ["optim.lr=-1"], "optim.lr"),
    ("optim", ["optim.lr=abc"], "optim.lr"),
    ("optim", ["optim.weight_decay=-1e-6"], "optim.weight_decay"),
    ("optim", ["optim.clip=-0.5"], "optim.clip"),
    ("optim", ["optim.nonmono=0"], "optim.nonmono"),
    ("optim", ["optim=adam", "optim.betas=[0.9,1.5]"], "optim.betas"),
    ("optim", ["optim.when=[-1]"], "optim.when"),
    ("optim", ["optim.nonfinite=maybe"], "optim.nonfinite"),
    ("optim", ["optim=rmsprop"], "optim"),
    ("optim", ["optim.groups=layers"], "optim.groups"),
    ("optim", ["optim.lr_decay_per_group=0"], "optim.lr_decay_per_group"),
    # scheduler (and its exclusion of NT-ASGD), transfer
    ("scheduler", ["scheduler=cosine"], "scheduler"),
    ("scheduler", ["scheduler=stlr"], "scheduler"),  # with NT-ASGD: two policies
    ("scheduler", ["scheduler=stlr", "optim=adam", "scheduler.cut_frac=1.5"], "scheduler.cut_frac"),
    (
        "scheduler",
        ["scheduler=one_cycle", "optim=adam", "scheduler.pct_start=0"],
        "scheduler.pct_start",
    ),
    ("transfer", ["+transfer.ckpt_path=/no/such.ckpt"], "transfer.ckpt_path"),
    ("transfer", ["transfer.gradual_unfreeze=true"], "transfer.gradual_unfreeze"),
    (
        "transfer",
        ["task=classify", "data=wt2_sections", "transfer.gradual_unfreeze=true"],
        "transfer.gradual_unfreeze",
    ),
    # task (TaskConfig's head checks, and what each task refuses)
    ("task", ["task=nosuch"], "task"),
    ("task", ["task.ps=[0.1]"], "task.ps"),
    ("task", ["task.lin_sizes=[0]"], "task.lin_sizes"),
    ("task", ["model.bidirectional=true"], "model.bidirectional"),  # the LM sees the future
    ("task", ["data=wt2_sections"], "data.format"),  # labelled data for a language model
    ("task", ["optim.groups=clas_split"], "optim.groups"),
    ("task", ["task=classify"], "data.corpus"),  # experiment=smoke: a corpus, no labels
    ("task", ["task=classify", "data=wt2_sections", "optim.groups=lm_split"], "optim.groups"),
    ("task", ["task=classify", "data=wt2_sections", "quant=qat"], "quant.enabled"),
    (
        "task",
        ["task=classify", "data=wt2_sections", "optim=nt_asgd", "scheduler=none"],
        "optim.nt_asgd",
    ),
    (  # a cross-field check of AWDLSTMConfig: named by its group
        "task",
        ["task=classify", "data=wt2_sections", "model.bidirectional=true", "model.hidden_size=33"],
        "model",
    ),
    ("trainer", ["trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches"),
    # loss
    ("loss", ["loss.alpha=-1"], "loss.alpha"),
    ("loss", ["loss.beta=-0.5"], "loss.beta"),
    ("loss", ["loss.softmax=sampled"], "loss.softmax"),
    ("loss", ["loss.chunk_size=0"], "loss.chunk_size"),
    ("loss", ["loss.splits=[2000,100]"], "loss.splits"),
    ("loss", ["loss.splits=[0,100]"], "loss.splits"),
    ("loss", ["quant=qat", "loss.softmax=split"], "loss.softmax"),  # QAT: the full softmax only
    ("loss", ["quant=qat", "loss.softmax=chunked"], "loss.softmax"),
    # trainer (Lightning's accepted values, and the Trainer's arguments)
    ("trainer", ["trainer.max_epochs=-2"], "trainer.max_epochs"),
    ("trainer", ["trainer.max_epochs=abc"], "trainer.max_epochs"),
    ("trainer", ["trainer.accelerator=tpux"], "trainer.accelerator"),
    ("trainer", ["trainer.precision=8"], "trainer.precision"),
    ("trainer", ["trainer.devices=0"], "trainer.devices"),
    ("trainer", ["trainer.num_nodes=0"], "trainer.num_nodes"),
    ("trainer", ["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
    ("trainer", ["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches"),
    ("trainer", ["+trainer.strategy=ddp_nope"], "trainer.strategy"),
    ("trainer", ["trainer.strategy=ddp"], "trainer.strategy"),  # not in trainer=cpu: needs +
    ("trainer", ["+trainer.max_epoch=3"], "trainer.max_epoch"),
    ("trainer", ["trainer=tpu"], "trainer"),
    # logger
    ("logger", ["logger.wandb.offline=maybe"], "logger.wandb.offline"),
    ("logger", ["logger.csv._target_=nosuch.CSVLogger"], "logger.csv._target_"),
    ("logger", ["logger.csv.save_dir=''"], "logger.csv.save_dir"),
    ("logger", ["logger=tensorboard"], "logger"),
    # callbacks
    (
        "callbacks",
        ["callbacks.step_checkpoint.every_n_train_steps=-1"],
        "callbacks.step_checkpoint.every_n_train_steps",
    ),
    ("callbacks", ["callbacks.model_checkpoint.mode=maximum"], "callbacks.model_checkpoint.mode"),
    ("callbacks", ["+callbacks.model_checkpoint.modee=max"], "callbacks.model_checkpoint.modee"),
    ("callbacks", ["+finetune=asgd"], "callbacks.finetune.ckpt_path"),
    (
        "callbacks",
        ["+finetune=asgd", "callbacks.finetune.ckpt_path=/no/such.ckpt"],
        "callbacks.finetune.ckpt_path",
    ),
    ("callbacks", ["callbacks=nosuch"], "callbacks"),
    # paths
    ("paths", ["paths.data_dir=''"], "paths.data_dir"),
    ("paths", ["paths.cache_dir=${oc.env:AWD_NO_SUCH_VARIABLE}"], "paths.cache_dir"),
    ("paths", ["paths=nosuch"], "paths"),
    # top level, experiment, hydra
    ("top", ["seed=-1"], "seed"),
    ("top", ["seed=1.5"], "seed"),
    ("top", ["optimized_metric=val/acc"], "optimized_metric"),
    ("top", ["optimized_metric=test/ppl", "test=false"], "optimized_metric"),
    ("top", ["ckpt_path=/no/such/last.ckpt"], "ckpt_path"),
    ("top", ["task_name=''"], "task_name"),
    ("top", ["nosuch=1"], "nosuch"),
    ("top", ["model.emb_size=["], "model.emb_size"),
    ("experiment", ["experiment=nosuch"], "experiment"),
    ("hydra", ["hydra/launcher=nosuch"], "hydra/launcher"),
]

OTHER_ROWS = [
    ("eval", [], "ckpt_path"),
    ("eval", ["ckpt_path=/no/such.ckpt"], "ckpt_path"),
    ("eval", ["batch_size=0"], "batch_size"),
    ("eval", ["split=train"], "split"),
    ("eval", ["engine=int4"], "engine"),
    ("eval", ["accelerator=tpux"], "accelerator"),
    ("eval", ["pointer.lam=1.5"], "pointer.lam"),
    ("eval", ["pointer.window=0"], "pointer.window"),
    ("eval", ["dynamic.bptt=0"], "dynamic.bptt"),
    ("eval", ["dynamic.lr=-1"], "dynamic.lr"),
    ("export", ["ckpt_path=/no/such.ckpt"], "ckpt_path"),
    ("export", ["tables=half"], "tables"),
    ("generate", ["tokens=-1"], "tokens"),
    ("generate", ["temperature=-1"], "temperature"),
    ("generate", [], "ckpt_path"),
]


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "best.ckpt"
    path.write_bytes(b"not read by the checks")
    return path


def assert_one_line(errors: list[ConfigError], key: str) -> str:
    lines = [line for e in errors for line in e.lines]
    assert len(lines) == 1, lines
    assert errors[0].key == key, lines
    line = lines[0]
    assert line.startswith(f"config error: {key}") and "\n" not in line, line
    return line


@pytest.mark.parametrize(
    ("overrides", "key"),
    [(o, k) for _, o, k in TRAIN_ROWS],
    ids=[f"{g}:{' '.join(o)}" for g, o, _ in TRAIN_ROWS],
)
def test_bad_train_override_is_one_line(overrides: list[str], key: str, tmp_path: Path) -> None:
    assert_one_line(errors_of("train", ["experiment=smoke", *overrides], tmp_path), key)


@pytest.mark.parametrize(
    ("entry", "overrides", "key"),
    OTHER_ROWS,
    ids=[f"{e}:{' '.join(o) or '<no ckpt_path>'}" for e, o, _ in OTHER_ROWS],
)
def test_bad_override_of_other_entry_points(
    entry: str, overrides: list[str], key: str, ckpt_file: Path, tmp_path: Path
) -> None:
    given = [o for o in overrides if o.startswith("ckpt_path=")]
    ckpt = [] if given or (not overrides and key == "ckpt_path") else [f"ckpt_path={ckpt_file}"]
    assert_one_line(errors_of(entry, [*ckpt, *overrides], tmp_path), key)


def test_every_group_is_in_the_table() -> None:
    groups = {g for g, _, _ in TRAIN_ROWS}
    conf_groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()} - {"finetune"}
    conf_groups -= {"hparams_search"}  # needs the sweep extra; its keys are Hydra's
    assert conf_groups <= groups | {"hydra"}, conf_groups - groups
    assert {"eval", "export", "generate"} <= {e for e, _, _ in OTHER_ROWS}


def test_the_line_names_value_and_what_is_accepted(tmp_path: Path) -> None:
    line = assert_one_line(errors_of("train", ["optim.lr=-1"], tmp_path), "optim.lr")
    assert line == "config error: optim.lr=-1.0: expected a finite number >= 0"
    line = assert_one_line(
        errors_of("train", ["model.weight_drop=1.5"], tmp_path), "model.weight_drop"
    )
    assert "=1.5" in line and "[0, 1)" in line
    line = assert_one_line(errors_of("train", ["optim=rmsprop"], tmp_path), "optim")
    assert line == "config error: optim=rmsprop: expected one of adam, nt_asgd"
    line = assert_one_line(
        errors_of("train", ["+trainer.max_epoch=3"], tmp_path), "trainer.max_epoch"
    )
    assert "did you mean max_epochs?" in line


def test_several_errors_give_one_line_each(tmp_path: Path) -> None:
    cfg = compose_any("train", ["optim.lr=-1", "data.bptt=0", "loss.alpha=-1"], tmp_path)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert [line.split("=")[0] for line in info.value.lines] == [
        "config error: data.bptt",
        "config error: optim.lr",
        "config error: loss.alpha",
    ]


#: experiments with a mandatory key, and the value that completes them
MANDATORY = {
    "transfer_ptb": ["transfer.ckpt_path=null"],
    "ulmfit_lm_csv": ["transfer.ckpt_path=null", "data.path=folder"],
    "ulmfit_clas_csv": ["transfer.ckpt_path=null", "data.path=folder"],
    "ulmfit_lm_wt2": ["transfer.ckpt_path=null"],
    "ulmfit_clas_wt2": ["transfer.ckpt_path=null"],
    "ulmfit_curve_clas": ["transfer.ckpt_path=null"],
}

VALID = [
    [f"experiment={e.stem}", *MANDATORY.get(e.stem, [])]
    for e in sorted((CONF_DIR / "experiment").glob("*.yaml"))
] + [
    ["model=mlstm"],
    ["quant=qat"],
    ["model=mlstm", "quant=qat"],
    ["model=mlstm", "model.mlstm.proj_size=16", "model.mlstm.proj_clip=3", "quant=qat"],
    ["optim=adam", "optim.lr=0.01"],
    ["optim.lr=0"],  # tests fine-tune with a zero learning rate
    ["logger=csv"],
    ["logger=none"],
    ["loss.softmax=chunked", "loss.chunk_size=64"],
    ["loss.softmax=split", "loss.splits=[2800,20000,76000]"],
    ["loss.softmax=split", "loss.splits=[]", "optim.groups=lm_split"],
    ["trainer=ddp"],
    ["trainer=gpu", "trainer.precision=bf16-mixed", "model.compile_cell=true"],
    ["data=ptb_char"],
    ["data=enwik8"],
    ["data=wikitext2"],
    ["data=wikitext103"],
    ["task=classify"],
    ["task=classify", "model.bidirectional=true", "optim.groups=clas_split"],
    ["experiment=smoke_classify", "test=false", "optimized_metric=val/f1"],
    ["model.recurrent_dropout=0.2", "model.runner=loop"],
    ["model.weight_drop_mode=row", "data.variable_bptt=false", "optim.when=[1]"],
    ["test=false", "optimized_metric=val/loss"],
    ["data=ptb_char", "optimized_metric=test/bpc"],
    ["experiment=smoke", "trainer.max_epochs=-1", "trainer.limit_train_batches=0.5"],
    ["trainer.devices=auto", "trainer.accelerator=auto", "trainer.precision=16-mixed"],
    ["~callbacks.rich_progress_bar", "callbacks.step_checkpoint.every_n_train_steps=0"],
    TINY_OVERRIDES,
]


@pytest.mark.parametrize("overrides", VALID, ids=lambda o: " ".join(o)[:60])
def test_valid_configs_pass(overrides: list[str], tmp_path: Path) -> None:
    cfg = compose_any("train", overrides, tmp_path)
    validate(cfg)


def test_valid_finetune_and_other_entry_points_pass(ckpt_file: Path, tmp_path: Path) -> None:
    ckpt = f"ckpt_path={ckpt_file}"
    validate(compose_any("train", ["+finetune=asgd", f"callbacks.finetune.{ckpt}"], tmp_path))
    validate(compose_any("train", [ckpt], tmp_path))
    validate(compose_any("train", ["ckpt_path=last"], tmp_path))
    transfer = ["experiment=transfer_ptb", f"transfer.{ckpt}"]
    validate(compose_any("train", transfer, tmp_path))
    adam = ["optim=adam", "scheduler=one_cycle", "optim.groups=lm_split", "trainer.max_steps=10"]
    validate(compose_any("train", [f"+transfer.{ckpt}", *adam], tmp_path))
    classify = ["experiment=wt2_sections_clas", f"+transfer.{ckpt}"]
    validate(compose_any("train", classify, tmp_path))
    validate(compose_any("eval", [ckpt, "pointer.enabled=true", "dynamic.enabled=true"], tmp_path))
    validate(compose_any("eval", [ckpt, "engine=int8", "split=valid", "batch_size=1"], tmp_path))
    validate(compose_any("export", [ckpt, "tables=full"], tmp_path))
    validate(compose_any("generate", [ckpt, "temperature=0", "prompt='the cat'"], tmp_path))


# ------------------------------------------------------------------------------ the real CLIs

#: the real CLIs: validate() (optim, data), Hydra's composition error, another entry point, and
#: HYDRA_FULL_ERROR=1 (key None); the other acceptance rows run in-process above
CLI_ROWS = [
    ("src.train", ["optim.lr=-1"], "optim.lr"),
    ("src.train", ["data.bptt=0"], "data.bptt"),
    ("src.train", ["model.emb_size=abc"], "model.emb_size"),
    ("src.eval", ["ckpt_path=/no/such.ckpt"], "ckpt_path"),
    ("src.train", ["optim.lr=-1"], None),
]


def test_cli_bad_overrides_exit_2_with_one_line(ckpt_file: Path, tmp_path: Path) -> None:
    """Acceptance rows through ``python -m``: status 2, one line naming the key, no traceback
    (with ``HYDRA_FULL_ERROR=1``: the traceback). The processes run side by side: each spends
    its few seconds importing torch and Lightning."""
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    procs = []
    for i, (module, overrides, key) in enumerate(CLI_ROWS):
        args = [*overrides, f"hydra.run.dir={tmp_path / str(i)}"]
        if module == "src.train":
            args.insert(0, "experiment=smoke")
        if module == "src.generate":
            args.insert(0, f"ckpt_path={ckpt_file}")
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env if key else {**env, "HYDRA_FULL_ERROR": "1"},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append((proc, module, key, start))
    for proc, module, key, start in procs:
        out, err = proc.communicate(timeout=300)
        seconds = time.perf_counter() - start
        if key is None:
            assert proc.returncode != 0 and "Traceback" in err and "ConfigError" in err, err
            continue
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert proc.returncode == 2, (module, key, proc.returncode, out, err)
        assert len(lines) == 1 and lines[0].startswith(f"config error: {key}="), lines
        print(f"{module} {key}: {seconds:.1f} s ({len(CLI_ROWS)} processes side by side)")
