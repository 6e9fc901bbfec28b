"""The training loop, readable top to bottom, shared by ``train`` (fine-tuning) and ``pretrain``
(contrastive).

A recipe (:class:`Recipe`) says how a batch becomes a loss, how validation scores the model and what is
exported; everything else (accumulation, clipping, non-finite steps, logging, evaluation cadence, best model,
checkpoints, exact resume) happens here once, in :meth:`_Loop.train` and the four steps it calls (``_step``,
``_log``, ``_maybe_validate``, ``_maybe_save``), as in torchtune's recipes.

Resume is exact: the checkpoint holds weights, optimizer, scheduler and every process's RNG states, plus the
position in the data as a number of samples into the epoch (:class:`~ximgctx.training.state.TrainState`). The
data order is a function of (seed, epoch) only (Accelerate's seedable sampler), so skipping that many samples
continues the same sequence, even with a different process count at the same global batch. Streamed data (a
shard folder, :mod:`ximgctx.data.streaming`) also records each (rank, worker)'s position in the epoch, and
continues from it with the same processes and workers.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ximgctx._artifacts import atomic_output, output_errors
from ximgctx._distributed import any_process
from ximgctx.config import ConfigError
from ximgctx.data.processor import PostBatch
from ximgctx.data.streaming import StreamLoader, StreamPosition
from ximgctx.errors import XimgctxError
from ximgctx.training._runtime import DataReport, count_problems, hparams, note_problems, write_run_config
from ximgctx.training.checkpoint import CheckpointError, CheckpointManager, config_differences
from ximgctx.training.config import TrainConfig
from ximgctx.training.optim import build_scheduler
from ximgctx.training.state import TrainState

logger = logging.getLogger(__name__)

__all__ = ["FitResult", "NonFiniteLossError", "Recipe", "Run", "fit"]


class NonFiniteLossError(XimgctxError, RuntimeError):
    """Too many consecutive optimizer steps had a NaN/inf loss or gradient (lower the learning rates, check
    the data, or raise ``train.max_nonfinite_steps``)."""


class Recipe(Protocol):
    """What differs between fine-tuning and pretraining; the loop does the rest."""

    name: str  # "train" | "pretrain": names the progress bar, the tracker run and <name>_result.json

    def loss(self, model: torch.nn.Module, batch: PostBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to backpropagate, and {name: scalar} parts to log."""
        ...

    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        """{metric: value} on the validation loader ("loss" and "<task>/<metric>" keys); every process."""
        ...

    def export(
        self,
        model: torch.nn.Module,
        full: dict[str, torch.Tensor] | None,
        path: Path,
        card: dict[str, Any],
        *,
        authors: bytes | None = None,
    ) -> None:
        """Write a usable model to ``path`` (main process only). ``full`` is the gathered state dict when the
        live model is sharded (FSDP) and must be loaded into a fresh copy first; else None. ``authors`` is
        the keyed author set of the training posts, written into the folder
        (:data:`ximgctx.governance.authors.MODEL_AUTHORS_FILE`)."""
        ...


