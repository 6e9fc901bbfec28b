"""Process set-up for every multi-process command: training, evaluation and batch inference.

One place decides how a launch (one process, ``torchrun``, ``accelerate launch``) becomes an Accelerate state:
whether the processes are CPU-only (gloo), how long a collective may wait, and which precision to use.
Training, evaluation and inference import it from here, so they cannot disagree (evaluation never imports
training).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "resolve_device",
    "DEFAULT_TIMEOUT_S",
    "any_process",
    "cpu_only_distributed",
    "launched_world_size",
    "make_accelerator",
    "mixed_precision",
    "partial_state",
    "wants_cpu",
]

#: how long a collective waits for the slowest process before the run fails (a dead or stuck rank)
DEFAULT_TIMEOUT_S = 180.0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> the first GPU when there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def launched_world_size() -> int:
    """The number of processes the launcher started (1 when not launched by torchrun / MPI / accelerate)."""
    return max(int(os.environ.get(k, "1") or 1) for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))


def cpu_only_distributed() -> bool:
    """Launched as several processes (torchrun, accelerate launch) on a machine without a GPU.

    Accelerate only picks its multi-CPU (gloo) mode when told ``cpu=True``; without it, every process of a
    CPU-only ``torchrun`` would silently train alone on all the data and write to the same files.
    """
    return launched_world_size() > 1 and not torch.cuda.is_available()


def wants_cpu(device: str | None) -> bool:
    """``"cpu"``, or ``None``/``"auto"`` on a machine without a GPU: run the processes on CPU (gloo)."""
    return device == "cpu" or (device in (None, "auto") and not torch.cuda.is_available())


def mixed_precision(setting: str) -> str:
    """``auto`` -> bf16 on a CUDA GPU that supports it, else ``no`` (fp32); other values pass through."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def make_accelerator(
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    precision: str = "no",
    grad_accum_steps: int = 1,
    log_with: str | None = None,
    project_dir: str | Path | None = None,
    data_seed: int | None = None,
    find_unused_parameters: bool | None = None,
) -> Any:
    """An Accelerator that runs the same code on 1 CPU process, N CPU processes (gloo) or N GPUs.

    Args:
        timeout_s: collectives fail after this long, so a dead rank fails the run instead of hanging it
            for torch's default 30 minutes.
        precision: ``auto`` | ``no`` | ``bf16`` | ``fp16`` (see :func:`mixed_precision`).
        grad_accum_steps: micro-batches per optimizer step (``accelerator.accumulate``).
        log_with: an Accelerate tracker (``"tensorboard"``) or None.
        project_dir: where trackers write (``<project_dir>/logs``).
        data_seed: use Accelerate's seedable sampler with this seed (order = f(seed, epoch)), so every process
            agrees on the order and a resumed run sees the same sequence of posts; None: Accelerate's default.
        find_unused_parameters: DDP's flag (batches that leave a tower unused); None: no DDP settings.

    The scheduler is never stepped by Accelerate: the training loop steps it once per optimizer step.
    """
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, ProjectConfiguration

    handlers: list[Any] = [InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))]
    if find_unused_parameters is not None:
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters))
    extra: dict[str, Any] = {}
    if project_dir is not None:
        extra["project_config"] = ProjectConfiguration(
            project_dir=str(project_dir), logging_dir=str(Path(project_dir) / "logs")
        )
    if data_seed is not None:
        extra["dataloader_config"] = DataLoaderConfiguration(
            use_seedable_sampler=True, data_seed=data_seed, even_batches=True
        )
    return Accelerator(
        cpu=cpu_only_distributed(),
        mixed_precision=mixed_precision(precision),
        gradient_accumulation_steps=grad_accum_steps,
        log_with=log_with,
        kwargs_handlers=handlers,
        step_scheduler_with_optimizer=False,
        **extra,
    )


def partial_state(*, cpu: bool, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Accelerate's ``PartialState`` (rank, world, device, barrier) without a model: batch inference."""
    from accelerate import PartialState

    return PartialState(cpu=cpu, timeout=timedelta(seconds=timeout_s))


def any_process(accelerator: Any, flag: bool) -> bool:
    """Collective (every process must call it): True on every process when ``flag`` is True on any of them,
    so that all of them skip the same step or raise the same error together."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)
