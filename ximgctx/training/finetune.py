"""``train``: fine-tune a context model (LoRA on the encoder, fusion and heads) with Accelerate.

Runs unchanged as one CPU process, under ``torchrun --nproc_per_node N`` (gloo on CPU, NCCL on GPUs) and
under ``accelerate launch``. The loop itself is :func:`ximgctx.training.loop.fit`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader

from ximgctx.data.dataset import PostDataset
from ximgctx.data.processor import PostBatch
from ximgctx.data.record import Post
from ximgctx.evaluation.metrics import task_loss, task_metrics
from ximgctx.evaluation.predict import FULL, predict
from ximgctx.governance import check_governed
from ximgctx.models.context_model import ContextModel, ContextOutput, LossOutput
from ximgctx.training._runtime import (
    DataReport,
    StreamSplit,
    load_splits,
    start_run,
    stream_loader,
    training_authors,
)
from ximgctx.training.config import ExperimentConfig, load_experiment
from ximgctx.training.loop import FitResult, Run, fit
from ximgctx.training.optim import build_optimizer, split_lora_by_tower
from ximgctx.training.warm import WARM_START_SECTION, load_warm_start, portable_init, warm_start_card

logger = logging.getLogger(__name__)

__all__ = ["FinetuneRecipe", "supervised_loss", "train", "validation_metrics"]

#: metrics copied from the evaluation into the validation log, when a task has them
_LOGGED = ("accuracy", "macro_f1", "micro_f1", "map")


def validation_metrics(model: torch.nn.Module, loader: DataLoader, accelerator: Any) -> dict[str, float]:
    """Loss (weighted like training) and per-task metrics on the validation posts, every post once."""
    core = accelerator.unwrap_model(model)
    preds = predict(model, loader, keys=(FULL,), accelerator=accelerator)[FULL]
    out: dict[str, float] = {}
    total = 0.0
    for spec in core.config.tasks:
        z, t, m = preds.logits[spec.name], preds.targets[spec.name], preds.label_mask[spec.name]
        loss = task_loss(spec, z, t, m) if bool(m.any()) else 0.0
        total += spec.weight * loss
        out[f"{spec.name}/loss"] = loss
        head = core.heads[spec.name]
        metrics = task_metrics(
            spec,
            z,
            t,
            m,
            temperature=float(head.temperature),
            thresholds=head.thresholds.cpu().numpy() if spec.kind == "multilabel" else None,
        )
        out.update({f"{spec.name}/{k}": float(metrics[k]) for k in _LOGGED if metrics.get(k) is not None})
    out["loss"] = total
    return out


class LabeledBatch(Protocol):
    """What the supervised loss reads of a batch: a :class:`PostBatch`, or cached rows (``hitl.simulate``)."""

    targets: dict[str, torch.Tensor]  # task -> (B, C)
    label_mask: dict[str, torch.Tensor]  # task -> (B,) True where labeled


def supervised_loss(
    core: ContextModel, output: ContextOutput, batch: LabeledBatch, accelerator: Any = None
) -> LossOutput:
    """The fine-tuning loss: each task's masked loss times its ``TaskSpec.weight``, summed
    (``ContextModel.loss``).

    With several processes, labels fall unevenly on them: each task's loss is then the mean over the global
    batch's labeled posts, not each process's own (one all-reduce of the labeled counts).
    """
    per_process = None
    if accelerator is not None and accelerator.num_processes > 1:
        names = [spec.name for spec in core.config.tasks]
        counts = torch.tensor([float(batch.label_mask[t].sum()) for t in names], device=accelerator.device)
        counts = accelerator.reduce(counts, reduction="sum") / accelerator.num_processes
        per_process = dict(zip(names, counts.tolist(), strict=True))
    return core.loss(output, batch, labeled_per_process=per_process)  # type: ignore[arg-type]


class FinetuneRecipe:
    """Fine-tuning: the supervised loss, validation metrics per task, a ``save_pretrained`` model folder."""

    name = "train"

    def __init__(self, accelerator: Any, core: ContextModel) -> None:
        self.accelerator, self.core = accelerator, core

    def loss(self, model: torch.nn.Module, batch: PostBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = supervised_loss(self.core, model(batch), batch, self.accelerator)
        return losses.total, {f"loss/{k}": v.detach() for k, v in losses.per_task.items()}

    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        return validation_metrics(model, loader, self.accelerator)

    def export(
        self,
        model: torch.nn.Module,
        full: dict[str, torch.Tensor] | None,
        path: Path,
        card: dict[str, Any],
        *,
        authors: bytes | None = None,
    ) -> None:
        if full is not None:  # sharded live model (FSDP): save a full copy rebuilt from the gathered state
            model = ContextModel._skeleton(model.config)  # type: ignore[arg-type]
            model.load_state_dict(full)
        model.save_pretrained(path, card=card, authors=authors)  # type: ignore[operator]


def train(
    config: ExperimentConfig | dict[str, Any] | str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
    train_posts: Sequence[Post] | None = None,
    val_posts: Sequence[Post] | None = None,
    stop_after: int | None = None,
    overwrite: bool = False,
) -> FitResult:
    """Fine-tune a context model.

    Args:
        config: an experiment YAML path, a dict or an :class:`ExperimentConfig`.
        overrides: ``section.key=value`` strings applied on top of ``config``.
        resume: ``"latest"`` or a checkpoint folder; the run continues exactly where it stopped. Its config
            must match the checkpoint's (see ``checkpoint.RESUMABLE_KEYS`` for what may differ).
        train_posts / val_posts: posts already in memory, instead of ``data.train`` / ``data.val``.
        stop_after: stop after this optimizer step with a checkpoint, as a preempted job would.
        overwrite: empty a ``train.output_dir`` that holds another run's files first (else refused).

    Returns:
        A :class:`FitResult`: output folder, the exported model folder (``best/`` or ``final/``), steps,
        the best validation metric, the validation history and the data report (what was skipped).

    Raises:
        UngovernedDataError: the posts did not pass ``govern`` and ``data.allow_ungoverned`` is false.
        NonFiniteLossError: ``train.max_nonfinite_steps`` steps in a row had a NaN/inf loss.
        OutputError: ``train.output_dir`` is used by another run (files or a live lock), or cannot be written.
        CheckpointError: the checkpoint to resume is missing, altered, unsafe, or from another config.
        ModelFolderError / ConfigError: ``train.init_from`` (a warm start, :mod:`ximgctx.training.warm`) is
            missing, altered, not the pinned ``train.init_sha256``, or of another architecture (each
            difference named).
    """
    cfg = load_experiment(config, list(overrides))
    # --overwrite never empties a folder holding what the run reads (the warm start's model included)
    inputs = (*cfg.data.train_sources, cfg.data.val, cfg.data.image_root, cfg.train.init_from)
    with start_run(cfg.train, resume=resume, overwrite=overwrite, inputs=inputs) as (
        accelerator,
        _,
    ):
        run = _prepare(cfg, accelerator, train_posts, val_posts)
        core = accelerator.unwrap_model(run.model)
        result = fit(FinetuneRecipe(accelerator, core), run, resume=resume, stop_after=stop_after)
    logger.info(
        "training done: %d steps, best %s=%s at step %s; data: %s",
        result.steps,
        cfg.train.metric_for_best,
        result.best_metric,
        result.best_step,
        run.report.summary(),
    )
    return result


def _prepare(
    cfg: ExperimentConfig,
    accelerator: Any,
    train_posts: Sequence[Post] | None,
    val_posts: Sequence[Post] | None,
) -> Run:
    """Data (read, governance checked, unlabeled counted), model, optimizer and loaders of a fine-tuning
    run."""
    tc = cfg.train
    report = DataReport()
    train_data, val_posts = load_splits(
        cfg.data, train_posts, val_posts, report, "the manifest of labeled training posts", stream=True
    )
    streamed = isinstance(train_data, StreamSplit)
    # a streamed split is checked on a sample up front; every streamed post is checked again as it comes
    checked = train_data.sample if isinstance(train_data, StreamSplit) else train_data
    governance = check_governed(
        checked, allow_ungoverned=cfg.data.allow_ungoverned, source=cfg.data.train_name
    ).to_dict()
    if isinstance(train_data, StreamSplit):
        governance.update(sampled=True, posts=train_data.count)
    if val_posts is not None:
        governance["validation"] = check_governed(
            val_posts, allow_ungoverned=cfg.data.allow_ungoverned, source=cfg.data.val
        ).to_dict()
    if isinstance(train_data, StreamSplit):
        report.train_posts, report.val_posts = train_data.count, len(val_posts or [])
    else:
        report.train_posts, report.val_posts = len(train_data), len(val_posts or [])
        report.count_unlabeled(train_data, cfg.model.tasks)
        report.check_labels("train", train_data, cfg.model.tasks, cfg.data)
    if val_posts is not None:
        report.check_labels("val", val_posts, cfg.model.tasks, cfg.data)

    model, card = _model(cfg, governance, accelerator.num_processes, streamed)
    groups = model.parameter_groups()
    if tc.optim.lr.lora_image is not None or tc.optim.lr.lora_text is not None:
        groups = split_lora_by_tower(groups, model.encoder.image_tower)
    optimizer = build_optimizer(groups, tc.optim)
    processor = model.processor
    processor.invalid_labels = cfg.data.invalid_labels  # streamed posts: checked as they come
    if isinstance(train_data, StreamSplit):  # split by (rank, worker) itself: not Accelerate's to shard
        model, optimizer = accelerator.prepare(model, optimizer)
        train_loader = stream_loader(train_data, processor, tc, cfg.data, accelerator)
    else:
        train_loader = _loader(train_data, processor, tc.batch_size, tc, train=True)
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    val_loader = None
    if val_posts:
        val_loader = accelerator.prepare_data_loader(_loader(val_posts, processor, tc.eval_batch_size, tc))
    core = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        counts = core.trainable_parameters()
        logger.info(
            "model: %s trainable of %s parameters (LoRA %s); %d process(es), global batch %d",
            f"{counts['trainable']:,}",
            f"{counts['total']:,}",
            f"{counts['lora']:,}",
            accelerator.num_processes,
            tc.batch_size * accelerator.num_processes * tc.grad_accum_steps,
        )
    authors = training_authors(train_data) if accelerator.is_main_process else None
    return Run(
        accelerator, model, optimizer, train_loader, val_loader, tc, cfg.to_dict(), card, report, authors
    )


def _model(
    cfg: ExperimentConfig, governance: dict[str, Any], processes: int, streamed: bool
) -> tuple[ContextModel, dict[str, Any]]:
    """The model a run starts from (a fresh one, or the ``train.init_from`` folder's weights) and the model
    card sections every export of the run carries."""
    init_from, resolved = cfg.train.init_from, cfg.to_dict()
    if init_from is None:
        model, card = ContextModel(cfg.model), {}
    else:
        model, digest = load_warm_start(init_from, cfg.train.init_sha256, cfg.model)
        card = {WARM_START_SECTION: warm_start_card(init_from, digest)}
        resolved = portable_init(resolved, init_from, digest)
        logger.info("warm start from %s (SHA-256 %s)", init_from, digest)
    training = {"config": resolved, "processes": processes, "streamed": streamed}
    return model, {"Data governance": governance, "Training": training, **card}


def _loader(
    posts: Sequence[Post], processor: Any, batch_size: int, tc: Any, *, train: bool = False
) -> DataLoader:
    """A DataLoader over posts collated by the model's processor (shuffled, whole batches when training)."""
    return DataLoader(
        PostDataset(posts),
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        collate_fn=processor,
        num_workers=tc.num_workers,
        generator=torch.Generator().manual_seed(tc.seed),
    )
