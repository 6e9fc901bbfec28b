"""Typed, validated configuration of a training run, and the YAML experiment files built from it.

An experiment file has three sections, each a dataclass below (or :class:`~ximgctx.ModelConfig`)::

    # ximgctx train --config configs/my_run.yaml
    model: {tasks: contextbench, encoder: {...}, fusion: {...}, lora: {...}}
    data: {train: train.jsonl, val: val.jsonl}
    train: {output_dir: runs/my_run, epochs: 3, batch_size: 32, optim: {lr: {lora: 1.0e-3}}}

``model.tasks`` is a list of task specs, or ``contextbench`` (ContextBench's tasks), or the path of a
task file with a top-level ``tasks:`` list (``configs/tasks/*.yaml``, resolved against the experiment
file's folder first). Command-line overrides ``key=value`` use dotted paths (``train.max_steps=100``,
``model.encoder.pretrained=/path/w.safetensors``); values are parsed as YAML. Unknown keys are errors
that name their dotted path, as everywhere in ximgctx.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import ximgctx._yaml as _yaml
from ximgctx.config import (
    ConfigError,
    DataConfig,
    EncoderConfig,
    ModelConfig,
    config_from_dict,
    config_to_dict,
    read_yaml,
)

__all__ = [
    "ContrastiveConfig",
    "DataSources",
    "ExperimentConfig",
    "LearningRates",
    "OptimConfig",
    "PretrainExperiment",
    "TrainConfig",
    "apply_overrides",
    "load_experiment",
    "load_pretrain_experiment",
    "read_yaml",
    "resolve_tasks",
]

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class LearningRates:
    """Peak learning rate of each parameter group (``ContextModel.parameter_groups()``)."""

    lora: float = 1e-3  # LoRA adapters inside the encoder
    encoder: float = 1e-5  # encoder weights, when encoder.freeze is false (pretraining trains these)
    fusion: float = 1e-3  # fusion module and the null modality embeddings
    heads: float = 1e-3  # task heads
    # LoRA adapters of the image tower, when they need their own rate (else lora)
    lora_image: float | None = None
    # LoRA adapters of the text tower, when they need their own rate (else lora)
    lora_text: float | None = None

    def rate(self, group: str) -> float:
        """The learning rate of a parameter group (lora_image / lora_text fall back to lora)."""
        value = getattr(self, group)
        return self.lora if value is None else value

    def __post_init__(self) -> None:
        for name in ("lora", "encoder", "fusion", "heads", "lora_image", "lora_text"):
            v = getattr(self, name)
            if v is None and name.startswith("lora_"):
                continue
            _check(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0.0,
                f"train.optim.lr.{name} must be a number >= 0, got {v!r}",
            )
            setattr(self, name, float(v))


@dataclass
class OptimConfig:
    """AdamW with one learning rate per parameter group, linear warmup, then cosine decay."""

    lr: LearningRates = field(default_factory=LearningRates)  # peak learning rate per group
    weight_decay: float = 0.01  # decoupled weight decay, on matrices only (not on biases, norms, embeddings)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW (beta1, beta2)
    eps: float = 1e-8  # AdamW epsilon
    warmup_steps: int = 0  # optimizer steps of linear warmup from 0; overrides warmup_ratio when > 0
    warmup_ratio: float = 0.05  # warmup as a fraction of the run's optimizer steps (when warmup_steps is 0)
    min_lr_ratio: float = 0.0  # the cosine decays each group's LR to this fraction of its peak
    max_grad_norm: float | None = 1.0  # clip the global gradient norm to this; null: no clipping

    def __post_init__(self) -> None:
        _check(self.weight_decay >= 0, f"train.optim.weight_decay must be >= 0, got {self.weight_decay!r}")
        _check(
            isinstance(self.betas, list) and len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"train.optim.betas must be two numbers in [0, 1), got {self.betas!r}",
        )
        self.betas = [float(b) for b in self.betas]
        _check(self.eps > 0, f"train.optim.eps must be positive, got {self.eps!r}")
        _check(
            isinstance(self.warmup_steps, int) and self.warmup_steps >= 0,
            f"train.optim.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}",
        )
        _check(
            0.0 <= self.warmup_ratio < 1.0,
            f"train.optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}",
        )
        _check(
            0.0 <= self.min_lr_ratio <= 1.0,
            f"train.optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}",
        )
        _check(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            f"train.optim.max_grad_norm must be positive or null, got {self.max_grad_norm!r}",
        )


@dataclass
class TrainConfig:
    """The loop: how long, how big, how often to evaluate and save, and what to do when things go wrong."""

    output_dir: str = "runs/train"  # checkpoints/, best/, logs/ and config.yaml go here
    seed: int = 0  # seeds model init, data order (per epoch) and dropout; the same seed gives the same run
    epochs: int = 3  # passes over the training set (ignored when max_steps is set)
    max_steps: int | None = None  # optimizer steps to run; overrides epochs
    # posts per process per micro-batch (global batch = this x processes x grad_accum_steps)
    batch_size: int = 32
    grad_accum_steps: int = 1  # micro-batches accumulated into one optimizer step
    optim: OptimConfig = field(default_factory=OptimConfig)
    mixed_precision: str = "auto"  # auto (bf16 on a CUDA GPU that supports it, else fp32) | no | bf16 | fp16
    num_workers: int = 0  # DataLoader worker processes per training process (decode and tokenize)
    prefetch_factor: int = 2  # batches each DataLoader worker prepares ahead (with num_workers > 0)
    eval_every: int | None = None  # optimizer steps between validations; null: at the end of every epoch
    eval_batch_size: int = 128  # posts per process per validation batch
    save_every: int | None = None  # optimizer steps between checkpoints; null: at the end of every epoch
    keep_last: int = 2  # complete checkpoints kept; older ones are removed after a newer one is complete
    metric_for_best: str = "loss"  # validation metric that picks best/: "loss" or "<task>/<metric>"
    log_every: int = 10  # optimizer steps between logged training losses (TensorBoard and progress bar)
    # abort after this many consecutive steps skipped for a NaN/inf loss or gradient
    max_nonfinite_steps: int = 5
    collective_timeout_s: float = 180.0  # a collective waiting longer than this fails the run (a dead rank)
    find_unused_parameters: bool = True  # DDP: allow batches that leave a tower unused (all images corrupt)
    tensorboard: bool = True  # log through Accelerate's TensorBoard tracker into output_dir/logs
    progress_bar: bool = True  # tqdm on the main process
    # write the post ids of every micro-batch to samples-rank<R>.jsonl (audits, tests)
    log_samples: bool = False
    # a saved model folder (save_pretrained) whose weights start the run: encoder LoRA adapters, fusion and
    # heads (warm start; its architecture must be model's, see ximgctx.training.warm)
    init_from: str | None = None
    # pins init_from: its artifact digest (as ContextModel.from_pretrained(expected_sha256=...))
    init_sha256: str | None = None

    def __post_init__(self) -> None:
        _check(bool(str(self.output_dir).strip()), "train.output_dir must not be empty")
        _check(
            isinstance(self.seed, int) and self.seed >= 0,
            f"train.seed must be an integer >= 0, got {self.seed!r}",
        )
        _check(
            isinstance(self.epochs, int) and self.epochs > 0,
            f"train.epochs must be a positive integer, got {self.epochs!r}",
        )
        _check(
            self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps > 0),
            f"train.max_steps must be a positive integer or null, got {self.max_steps!r}",
        )
        _check(
            isinstance(self.batch_size, int) and self.batch_size > 0,
            f"train.batch_size must be a positive integer, got {self.batch_size!r}",
        )
        _check(
            isinstance(self.grad_accum_steps, int) and self.grad_accum_steps > 0,
            f"train.grad_accum_steps must be a positive integer, got {self.grad_accum_steps!r}",
        )
        _check(
            self.mixed_precision in MIXED_PRECISION,
            f"train.mixed_precision must be one of {list(MIXED_PRECISION)}, got {self.mixed_precision!r}",
        )
        _check(self.num_workers >= 0, f"train.num_workers must be >= 0, got {self.num_workers!r}")
        _check(
            isinstance(self.prefetch_factor, int) and self.prefetch_factor >= 1,
            f"train.prefetch_factor must be an integer >= 1, got {self.prefetch_factor!r}",
        )
        for name in ("eval_every", "save_every"):
            v = getattr(self, name)
            _check(
                v is None or (isinstance(v, int) and v > 0),
                f"train.{name} must be a positive integer or null, got {v!r}",
            )
        _check(
            self.eval_batch_size > 0, f"train.eval_batch_size must be positive, got {self.eval_batch_size!r}"
        )
        _check(
            isinstance(self.keep_last, int) and self.keep_last >= 1,
            f"train.keep_last must be an integer >= 1, got {self.keep_last!r}",
        )
        _check(
            self.metric_for_best == "loss" or self.metric_for_best.count("/") == 1,
            "train.metric_for_best must be 'loss' or '<task>/<metric>' (intent/accuracy), got "
            f"{self.metric_for_best!r}",
        )
        _check(self.log_every > 0, f"train.log_every must be positive, got {self.log_every!r}")
        _check(
            self.max_nonfinite_steps >= 1,
            f"train.max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps!r}",
        )
        _check(
            self.collective_timeout_s > 0,
            f"train.collective_timeout_s must be positive, got {self.collective_timeout_s!r}",
        )
        _check(
            self.init_from is None or (isinstance(self.init_from, str) and bool(self.init_from.strip())),
            f"train.init_from must be a model folder or null, got {self.init_from!r}",
        )
        _check(
            self.init_sha256 is None
            or (
                isinstance(self.init_sha256, str)
                and re.fullmatch(r"[0-9a-f]{64}", self.init_sha256) is not None
            ),
            f"train.init_sha256 must be 64 lowercase hex digits (an artifact digest) or null, got "
            f"{self.init_sha256!r}",
        )
        _check(
            self.init_sha256 is None or self.init_from is not None,
            "train.init_sha256 pins train.init_from, which is not set",
        )


@dataclass
class DataSources:
    """Where the posts come from."""

    # labeled (train) or unlabeled (pretrain) posts: .jsonl, .parquet, a datasets folder, or a shard folder
    # (`ximgctx shard`, img2dataset's output), which `train` streams (ximgctx.data.streaming) instead of
    # reading; or a list of them (a queue export beside the earlier training set), read one after the
    # other, each one's relative image paths resolved against its own folder
    train: str | list[str] | None = None
    # held-out labeled posts: validation, best checkpoint, calibration; null: none (a shard folder is read
    # whole)
    val: str | None = None
    # relative image paths resolve against this (default: each manifest's folder)
    image_root: str | None = None
    on_error: str = "skip"  # malformed records: skip them (counted in the run's data report) or raise
    # a label that does not fit its task (not in its label set...): error (naming post, task and label), or
    # drop it (the task is masked for that post; counted in the run's data report)
    invalid_labels: str = "error"
    # train on posts that did not pass `ximgctx govern` (the model card says so)
    allow_ungoverned: bool = False
    shuffle_buffer: int = 5000  # shard folders: posts held by each DataLoader worker's shuffle buffer

    @property
    def train_sources(self) -> list[str]:
        """``data.train`` as a list (empty when unset)."""
        if self.train is None:
            return []
        return [self.train] if isinstance(self.train, str) else list(self.train)

    @property
    def train_name(self) -> str | None:
        """``data.train`` for messages: the path, or the paths joined with ``+``."""
        return " + ".join(self.train_sources) or None

    def __post_init__(self) -> None:
        if isinstance(self.train, (list, tuple)):
            _check(
                len(self.train) > 0 and all(isinstance(t, str) and t.strip() for t in self.train),
                f"data.train must be a path or a non-empty list of paths, got {self.train!r}",
            )
            self.train = list(self.train) if len(self.train) > 1 else self.train[0]
        _check(
            self.train is None
            or isinstance(self.train, list)
            or (isinstance(self.train, str) and bool(self.train.strip())),
            f"data.train must be a path or a non-empty list of paths, got {self.train!r}",
        )
        _check(
            self.on_error in ("skip", "raise"),
            f"data.on_error must be 'skip' or 'raise', got {self.on_error!r}",
        )
        _check(
            self.invalid_labels in ("error", "drop"),
            f"data.invalid_labels must be 'error' or 'drop', got {self.invalid_labels!r}",
        )
        _check(
            isinstance(self.shuffle_buffer, int)
            and not isinstance(self.shuffle_buffer, bool)
            and self.shuffle_buffer >= 1,
            f"data.shuffle_buffer must be an integer >= 1, got {self.shuffle_buffer!r}",
        )


@dataclass
class ExperimentConfig:
    """A fine-tuning run: the model to build, the data, and the loop."""

    model: ModelConfig  # what to build (tasks, encoder, fusion, LoRA, data caps)
    data: DataSources = field(default_factory=DataSources)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


#: what contrastive pretraining can pair with an image (``ContrastiveConfig.texts``)
CONTRASTIVE_TEXTS = ("text", "text+replies", "alt_text")


@dataclass
class ContrastiveConfig:
    """Contrastive pretraining specifics (open_clip's ``ClipLoss``)."""

    local_loss: bool = False  # each process scores its own posts against all gathered ones (less memory)
    gather_with_grad: bool = True  # gradients flow through the features gathered from other processes
    # what pairs with the image: the post text, "text+replies" (replies joined on), or "alt_text" (the image's
    # description, meta["alt_text"]; posts without one are left out)
    texts: str = "text"

    def __post_init__(self) -> None:
        _check(
            self.texts in CONTRASTIVE_TEXTS,
            f"contrastive.texts must be one of {list(CONTRASTIVE_TEXTS)}, got {self.texts!r}",
        )


@dataclass
class PretrainExperiment:
    """Contrastive domain adaptation of the encoder on unlabeled image+text posts."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # the CLIP to adapt (every weight trains)
    data: DataSources = field(
        default_factory=DataSources
    )  # train: posts with an image and a text; val: optional
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(output_dir="runs/pretrain")
    )  # lr.encoder is used
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    limits: DataConfig = field(default_factory=DataConfig)  # input caps (the fine-tuning model's, by default)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


# ---------------------------------------------------------------------------------------- YAML files


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``data`` with ``key.sub=value`` overrides applied (values parsed as YAML)."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} must look like section.key=value (e.g. train.max_steps=100)"
            )
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = _yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def resolve_tasks(tasks: Any, base: Path | None = None) -> list[dict[str, Any]]:
    """``model.tasks`` as a list of task dicts: given inline, ``contextbench``, or a task YAML file's path."""
    if isinstance(tasks, list):
        return tasks
    if not isinstance(tasks, str):
        raise ConfigError(
            f"model.tasks must be a list of tasks, 'contextbench', or a task file path, got {tasks!r}"
        )
    if tasks == "contextbench":
        from ximgctx.contextbench import TASKS

        return [dict(t) for t in TASKS]
    candidates = (
        [Path(tasks)]
        if Path(tasks).is_absolute()
        else [p for p in ((base / tasks) if base else None, Path(tasks)) if p is not None]
    )
    for p in candidates:
        if p.is_file():
            data = read_yaml(p)
            if not isinstance(data.get("tasks"), list):
                raise ConfigError(f"{p}: a task file needs a top-level 'tasks:' list")
            return data["tasks"]
    raise ConfigError(
        f"model.tasks={tasks!r}: no such task file (looked in {[str(c) for c in candidates]}); "
        f"give a list of tasks, 'contextbench', or a path like configs/tasks/hateful_memes.yaml"
    )


def _with_tasks(data: dict[str, Any], base: Path | None) -> dict[str, Any]:
    model = data.get("model")
    if isinstance(model, dict) and "tasks" in model:
        model = dict(model)
        model["tasks"] = resolve_tasks(model["tasks"], base)
        data = {**data, "model": model}
    return data


def load_experiment(
    source: str | Path | dict[str, Any] | ExperimentConfig, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a YAML file, a dict or an instance, with overrides applied."""
    if isinstance(source, ExperimentConfig):
        if not overrides:
            return source
        source = source.to_dict()
    base = None
    if isinstance(source, (str, Path)):
        base = Path(source).resolve().parent
        where = str(source)
        source = read_yaml(source)
    else:
        where = "experiment"
    data = _with_tasks(apply_overrides(source, list(overrides)), base)
    if "model" not in data:
        raise ConfigError(f"{where}: an experiment needs a 'model' section (with at least 'tasks')")
    try:
        return config_from_dict(ExperimentConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e


def load_pretrain_experiment(
    source: str | Path | dict[str, Any] | PretrainExperiment, overrides: list[str] | tuple[str, ...] = ()
) -> PretrainExperiment:
    """A :class:`PretrainExperiment` from a YAML file, a dict or an instance, with overrides applied."""
    if isinstance(source, PretrainExperiment):
        if not overrides:
            return source
        source = source.to_dict()
    where = "pretrain experiment"
    if isinstance(source, (str, Path)):
        where = str(source)
        source = read_yaml(source)
    data = apply_overrides(source, list(overrides))
    try:
        return config_from_dict(PretrainExperiment, data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