@dataclass
class Run:
    """Everything a run trains with; model, optimizer and loaders come from ``accelerator.prepare``."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: Any  # Accelerate's wrapped AdamW
    train_loader: DataLoader
    val_loader: DataLoader | None  # None: no validation (final/ is the model)
    config: TrainConfig  # the train section
    resolved: dict[str, Any]  # the whole resolved config: beside each checkpoint, logged as hparams
    card: dict[str, Any]  # model-card sections added to every exported model (governance, data...)
    report: DataReport  # what the run read and skipped; problems are added by the loop
    authors: bytes | None = None  # governance.authors.MODEL_AUTHORS_FILE: who trained it (keyed digests)


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


def fit(
    recipe: Recipe, run: Run, *, resume: str | Path | None = None, stop_after: int | None = None
) -> FitResult:
    """Run the optimisation of ``run`` with ``recipe``.

    Args:
        resume: ``"latest"`` or a checkpoint folder to continue from exactly.
        stop_after: stop after this optimizer step, once its checkpoint is written, as a preempted job
            would (the schedule still spans the whole run, so a resume continues it unchanged).
    """
    return _Loop(recipe, run, stop_after).train(resume)


def _better(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric == "loss" or metric.endswith("/loss") else value > best


class _Loop:
    """One run's loop state; :meth:`train` is the loop."""

    def __init__(self, recipe: Recipe, run: Run, stop_after: int | None) -> None:
        self.recipe, self.run, self.stop_after = recipe, run, stop_after
        self.acc, self.cfg = run.accelerator, run.config
        self.out = Path(self.cfg.output_dir)
        self.ckpt = CheckpointManager(self.out / "checkpoints", self.cfg.keep_last)
        self.world = self.acc.num_processes
        self.batch = self.cfg.batch_size * self.world  # samples per micro-batch, all processes
        self.batches_per_epoch = len(run.train_loader)  # micro-batches per process
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the training set has {run.report.train_posts} posts, fewer than one batch of "
                f"{self.batch} (train.batch_size x processes); lower train.batch_size"
            )
        steps_per_epoch = math.ceil(self.batches_per_epoch / self.cfg.grad_accum_steps)
        max_steps = self.cfg.max_steps or self.cfg.epochs * steps_per_epoch
        self.num_epochs = math.ceil(max_steps / steps_per_epoch)
        self.raw_optimizer = getattr(run.optimizer, "optimizer", run.optimizer)
        self.scheduler = build_scheduler(self.raw_optimizer, self.cfg.optim, max_steps)
        self.trainable = [p for group in self.raw_optimizer.param_groups for p in group["params"]]
        self.core = self.acc.unwrap_model(run.model)
        global_batch = self.batch * self.cfg.grad_accum_steps
        self.state = TrainState(global_batch=global_batch, max_steps=max_steps, world_size=self.world)
        self.problems: dict[str, set[str]] = {}  # this process's problem posts since it started
        self.running: dict[str, float] = {}  # summed losses since the last log
        self.window_bad = False  # a non-finite loss in the current accumulation window
        self.step_skipped = False
        self.norm = torch.tensor(0.0)
        self.last_log = time.time()
        self.samples_path = self.out / f"samples-rank{self.acc.process_index}.jsonl"
        self.progress: Any = None

    # ------------------------------------------------------------------------------------------ the loop
    def train(self, resume: str | Path | None) -> FitResult:
        t_start, acc, cfg = time.time(), self.acc, self.cfg
        if acc.is_main_process:
            for leftover in self.ckpt.clean_partial():  # half-written checkpoints of a killed run
                logger.warning("removed an incomplete checkpoint left by an interrupted run: %s", leftover)
        acc.wait_for_everyone()
        # Trackers start before the RNG states are restored, so nothing they do can shift the random stream.
        if cfg.tensorboard:
            acc.init_trackers(self.recipe.name, config=hparams(self.run.resolved))
        if resume is not None:
            self._resume(resume)  # refused before anything is written when its config differs
        if acc.is_main_process:
            write_run_config(self.out, self.run.resolved)
        state = self.state
        self.progress = tqdm(
            total=state.max_steps,
            initial=state.step,
            desc=self.recipe.name,
            dynamic_ncols=True,
            disable=not (cfg.progress_bar and acc.is_local_main_process),
        )
        stopped = False
        self.run.model.train()
        for epoch in range(state.epoch, self.num_epochs):
            if state.step >= state.max_steps or stopped:
                break
            batches = self._epoch_batches(epoch)
            for batch in batches:
                if not self._step(batch, epoch):
                    continue  # inside an accumulation window
                self._log()
                end_of_epoch = state.samples_in_epoch >= self.batches_per_epoch * self.batch
                at_end = state.step >= state.max_steps
                stopped = self.stop_after is not None and state.step >= self.stop_after and not at_end
                self._maybe_validate(end_of_epoch=end_of_epoch, at_end=at_end)
                if end_of_epoch:
                    state.epoch, state.samples_in_epoch = epoch + 1, 0
                self._maybe_save(end_of_epoch=end_of_epoch, force=at_end or stopped)
                if at_end or stopped:
                    getattr(
                        batches, "end", lambda: None
                    )()  # leaving mid-epoch: unregister / stop the workers
                    break
            else:
                state.epoch, state.samples_in_epoch = epoch + 1, 0
        self.progress.close()
        return self._finish(stopped, t_start)

    def _epoch_batches(self, epoch: int) -> Any:
        """The batches of ``epoch``, after those a resumed run already trained on: Accelerate skips them for
        in-memory data; a stream (a shard folder) continues from each (rank, worker)'s saved position."""
        loader, state = self.run.train_loader, self.state
        # Accelerate's prepared loaders and StreamLoader both define set_epoch; Run declares a DataLoader
        loader.set_epoch(epoch)  # type: ignore[attr-defined]
        skip = state.samples_in_epoch // self.batch if epoch == state.epoch else 0
        if isinstance(loader, StreamLoader):
            if skip:
                position = state.stream["ranks"][self.acc.process_index]
                loader.set_position(
                    StreamPosition.from_dict(position, loader.dataset.workers, "stream"), skip
                )
            return loader
        if not skip:
            return loader
        batches = self.acc.skip_first_batches(loader, skip)
        batches.set_epoch(epoch)
        return batches

    def _stream_state(self) -> dict[str, Any] | None:
        """Collective: every rank's position in a streamed epoch, for the checkpoint (None: in-memory
        data)."""
        loader = self.run.train_loader
        if not isinstance(loader, StreamLoader):
            return None
        ranks = gather_object([loader.position().to_dict()])
        return {"world_size": self.world, "workers": loader.dataset.workers, "ranks": list(ranks)}

    # ----------------------------------------------------------------------------------------- the steps
    def _step(self, batch: PostBatch, epoch: int) -> bool:
        """One micro-batch forward and backward; True when it completed an optimizer step."""
        acc, cfg, state = self.acc, self.cfg, self.state
        with acc.accumulate(self.run.model):
            loss, parts = self.recipe.loss(self.run.model, batch)
            nonfinite = any_process(
                acc, not bool(torch.isfinite(loss.detach()).all())
            )  # all skip it together
            self.window_bad = self.window_bad or nonfinite
            # Backward runs even for a bad loss (its gradients are thrown away below), so every process takes
            # part in the same gradient all-reduce and DDP's bookkeeping stays consistent.
            acc.backward(loss)
            if acc.sync_gradients:
                self.norm = acc.clip_grad_norm_(self.trainable, cfg.optim.max_grad_norm or float("inf"))
                grad_bad = (
                    not math.isfinite(float(self.norm)) and acc.scaler is None
                )  # fp16: the scaler skips
                self.step_skipped = self.window_bad or grad_bad
                if not self.step_skipped:
                    self.run.optimizer.step()
                    self.scheduler.step()
                else:  # the schedule moves on; torch warns that the optimizer did not step, which we know
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        self.scheduler.step()
                self.run.optimizer.zero_grad(set_to_none=True)
        state.samples_in_epoch += self.batch
        if cfg.log_samples:
            with output_errors(self.samples_path), open(self.samples_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"epoch": epoch, "step": state.step, "ids": batch.ids}) + "\n")
        note_problems(self.problems, batch.ids, batch.problems)
        if not nonfinite:
            for k, v in {"loss": loss.detach(), **parts}.items():
                self.running[k] = self.running.get(k, 0.0) + float(v)
            self.running["_n"] = self.running.get("_n", 0.0) + 1
        if not acc.sync_gradients:
            return False
        state.step += 1
        self._count_nonfinite()
        self.progress.update(1)
        return True

    def _count_nonfinite(self) -> None:
        state = self.state
        if not self.step_skipped:
            state.nonfinite_run, self.window_bad = 0, False
            return
        state.skipped_steps += 1
        state.nonfinite_run += 1
        logger.warning(
            "step %d skipped: non-finite %s (%d in a row)",
            state.step,
            "loss" if self.window_bad else "gradient norm",
            state.nonfinite_run,
        )
        self.window_bad = False
        if state.nonfinite_run >= self.cfg.max_nonfinite_steps:
            self.progress.close()
            self._finish_trackers()
            raise NonFiniteLossError(
                f"{state.nonfinite_run} consecutive optimizer steps had a NaN/inf loss or gradient "
                f"(last at step {state.step}); stopping. Lower the learning rates, check the data, or "
                f"raise train.max_nonfinite_steps (now {self.cfg.max_nonfinite_steps})."
            )

    def _log(self) -> None:
        """Training losses averaged over every process since the last log (a collective: same keys
        everywhere)."""
        cfg, state = self.cfg, self.state
        if not self.running or (state.step % cfg.log_every != 0 and state.step != state.max_steps):
            return
        keys = sorted(self.running)
        sums = torch.tensor([self.running[k] for k in keys], device=self.acc.device)
        totals = dict(zip(keys, self.acc.reduce(sums, reduction="sum").tolist(), strict=True))
        n = max(totals.pop("_n", 0.0), 1.0)
        logs = {f"train/{k}": v / n for k, v in totals.items()}
        logs.update(
            {
                f"lr/{g['name']}": g["lr"]
                for g in self.raw_optimizer.param_groups
                if not g["name"].endswith("/no_decay")
            }
        )
        logs["train/grad_norm"] = float(self.norm)
        logs["train/samples_per_s"] = (
            cfg.log_every * state.global_batch / max(time.time() - self.last_log, 1e-9)
        )
        logs["train/skipped_steps"] = state.skipped_steps
        self.acc.log(logs, step=state.step)
        self.progress.set_postfix(loss=f"{logs.get('train/loss', float('nan')):.4f}")
        self.running, self.last_log = {}, time.time()

    def _maybe_validate(self, *, end_of_epoch: bool, at_end: bool) -> None:
        cfg, state = self.cfg, self.state
        due = at_end or (cfg.eval_every and state.step % cfg.eval_every == 0)
        if self.run.val_loader is None or not (due or (cfg.eval_every is None and end_of_epoch)):
            return
        metrics = self.recipe.validate(self.run.model, self.run.val_loader)
        state.history.append({"step": state.step, **metrics})
        self.acc.log({f"val/{k}": v for k, v in metrics.items() if v is not None}, step=state.step)
        value = metrics.get(cfg.metric_for_best)
        if value is None:
            raise ConfigError(
                f"train.metric_for_best={cfg.metric_for_best!r} is not a validation metric; "
                f"available: {sorted(metrics)}"
            )
        if _better(value, state.best_metric, cfg.metric_for_best):
            state.best_metric, state.best_step = float(value), state.step
            self._export("best", {"validation": metrics, "step": state.step})
        self.acc.wait_for_everyone()
        shown = {k: round(v, 4) for k, v in metrics.items() if k in (cfg.metric_for_best, "loss")}
        if self.acc.is_local_main_process:
            (self.progress.write if not self.progress.disable else logger.info)(
                f"step {state.step}: validation {shown}"
            )

    def _maybe_save(self, *, end_of_epoch: bool, force: bool) -> None:
        cfg, state = self.cfg, self.state
        every = cfg.save_every and state.step % cfg.save_every == 0
        if force or every or (cfg.save_every is None and end_of_epoch):
            self._gather_problems()
            stream = self._stream_state()  # a collective
            self.ckpt.save(
                self.acc,
                state.step,
                model=self.run.model,
                optimizer=self.run.optimizer,
                scheduler=self.scheduler,
                state=TrainState(**{**vars(state), "micro_step": self.acc.step, "stream": stream}),
                config=self.run.resolved,
            )

    # --------------------------------------------------------------------------------------- around it
    def _resume(self, resume: str | Path) -> None:
        """Restore a checkpoint: refused when its config differs from this run's in a key that matters."""
        path = self.ckpt.resolve(resume)
        saved = self.ckpt.verify(path)
        from ximgctx.training.config import read_yaml

        diffs = config_differences(
            read_yaml(path / "config.yaml"),
            self.run.resolved,
            same_global_batch=saved.global_batch == self.state.global_batch,
        )
        if diffs:
            raise CheckpointError(
                f"cannot resume {path}: the config differs from the one it was written with in "
                + "; ".join(diffs)
                + ". Resume with the same config, or start a fresh run (--overwrite)"
            )
        if saved.samples_in_epoch % self.batch:
            raise CheckpointError(
                f"cannot resume {path}: it stopped {saved.samples_in_epoch} samples into an epoch, which is "
                f"not a whole number of batches of {self.batch} (batch_size x processes); resume with the "
                f"global batch it was written with ({saved.global_batch})"
            )
        self._check_stream_layout(path, saved)
        run = self.run
        self.ckpt.load(
            self.acc, path, saved, model=run.model, optimizer=run.optimizer, scheduler=self.scheduler
        )
        keep = {k: getattr(self.state, k) for k in ("max_steps", "world_size", "global_batch")}
        self.state = TrainState(**{**vars(saved), **keep})
        logger.info(
            "resumed from %s at step %d (epoch %d, %d samples in)",
            path,
            self.state.step,
            self.state.epoch,
            self.state.samples_in_epoch,
        )

    def _check_stream_layout(self, path: Path, saved: TrainState) -> None:
        """A stream stopped inside an epoch continues only with the (processes x workers) it was cut for."""
        loader = self.run.train_loader
        if not isinstance(loader, StreamLoader) or not saved.samples_in_epoch:
            return
        now = {"world_size": self.world, "workers": loader.dataset.workers}
        stream = saved.stream or {}
        then = {k: stream.get(k) for k in now}
        if then != now or len(stream.get("ranks", [])) != self.world:
            raise CheckpointError(
                f"cannot resume {path}: it stopped inside an epoch of streamed data split over {then} "
                f"(processes, DataLoader workers per process), and this run has {now}; resume with the same "
                f"process count and train.num_workers"
            )
        for rank, position in enumerate(stream["ranks"]):
            try:
                StreamPosition.from_dict(position, loader.dataset.workers, f"rank {rank}")
            except ConfigError as e:
                raise CheckpointError(f"{path}: trainer_state.json stream: {e}") from None

    def _gather_problems(self) -> None:
        """Collective: every process's problem posts merged into the state and counted in the report."""
        local = {pid: sorted(kinds) for pid, kinds in self.problems.items()}
        merged: dict[str, set[str]] = {pid: set(k) for pid, k in self.state.problem_posts.items()}
        for d in gather_object([local]):
            for pid, kinds in d.items():
                merged.setdefault(pid, set()).update(kinds)
        self.state.problem_posts = {pid: sorted(k) for pid, k in sorted(merged.items())}
        self.run.report.problems = count_problems([self.state.problem_posts])

    def _export(self, folder: str, metrics: dict[str, Any]) -> None:
        """Export the live model to ``output_dir/<folder>`` with the card (a collective for sharded
        models)."""
        self._gather_problems()
        full = (
            self.acc.get_state_dict(self.run.model)
            if self.acc.distributed_type == DistributedType.FSDP
            else None
        )
        if self.acc.is_main_process:
            card = {**self.run.card, "Training data": self.run.report.to_dict(), "Metrics": metrics}
            self.recipe.export(self.core, full, self.out / folder, card, authors=self.run.authors)

    def _finish_trackers(self) -> None:
        """Close the TensorBoard writers. Not ``end_training``: it also destroys the process group, which
        would break a second run (pretrain, then train) in the same processes."""
        for tracker in self.acc.trackers:
            tracker.finish()

    def _finish(self, stopped: bool, t_start: float) -> FitResult:
        state = self.state
        self._gather_problems()
        model_dir = self.out / "best" if state.best_step is not None else None
        if not stopped:
            self._export(
                "final", {"validation": state.history[-1] if state.history else None, "step": state.step}
            )
            model_dir = model_dir or self.out / "final"
        self.acc.wait_for_everyone()
        self._finish_trackers()
        logger.info("data: %s", self.run.report.summary())
        result = FitResult(
            output_dir=self.out,
            model_dir=model_dir,
            steps=state.step,
            best_metric=state.best_metric,
            best_step=state.best_step,
            metrics=state.history[-1] if state.history else {},
            history=state.history,
            skipped_steps=state.skipped_steps,
            data=self.run.report.to_dict(),
            stopped_early=stopped,
            wall_s=time.time() - t_start,
        )
        if self.acc.is_main_process:
            with atomic_output(self.out / f"{self.recipe.name}_result.json") as tmp:
                tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        return result
