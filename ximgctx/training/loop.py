"""The training loop, readable top to bottom, shared by ``train`` (fine-tuning) and ``pretrain`` (contrastive).

The recipes differ only in how a batch becomes a loss, how validation scores the model, and what is exported;
everything else (accumulation, clipping, non-finite steps, logging, evaluation cadence, best model,
checkpoints, exact resume) happens here once. Resume is exact: the checkpoint holds weights, optimizer,
scheduler and every process's RNG states (``accelerator.save_state``), plus the position in the data as a
number of samples into the epoch. The data order is a function of (seed, epoch) only (Accelerate's seedable
sampler), so skipping that many samples continues the same sequence, even with a different process count
at the same global batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ximgctx.data.processor import PostBatch
from ximgctx.training._runtime import DataReport, flat_config
from ximgctx.training.checkpoint import CheckpointManager, read_trainer_state
from ximgctx.training.config import TrainConfig
from ximgctx.training.optim import build_scheduler

logger = logging.getLogger(__name__)

__all__ = ["FitResult", "NonFiniteLossError", "fit"]

#: a batch -> (loss to backpropagate, {name: float} parts to log)
LossFn = Callable[[torch.nn.Module, PostBatch], tuple[torch.Tensor, dict[str, torch.Tensor]]]
#: (model, validation loader) -> {metric name: value}; "loss" and "<task>/<metric>" keys
ValidateFn = Callable[[torch.nn.Module, DataLoader], dict[str, float]]
#: (unwrapped model, full state dict or None, folder, card sections) -> None; writes a usable model. Called on
#: the main process only; the state dict is given when the live model is sharded (FSDP) and must be loaded
#: into a fresh copy first.
ExportFn = Callable[[torch.nn.Module, dict[str, torch.Tensor] | None, Path, dict[str, Any]], None]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive optimizer steps had a NaN/inf loss or gradient."""


@dataclass
class FitResult:
    """What a run produced."""

    output_dir: Path
    model_dir: Path | None  # best/ when there was validation, else final/
    steps: int  # optimizer steps completed
    best_metric: float | None
    best_step: int | None
    metrics: dict[str, float]  # the last validation
    history: list[dict[str, float]] = field(default_factory=list)  # every validation, with its step
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient
    data: dict[str, Any] = field(default_factory=dict)  # the data report
    stopped_early: bool = False  # stop_after was reached before the end of the schedule
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "steps": self.steps,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "metrics": self.metrics,
            "history": self.history,
            "skipped_steps": self.skipped_steps,
            "data": self.data,
            "stopped_early": self.stopped_early,
            "wall_s": self.wall_s,
        }


