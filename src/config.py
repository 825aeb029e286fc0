"""Structured-config schemas: a mistyped key or a wrong type fails at start with Hydra's message.

Each config group's YAML is merged into the dataclass typed here; ``register_configs`` must run
before Hydra composes (the entry points and ``tests/conftest.py`` call it on import).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from src.evaluation.cli_options import DynamicOptions, PointerOptions
from src.models.awd import AWDLSTMConfig
from src.models.classifier import check_head
from src.quant.config import QuantConfig


class Tokenizer(str, Enum):
    word = "word"  # whitespace tokens + <eos> per line (also the pre-spaced PTB-char files)
    char = "char"  # every character, newline -> <eos>
    wikitext = "wikitext"  # raw text -> WikiText's tokens (Moses, @-@ @,@ @.@)
    fastai = "fastai"  # fastai's rules + spaCy (xxbos, xxmaj, ...); the `text` extra


@dataclass
class DataConfig:
    corpus: str = "ptb"  # folder name under data_dir: ptb, wikitext-2, wikitext-103, ptb-char
    tokenizer: Tokenizer = Tokenizer.word
    char_level: bool = False  # report bits per character
    batch_size: int = 20  # global number of parallel streams (split across DDP ranks)
    eval_batch_size: int = 10
    test_batch_size: int = 1
    bptt: int = 70
    variable_bptt: bool = True
    bptt_p: float = 0.95  # probability of the full bptt base (else bptt / 2)
    bptt_std: float = 5.0
    min_bptt: int = 5
    download: bool = True  # fetch a missing corpus from its public source (sha256-verified)
    data_dir: str = "${paths.data_dir}"
    cache_dir: str = "${paths.cache_dir}"
    url_overrides: dict[str, str] | None = None  # mirror URLs, keyed as in src/data/download.py
    # read every split backwards (fastai's `backwards`): a backward language model, and a
    # classifier on its encoder (documents reversed after data.max_len cut them)
    reverse: bool = False


class LabelledFormat(str, Enum):
    csv = "csv"  # <path>/{train,valid,test}.csv with `text` and `label` columns
    wt2_sections = "wt2_sections"  # WikiText paragraphs labelled with their section heading


class Truncate(str, Enum):
    head = "head"  # keep a long document's first max_len tokens
    tail = "tail"  # keep its last max_len tokens (fastai's choice)


@dataclass
class LabelledDataConfig(DataConfig):
    """``data=csv`` / ``data=wt2_sections``: labelled documents (src/data/labelled.py).

    A subclass of DataConfig because OmegaConf merges only a subclass into the train schema's
    ``data`` node. Of the inherited keys the labelled data reads corpus, data_dir, download,
    url_overrides and the three batch sizes (documents per batch); bptt is the classifier
    encoder's chunk length; tokenizer splits the texts (src/data/tokenizers.py); char_level must
    stay false; the rest is unused. ``task=lm data=csv`` reads the same keys (src/data/csv_lm.py).
    """

    format: LabelledFormat = LabelledFormat.csv
    path: str | None = None  # csv: the folder holding train.csv, valid.csv, test.csv
    max_len: int = 1440  # tokens kept per document (fastai: 72 * 20)
    truncate: Truncate = Truncate.head
    min_freq: int = 2  # vocabulary built from train: a word needs this many occurrences
    num_classes: int | None = None  # wt2_sections: headings kept; csv: expected count, or null
    corpus: str = "wikitext-2"  # wt2_sections: the WikiText folder under data_dir
    batch_size: int = 64
    eval_batch_size: int = 64
    test_batch_size: int = 64
    bptt: int = 72
    # a stratified, seeded subset of train keeps its labels (src/data/subsets.py); null: all
    train_subset: int | None = None
    subset_seed: int = 0


class OptimizerName(str, Enum):
    sgd = "sgd"
    adam = "adam"


class NonFinite(str, Enum):
    stop = "stop"  # raise before the optimizer step, naming the step and the last checkpoint
    skip = "skip"  # drop the batch's update
    ignore = "ignore"  # no check (saves a host sync per step)


class Grouping(str, Enum):
    single = "single"  # every parameter in one group (the paper's training)
    lm_split = "lm_split"  # fastai's awd_lstm_lm_split: each layer, then embedding + decoder
    clas_split = "clas_split"  # fastai's awd_lstm_clas_split: embedding, each layer, the head


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.sgd
    lr: float = 30.0
    # parameter groups; group k of n trains at lr / lr_decay_per_group ** (n - 1 - k)
    # (ULMFiT's discriminative fine-tuning: 2.6), src/training/param_groups.py
    groups: Grouping = Grouping.single
    lr_decay_per_group: float = 1.0
    weight_decay: float = 1.2e-6  # L2 through the optimizer (salesforce `wdecay`)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam only
    nt_asgd: bool = True  # switch SGD -> averaged SGD on the non-monotone trigger (SGD only)
    nonmono: int = 5
    when: list[int] = field(default_factory=list)  # epochs after which the LR is divided by 10
    clip: float = 0.25  # gradient norm clip (0 disables)
    nonfinite: NonFinite = NonFinite.stop  # NaN/Inf loss or gradient: stop | skip | ignore


class ScheduleName(str, Enum):
    none = "none"
    one_cycle = "one_cycle"  # torch.optim.lr_scheduler.OneCycleLR
    stlr = "stlr"  # ULMFiT's slanted triangular rate (their eq. 3)


@dataclass
class SchedulerConfig:
    """``scheduler`` group: a rate schedule stepped per optimizer step (src/training/schedulers.py);
    each group's own rate is its peak."""

    name: ScheduleName = ScheduleName.none
    total_steps: int | None = None  # null: the trainer's estimate of the run's optimizer steps
    cut_frac: float = 0.1  # stlr: fraction of the steps spent increasing the rate
    ratio: float = 32.0  # stlr: peak rate / lowest rate
    pct_start: float = 0.3  # one_cycle (torch's defaults)
    div_factor: float = 25.0
    final_div_factor: float = 1.0e4
    anneal_strategy: str = "cos"
    cycle_momentum: bool = True


