"""``train``: fine-tune a context model (LoRA on the encoder, fusion and heads) with Accelerate.

Runs unchanged as one CPU process, under ``torchrun --nproc_per_node N`` (gloo on CPU, NCCL on GPUs) and
under ``accelerate launch``. The loop itself is :func:`ximgctx.training.loop.fit`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ximgctx.data.dataset import PostDataset
from ximgctx.data.post import Post
from ximgctx.evaluation.metrics import task_loss, task_metrics
from ximgctx.evaluation.predict import FULL, predict
from ximgctx.governance import check_governed
from ximgctx.models.context_model import ContextModel
from ximgctx.training._runtime import DataReport, load_splits, start_run
from ximgctx.training.config import ExperimentConfig, load_experiment
from ximgctx.training.loop import FitResult, fit
from ximgctx.training.optim import build_optimizer, split_lora_by_tower

logger = logging.getLogger(__name__)

__all__ = ["train", "validation_metrics"]

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


def _export(
    model: ContextModel, state: dict[str, torch.Tensor] | None, path: Path, card: dict[str, Any]
) -> None:
    if state is not None:  # sharded live model (FSDP): save a full copy rebuilt from the gathered state
        model = ContextModel._skeleton(model.config)
        model.load_state_dict(state)
    model.save_pretrained(path, card=card)


def train(
    config: ExperimentConfig | dict[str, Any] | str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
    train_posts: Sequence[Post] | None = None,
    val_posts: Sequence[Post] | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Fine-tune a context model.

    Args:
        config: an experiment YAML path, a dict or an :class:`ExperimentConfig`.
        overrides: ``section.key=value`` strings applied on top of ``config``.
        resume: ``"latest"`` or a checkpoint folder; the run continues exactly where it stopped.
        train_posts / val_posts: posts already in memory, instead of ``data.train`` / ``data.val``.
        stop_after: stop after this optimizer step with a checkpoint, as a preempted job would.

    Returns:
        A :class:`FitResult`: output folder, the exported model folder (``best/`` or ``final/``), steps,
        the best validation metric, the validation history and the data report (what was skipped).

    Raises:
        UngovernedDataError: the posts did not pass ``govern`` and ``data.allow_ungoverned`` is false.
        NonFiniteLossError: ``train.max_nonfinite_steps`` steps in a row had a NaN/inf loss.
    """
    cfg = load_experiment(config, list(overrides))
    tc = cfg.train
    resolved = cfg.to_dict()
    accelerator, out = start_run(tc, resolved)

    # ---- data: read, check governance, count what is unlabeled -------------------------------------
    report = DataReport()
    train_posts, val_posts = load_splits(
        cfg.data, train_posts, val_posts, report, "the manifest of labeled training posts"
    )
    governance = check_governed(
        train_posts, allow_ungoverned=cfg.data.allow_ungoverned, source=cfg.data.train
    ).to_dict()
    if val_posts is not None:
        governance["validation"] = check_governed(
            val_posts, allow_ungoverned=cfg.data.allow_ungoverned, source=cfg.data.val
        ).to_dict()
    report.train_posts, report.val_posts = len(train_posts), len(val_posts or [])
    report.count_unlabeled(train_posts, cfg.model.tasks)

    # ---- model, optimizer, loaders ----------------------------------------------------------------------
    model = ContextModel(cfg.model)
    groups = model.parameter_groups()
    if tc.optim.lr.lora_image is not None or tc.optim.lr.lora_text is not None:
        groups = split_lora_by_tower(groups, model.encoder.clip.visual)
    optimizer = build_optimizer(groups, tc.optim)
    processor = model.processor
    train_loader = DataLoader(
        PostDataset(train_posts),
        batch_size=tc.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=processor,
        num_workers=tc.num_workers,
        generator=torch.Generator().manual_seed(tc.seed),
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    val_loader = None
    if val_posts:
        val_loader = accelerator.prepare_data_loader(
            DataLoader(
                PostDataset(val_posts),
                batch_size=tc.eval_batch_size,
                shuffle=False,
                collate_fn=processor,
                num_workers=tc.num_workers,
                generator=torch.Generator().manual_seed(tc.seed),
            )
        )
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

    task_names = [spec.name for spec in core.config.tasks]

    def loss_fn(m: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        output = m(batch)
        per_process = None
        if accelerator.num_processes > 1:
            # labels fall unevenly on the processes: average over the global batch's labeled posts, not per rank
            counts = torch.tensor(
                [float(batch.label_mask[t].sum()) for t in task_names], device=accelerator.device
            )
            counts = accelerator.reduce(counts, reduction="sum") / accelerator.num_processes
            per_process = dict(zip(task_names, counts.tolist(), strict=True))
        losses = core.loss(output, batch, labeled_per_process=per_process)
        return losses.total, {f"loss/{k}": v.detach() for k, v in losses.per_task.items()}

    card = {
        "Data governance": governance,
        "Training": {"config": resolved, "processes": accelerator.num_processes},
    }
    result = fit(
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        train_loader=train_loader,
        val_loader=val_loader,
        config=tc,
        loss_fn=loss_fn,
        validate_fn=lambda m, loader: validation_metrics(m, loader, accelerator),
        export_fn=_export,
        resolved=resolved,
        card=card,
        data_report=report,
        resume=resume,
        stop_after=stop_after,
        run_name="train",
    )
    logger.info(
        "training done: %d steps, best %s=%s at step %s; data: %s",
        result.steps,
        tc.metric_for_best,
        result.best_metric,
        result.best_step,
        report.summary(),
    )
    return result