def _better(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric == "loss" or metric.endswith("/loss") else value > best


def _full_state(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full state dict when parameters are sharded (FSDP; a collective), else None (use the live model)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return accelerator.get_state_dict(model)
    return None


def _finish_trackers(accelerator: Accelerator) -> None:
    """Close the TensorBoard writers. Not ``end_training``: it also destroys the process group, which would
    break a second run (pretrain, then train) in the same processes."""
    for tracker in accelerator.trackers:
        tracker.finish()


def _any_nonfinite(accelerator: Accelerator, loss: torch.Tensor) -> bool:
    """True on every process when the loss is NaN/inf on any of them (so all skip the same step)."""
    flag = torch.tensor(
        [0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0], device=accelerator.device
    )
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def fit(
    *,
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    config: TrainConfig,
    loss_fn: LossFn,
    validate_fn: ValidateFn | None,
    export_fn: ExportFn,
    resolved: dict[str, Any],
    card: dict[str, Any],
    data_report: DataReport,
    resume: str | Path | None = None,
    stop_after: int | None = None,
    run_name: str = "train",
) -> FitResult:
    """Run the optimisation. ``model``, ``optimizer`` and both loaders must come from ``accelerator.prepare``.

    Args:
        resolved: the run's resolved config, written beside each checkpoint and logged as hparams.
        card: model-card sections added to every exported model (governance, data...).
        resume: ``"latest"`` or a checkpoint folder to continue from exactly.
        stop_after: stop after this optimizer step, once its checkpoint is written, as a preempted job
            would (the schedule still spans the whole run, so a resume continues it unchanged).
    """
    t_start = time.time()
    out = Path(config.output_dir)
    ckpt = CheckpointManager(out / "checkpoints", config.keep_last)
    world = accelerator.num_processes
    global_batch = config.batch_size * world * config.grad_accum_steps
    batches_per_epoch = len(train_loader)  # micro-batches per process
    if batches_per_epoch == 0:
        raise ValueError(
            f"the training set has {data_report.train_posts} posts, fewer than one batch of "
            f"{config.batch_size * world} (train.batch_size x processes); lower train.batch_size"
        )
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum_steps)
    max_steps = config.max_steps or config.epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    raw_optimizer = getattr(optimizer, "optimizer", optimizer)
    scheduler = build_scheduler(raw_optimizer, config.optim, max_steps)
    accelerator.register_for_checkpointing(scheduler)
    trainable = [p for group in raw_optimizer.param_groups for p in group["params"]]
    core = accelerator.unwrap_model(model)

    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "samples_in_epoch": 0,
        "global_batch": global_batch,
        "max_steps": max_steps,
        "best_metric": None,
        "best_step": None,
        "nonfinite_run": 0,
        "skipped_steps": 0,
        "history": [],
        "problems_first_epoch": {},
    }
    if accelerator.is_main_process:
        for leftover in ckpt.clean_partial():  # half-written checkpoints of a killed run: never resumable
            logger.warning("removed an incomplete checkpoint left by an interrupted run: %s", leftover)
    accelerator.wait_for_everyone()
    # Trackers start before the RNG states are restored, so nothing they do can shift the random stream.
    if config.tensorboard:
        accelerator.init_trackers(run_name, config=flat_config(resolved))
    if resume is not None:
        path = ckpt.resolve(resume)
        accelerator.load_state(str(path))  # weights, optimizer, scheduler, every process's RNG states
        saved = read_trainer_state(path)
        if saved["samples_in_epoch"] % (config.batch_size * world):
            raise ValueError(
                f"cannot resume {path}: it stopped {saved['samples_in_epoch']} samples into an epoch, "
                f"which is not a whole number of batches of {config.batch_size * world} "
                f"(batch_size x processes); resume with the global batch it was written with "
                f"({saved['global_batch']})"
            )
        state.update(saved)
        state["max_steps"] = max_steps
        logger.info(
            "resumed from %s at step %d (epoch %d, %d samples in)",
            path,
            state["step"],
            state["epoch"],
            state["samples_in_epoch"],
        )
    problem_base = dict(state["problems_first_epoch"])  # counted before this process started
    problems_local: dict[str, int] = {}

    progress = tqdm(
        total=max_steps,
        initial=state["step"],
        desc=run_name,
        dynamic_ncols=True,
        disable=not (config.progress_bar and accelerator.is_local_main_process),
    )
    samples_path = out / f"samples-rank{accelerator.process_index}.jsonl"

    def gathered_problems() -> dict[str, int]:  # collective: every process calls it
        total = dict(problem_base)
        for d in gather_object([problems_local]):
            for k, v in d.items():
                total[k] = total.get(k, 0) + v
        return total

    def trainer_state() -> dict[str, Any]:
        return {**state, "world_size": world, "problems_first_epoch": gathered_problems()}

    def save_checkpoint() -> None:
        ckpt.save(accelerator, state["step"], trainer_state=trainer_state(), config=resolved)

    def run_validation() -> None:
        metrics = validate_fn(model, val_loader)  # type: ignore[misc]
        state["history"].append({"step": state["step"], **metrics})
        accelerator.log({f"val/{k}": v for k, v in metrics.items() if v is not None}, step=state["step"])
        value = metrics.get(config.metric_for_best)
        if value is None:
            raise KeyError(
                f"train.metric_for_best={config.metric_for_best!r} is not a validation metric; "
                f"available: {sorted(metrics)}"
            )
        if _better(value, state["best_metric"], config.metric_for_best):
            state["best_metric"], state["best_step"] = float(value), state["step"]
            data_report.problems = gathered_problems()
            full = _full_state(accelerator, model)
            if accelerator.is_main_process:
                export_fn(
                    core,
                    full,
                    out / "best",
                    {
                        **card,
                        "Training data": data_report.to_dict(),
                        "Metrics": {"validation": metrics, "step": state["step"]},
                    },
                )
        accelerator.wait_for_everyone()
        shown = {k: round(v, 4) for k, v in metrics.items() if k == config.metric_for_best or k == "loss"}
        if accelerator.is_local_main_process:
            (progress.write if not progress.disable else logger.info)(
                f"step {state['step']}: validation {shown}"
            )

    running: dict[str, float] = {}
    window_bad = False
    last_log = time.time()
    stopped = False
    model.train()
    for epoch in range(state["epoch"], num_epochs):
        if state["step"] >= max_steps or stopped:
            break
        train_loader.set_epoch(epoch)
        skip = state["samples_in_epoch"] // (config.batch_size * world) if epoch == state["epoch"] else 0
        batches = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        if skip:
            batches.set_epoch(epoch)
        for batch in batches:
            with accelerator.accumulate(model):
                loss, parts = loss_fn(model, batch)
                nonfinite = _any_nonfinite(accelerator, loss)
                window_bad = window_bad or nonfinite
                # Backward runs even for a bad loss (its gradients are thrown away below), so every process
                # takes part in the same gradient all-reduce and DDP's bookkeeping stays consistent.
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(trainable, config.optim.max_grad_norm or float("inf"))
                    grad_bad = (
                        not math.isfinite(float(norm)) and accelerator.scaler is None
                    )  # fp16: the scaler skips
                    step_skipped = window_bad or grad_bad
                    if not step_skipped:
                        optimizer.step()
                        scheduler.step()
                    else:  # the schedule moves on; torch warns that the optimizer did not step, which we know
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", UserWarning)
                            scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            state["samples_in_epoch"] += config.batch_size * world
            if config.log_samples:
                with open(samples_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"epoch": epoch, "step": state["step"], "ids": batch.ids}) + "\n")
            if epoch == 0:
                for plist in batch.problems:
                    for kind in {p.key for p in plist}:
                        problems_local[kind] = problems_local.get(kind, 0) + 1
            if not nonfinite:
                for k, v in {"loss": loss.detach(), **parts}.items():
                    running[k] = running.get(k, 0.0) + float(v)
                running["_n"] = running.get("_n", 0.0) + 1
            if not accelerator.sync_gradients:
                continue

            # ---- one optimizer step is complete ------------------------------------------------------
            state["step"] += 1
            if step_skipped:
                state["skipped_steps"] += 1
                state["nonfinite_run"] += 1
                logger.warning(
                    "step %d skipped: non-finite %s (%d in a row)",
                    state["step"],
                    "loss" if window_bad else "gradient norm",
                    state["nonfinite_run"],
                )
                if state["nonfinite_run"] >= config.max_nonfinite_steps:
                    progress.close()
                    _finish_trackers(accelerator)
                    raise NonFiniteLossError(
                        f"{state['nonfinite_run']} consecutive optimizer steps had a NaN/inf loss or gradient "
                        f"(last at step {state['step']}); stopping. Lower the learning rates, check the data, or "
                        f"raise train.max_nonfinite_steps (now {config.max_nonfinite_steps})."
                    )
            else:
                state["nonfinite_run"] = 0
            window_bad = False
            progress.update(1)
            if running and (state["step"] % config.log_every == 0 or state["step"] == max_steps):
                sums = torch.tensor([running.get(k, 0.0) for k in sorted(running)], device=accelerator.device)
                sums = accelerator.reduce(sums, reduction="sum")  # collective: same keys everywhere
                totals = dict(zip(sorted(running), sums.tolist(), strict=True))
                n = max(totals.pop("_n", 0.0), 1.0)
                logs = {f"train/{k}": v / n for k, v in totals.items()}
                logs.update(
                    {
                        f"lr/{g['name']}": g["lr"]
                        for g in raw_optimizer.param_groups
                        if not g["name"].endswith("/no_decay")
                    }
                )
                logs["train/grad_norm"] = float(norm)
                logs["train/samples_per_s"] = (
                    config.log_every * global_batch / max(time.time() - last_log, 1e-9)
                )
                logs["train/skipped_steps"] = state["skipped_steps"]
                accelerator.log(logs, step=state["step"])
                progress.set_postfix(loss=f"{logs.get('train/loss', float('nan')):.4f}")
                running, last_log = {}, time.time()

            end_of_epoch = state["samples_in_epoch"] >= batches_per_epoch * config.batch_size * world
            at_end = state["step"] >= max_steps
            stopped = stop_after is not None and state["step"] >= stop_after and not at_end
            if (
                val_loader is not None
                and validate_fn is not None
                and (
                    at_end
                    or (config.eval_every and state["step"] % config.eval_every == 0)
                    or (config.eval_every is None and end_of_epoch)
                )
            ):
                run_validation()
            if end_of_epoch:
                state["epoch"], state["samples_in_epoch"] = epoch + 1, 0
            if (
                at_end
                or stopped
                or (config.save_every and state["step"] % config.save_every == 0)
                or (config.save_every is None and end_of_epoch)
            ):
                save_checkpoint()
            if at_end or stopped:
                getattr(
                    batches, "end", lambda: None
                )()  # leaving mid-epoch: unregister the loader from Accelerate
                break
        else:
            state["epoch"], state["samples_in_epoch"] = epoch + 1, 0

    progress.close()
    data_report.problems = gathered_problems()
    model_dir = out / "best" if state["best_step"] is not None else None
    if not stopped:
        card_final = {
            **card,
            "Training data": data_report.to_dict(),
            "Metrics": {
                "validation": state["history"][-1] if state["history"] else None,
                "step": state["step"],
            },
        }
        full = _full_state(accelerator, model)
        if accelerator.is_main_process:
            export_fn(core, full, out / "final", card_final)
        model_dir = model_dir or out / "final"
    accelerator.wait_for_everyone()
    _finish_trackers(accelerator)
    logger.info("data: %s", data_report.summary())
    result = FitResult(
        output_dir=out,
        model_dir=model_dir,
        steps=state["step"],
        best_metric=state["best_metric"],
        best_step=state["best_step"],
        metrics=state["history"][-1] if state["history"] else {},
        history=state["history"],
        skipped_steps=state["skipped_steps"],
        data=data_report.to_dict(),
        stopped_early=stopped,
        wall_s=time.time() - t_start,
    )
    if accelerator.is_main_process:
        (out / f"{run_name}_result.json").write_text(
            json.dumps(result.to_dict(), indent=2, default=str) + "\n"
        )
    return result