class SoftmaxKind(str, Enum):
    full = "full"  # every token's [V] logits at once (the paper's)
    chunked = "chunked"  # the same loss, chunk_size tokens' logits at a time (forward and backward)
    split = "split"  # salesforce's tied split softmax over frequency-ranked words


@dataclass
class LossConfig:
    alpha: float = 2.0  # activation regularization (AR) on the dropped last-layer output
    beta: float = 1.0  # temporal activation regularization (TAR) on the raw last-layer output
    softmax: SoftmaxKind = SoftmaxKind.full  # src/models/softmax.py
    chunk_size: int = 128  # chunked: tokens per chunk
    # split: frequency ranks where tail clusters 1..K start; null: salesforce's [2800, 20000,
    # 76000] for V > 75k ([4200, 35000, 180000] for V > 500k), else those scaled to V
    splits: list[int] | None = None


class TaskName(str, Enum):
    lm = "lm"  # language model on a corpus (LMDataModule, LMModule)
    classify = "classify"  # text classifier on labelled documents (src/training/tasks.py)


class ClassWeight(str, Enum):
    none = "none"  # plain cross entropy
    balanced = "balanced"  # each class weighs n / (C * n_c) in the training loss


@dataclass
class TaskConfig:
    """``task`` group: what src.train trains (src/training/tasks.py). The head keys are read by
    ``task=classify`` only (src/models/classifier.py, fastai's PoolingLinearClassifier)."""

    name: TaskName = TaskName.lm
    lin_sizes: list[int] = field(default_factory=lambda: [50])  # hidden sizes of the head
    ps: list[float] = field(default_factory=lambda: [0.4, 0.1])  # dropout of each head block
    # training loss weights: none, or balanced (class c weighs n / (C * n_c) over the labelled
    # train documents: scikit-learn's `class_weight="balanced"`, which the baseline's grid has)
    class_weight: ClassWeight = ClassWeight.none

    def __post_init__(self) -> None:
        check_head(self.lin_sizes, self.ps)


@dataclass
class TrainConfig:
    task_name: str = "train"
    seed: int = 141
    ckpt_path: str | None = None  # resume training from this Lightning checkpoint
    test: bool = True  # evaluate the best checkpoint on the test split at the end
    optimized_metric: str = "val/ppl"  # results.json key main() returns (what sweepers optimize)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: AWDLSTMConfig = field(default_factory=AWDLSTMConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # transfer from a checkpoint trained on another corpus: +transfer.ckpt_path=PATH
    # (src/training/transfer.py); gradual_unfreeze needs optim.groups=lm_split
    transfer: Any = field(default_factory=lambda: {"gradual_unfreeze": False})
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    paths: Any = MISSING


class Split(str, Enum):
    valid = "valid"
    test = "test"


class Engine(str, Enum):
    float = "float"
    int8 = "int8"
    onnxruntime = "onnxruntime"  # an .onnx file of python -m src.export format=onnx (deploy extra)


@dataclass
class EvalConfig:
    task_name: str = "eval"
    ckpt_path: Any = MISSING  # a checkpoint, or a list of classifiers (their ensemble)
    split: Split = Split.test
    batch_size: int | None = None  # default: data.eval_batch_size (valid) or test_batch_size (test)
    engine: Engine = Engine.float
    accelerator: str = "auto"
    out: str | None = None  # JSON file for the metrics (default: next to the checkpoint)
    pointer: PointerOptions = field(default_factory=PointerOptions)  # continuous cache pointer
    dynamic: DynamicOptions = field(default_factory=DynamicOptions)  # dynamic evaluation (SGD)
    paths: Any = MISSING


class Tables(str, Enum):
    interpolated = "interpolated"  # 513-knot int16 tables in the file (TFLite layout), 1 KiB each
    full = "full"  # one int16 entry per input code (128 KiB each), correctly rounded


class ExportFormat(str, Enum):
    int8 = "int8"  # the integer model for src.eval engine=int8 (<checkpoint>.int8.pt)
    c = "c"  # model.bin + the standalone C runtime's sources, in a folder (<checkpoint>.c/)
    onnx = "onnx"  # the float model as an ONNX graph, state in and out (<checkpoint>.onnx)


@dataclass
class ExportConfig:
    task_name: str = "export"
    ckpt_path: str = MISSING  # QAT checkpoint (int8, c; or an .int8.pt for c), float one (onnx)
    format: ExportFormat = ExportFormat.int8
    out: str | None = None  # file (int8, onnx) or folder (c); default: beside the checkpoint
    tables: Tables = Tables.interpolated
    paths: Any = MISSING


def register_configs() -> None:
    """Store the schemas so ``conf/{train,eval,export}.yaml`` can extend them."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="export_schema", node=ExportConfig)
    # conf/data/{csv,wt2_sections}.yaml list it first in their defaults
    cs.store(group="data", name="labelled_schema", node=LabelledDataConfig)


register_configs()
