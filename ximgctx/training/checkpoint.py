"""Checkpoints that are complete or invisible, and that hold no pickle a stranger could have written.

A checkpoint folder ``step-00000100`` holds::

    model.safetensors        the unwrapped model's state dict (safetensors)
    optimizer.pt             the optimizer's state dict: torch.save, read back only with weights_only=True
    scheduler.json           the LR scheduler's state (plain numbers)
    scaler.json              the fp16 gradient scaler's state, when there is one
    rng-rank<R>.json         process R's python `random` and numpy RNG states
    rng-rank<R>.safetensors  process R's torch CPU (and CUDA) RNG states
    trainer_state.json       the loop's counters (:class:`~ximgctx.training.state.TrainState`)
    config.yaml              the resolved config of the run
    COMPLETE                 written last, before the manifest
    manifest.json            kind "checkpoint": every file with its SHA-256 and size

It is written into ``.tmp-step-00000100`` by every process (each its own RNG files, the main process the
rest), sealed as an artifact, then renamed. Older checkpoints are removed only after that rename. ``latest``
is the highest step among folders named ``step-*`` that hold the marker and the manifest, so a run killed
mid-write can never be resumed from. Before resuming, the folder is verified (manifest, checksums, no unlisted
file) and any file outside the list above (a ``.pkl``, a ``.bin``) is refused, naming it: nothing in a
checkpoint is ever unpickled except through ``torch.load(weights_only=True)``.

The layout assumes a file system shared by all processes (one machine, or a shared mount across machines).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle  # only for its exception: torch.load(weights_only=True) raises UnpicklingError
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from ximgctx._artifacts import output_errors, seal_folder, verify_artifact
from ximgctx._distributed import any_process
from ximgctx.config import flatten_config
from ximgctx.errors import ArtifactError, OutputError
from ximgctx.training.config import TrainConfig
from ximgctx.training.state import TRAINER_STATE, TrainState

__all__ = [
    "COMPLETE_MARKER",
    "CheckpointError",
    "CheckpointManager",
    "KIND",
    "check_files",
    "config_differences",
    "read_trainer_state",
]

KIND = "checkpoint"
VERSION = 1
COMPLETE_MARKER = "COMPLETE"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.json"
SCALER_FILE = "scaler.json"
logger = logging.getLogger(__name__)
_NAME = re.compile(r"^step-(\d{8,})$")
#: every file a checkpoint may hold; anything else (a pickle, a .bin) is refused before anything is read
_ALLOWED = re.compile(
    r"^(model\.safetensors|optimizer\.pt|scheduler\.json|scaler\.json|trainer_state\.json|config\.yaml|"
    r"COMPLETE|manifest\.json|rng-rank\d{1,6}\.(json|safetensors))$"
)
#: TrainConfig fields that may differ between a checkpoint and the run resuming it: how long the run goes on,
#: how often it logs, validates and saves, how it shows progress. Everything else (model, data, optimizer,
#: seed) must match, or the resumed run would not be the run that was checkpointed. batch_size and
#: grad_accum_steps may differ when the global batch stays the same (another process count). The names are
#: checked against the dataclass when this module loads, so a renamed field cannot silently stop resuming.
_RESUMABLE_FIELDS = (
    "max_steps",
    "epochs",
    "eval_every",
    "save_every",
    "log_every",
    "keep_last",
    "eval_batch_size",
    "num_workers",  # a streamed run checks its (processes x workers) layout itself
    "prefetch_factor",
    "progress_bar",
    "tensorboard",
    "log_samples",
    "collective_timeout_s",
    "max_nonfinite_steps",
    "output_dir",
)
_BATCH_FIELDS = ("batch_size", "grad_accum_steps")
_unknown = sorted(set(_RESUMABLE_FIELDS + _BATCH_FIELDS) - {f.name for f in dataclasses.fields(TrainConfig)})
if _unknown:
    raise ImportError(f"checkpoint: RESUMABLE fields that TrainConfig does not have: {_unknown}")
RESUMABLE_KEYS = frozenset(f"train.{name}" for name in _RESUMABLE_FIELDS)
_BATCH_KEYS = frozenset(f"train.{name}" for name in _BATCH_FIELDS)


class CheckpointError(ArtifactError):
    """A checkpoint to resume from is missing, incomplete, altered, unsafe or from another config."""


def read_trainer_state(path: Path) -> dict[str, Any]:
    """The loop's counters saved in a checkpoint folder, as a dict."""
    try:
        return vars(TrainState.read(path))
    except ArtifactError as e:
        raise CheckpointError(str(e)) from None


def check_files(path: Path) -> None:
    """Refuse a checkpoint holding any file a checkpoint does not hold (pickles above all), naming it."""
    found = [
        (Path(dirpath) / name).relative_to(path).as_posix()
        for dirpath, dirnames, filenames in os.walk(path)
        for name in dirnames + filenames
    ]
    for rel in sorted(found, key=lambda r: (not r.endswith((".pkl", ".pickle")), r)):  # pickles named first
        if not _ALLOWED.match(rel):
            why = " (a pickle: it could run code when loaded)" if rel.endswith((".pkl", ".pickle")) else ""
            raise CheckpointError(
                f"{path / rel}: not a file an ximgctx checkpoint holds{why}; refusing to resume from "
                f"{path}. Checkpoints written by older versions (accelerate's save_state) cannot be "
                f"resumed safely"
            )


def config_differences(saved: dict[str, Any], new: dict[str, Any], *, same_global_batch: bool) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's config and the resuming run's, except the
    keys that may differ (:data:`RESUMABLE_KEYS`; the batch keys when the global batch is unchanged)."""
    a, b = flatten_config(saved), flatten_config(new)
    allowed = RESUMABLE_KEYS | (_BATCH_KEYS if same_global_batch else frozenset())
    return [
        f"{k} (checkpoint: {a.get(k, '<absent>')!r}, now: {b.get(k, '<absent>')!r})"
        for k in sorted(set(a) | set(b))
        if k not in allowed and a.get(k, "<absent>") != b.get(k, "<absent>")
    ]


# ------------------------------------------------------------------------------------------ RNG states
def _rng_files(folder: Path, rank: int) -> tuple[Path, Path]:
    return folder / f"rng-rank{rank}.json", folder / f"rng-rank{rank}.safetensors"


def _save_rng(folder: Path, rank: int) -> None:
    """This process's python, numpy, torch CPU and CUDA RNG states, as JSON and safetensors."""
    version, keys, gauss = random.getstate()
    # the legacy (default) form is the MT19937 tuple
    name, np_keys, pos, has_gauss, cached = cast(
        "tuple[str, np.ndarray, int, int, float]", np.random.get_state()
    )
    data = {
        "python": {"version": version, "state": list(keys), "gauss_next": gauss},
        "numpy": {
            "name": name,
            "keys": np_keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    text_file, tensor_file = _rng_files(folder, rank)
    text_file.write_text(json.dumps(data) + "\n", encoding="utf-8")
    save_file(tensors, str(tensor_file))


def _load_rng(folder: Path, rank: int) -> bool:
    """Restore this process's RNG states; False when the checkpoint has none for this rank."""
    text_file, tensor_file = _rng_files(folder, rank)
    if not text_file.is_file() or not tensor_file.is_file():
        return False
    try:
        data = json.loads(text_file.read_text(encoding="utf-8"))
        py, npy = data["python"], data["numpy"]
        random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"]))
        keys = np.asarray(npy["keys"], dtype=np.uint32)
        np.random.set_state(
            (str(npy["name"]), keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"]))
        )
        tensors = load_file(str(tensor_file))
        cpu = tensors["torch_cpu"]
        if cpu.dtype != torch.uint8 or cpu.ndim != 1:
            raise ValueError("torch_cpu must be a 1-D uint8 tensor")
        torch.set_rng_state(cpu)
        cuda = [tensors[f"cuda_{i}"] for i in range(torch.cuda.device_count()) if f"cuda_{i}" in tensors]
        if cuda and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{text_file}: not a valid RNG state ({e})") from None
    return True


# ---------------------------------------------------------------------------------- scheduler / scaler
def _json_state(obj: Any) -> str:
    try:
        return json.dumps(obj.state_dict(), indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"{type(obj).__name__}.state_dict() is not plain JSON data ({e})") from e


def _load_scheduler(scheduler: Any, path: Path) -> None:
    """Load a scheduler's JSON state, accepting only the keys (and lambda fields) the live one has."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    live = scheduler.state_dict()
    if not isinstance(data, dict) or set(data) != set(live):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: scheduler state keys {got} differ from {sorted(live)}")
    lambdas = data.get("lr_lambdas")
    if not isinstance(lambdas, list) or len(lambdas) != len(live["lr_lambdas"]):
        raise CheckpointError(f"{path}: lr_lambdas must be a list of {len(live['lr_lambdas'])} entries")
    for got, want in zip(lambdas, live["lr_lambdas"], strict=True):
        if (got is None) != (want is None) or (
            want is not None and (not isinstance(got, dict) or set(got) != set(want))
        ):
            raise CheckpointError(f"{path}: lr_lambdas entry {got!r} does not match the schedule")
    scheduler.load_state_dict(data)


# ---------------------------------------------------------------------------------------- the manager
class CheckpointManager:
    """Writes, lists, resolves, verifies, loads and prunes the checkpoints under ``root``.

    Args:
        root: the checkpoints folder (``<output_dir>/checkpoints``).
        keep_last: how many complete checkpoints to keep.
    """

    def __init__(self, root: str | Path, keep_last: int = 2) -> None:
        self.root = Path(root)
        self.keep_last = keep_last

    @staticmethod
    def name(step: int) -> str:
        return f"step-{step:08d}"

    @staticmethod
    def is_complete(path: Path) -> bool:
        return bool(_NAME.match(path.name)) and (path / COMPLETE_MARKER).is_file()

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and self.is_complete(p)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def resolve(self, resume: str | Path) -> Path:
        """``"latest"`` (the newest complete checkpoint) or an explicit checkpoint folder."""
        if str(resume) == "latest":
            path = self.latest()
            if path is None:
                raise CheckpointError(f"--resume latest: no complete checkpoint under {self.root}")
            return path
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
        if not (path / COMPLETE_MARKER).is_file():
            raise CheckpointError(
                f"--resume {resume}: the checkpoint is incomplete (no {COMPLETE_MARKER} marker; "
                f"it was interrupted while being written). Use --resume latest."
            )
        return path

    def verify(self, path: Path) -> TrainState:
        """Refuse foreign files, then check every file against the manifest; return the saved counters."""
        check_files(path)
        try:
            verify_artifact(path, KIND, max_version=VERSION)
        except CheckpointError:
            raise
        except ArtifactError as e:
            raise CheckpointError(f"cannot resume from {path}: {e}") from None
        try:
            return TrainState.read(path)
        except ArtifactError as e:
            raise CheckpointError(str(e)) from None

    def clean_partial(self) -> list[Path]:
        """Remove leftovers of interrupted writes (main process, before training starts)."""
        removed = []
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_dir() and p.name.startswith((".tmp-step-", ".old-step-")):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        return removed

    def save(
        self,
        accelerator: Any,
        step: int,
        *,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any,
        state: TrainState,
        config: dict[str, Any],
    ) -> Path:
        """Write checkpoint ``step`` collectively; every process must call this.

        A full disk or a read-only folder gives one :class:`OutputError` on every process, with the temporary
        folder removed and the older checkpoints kept.
        """
        final = self.root / self.name(step)
        tmp = self.root / f".tmp-{self.name(step)}"
        main = accelerator.is_main_process
        self._collectively(accelerator, main and (lambda: self._fresh(tmp)), tmp)
        self._collectively(accelerator, lambda: _save_rng(tmp, accelerator.process_index), tmp)
        full = accelerator.get_state_dict(model)  # a collective for sharded models
        self._collectively(
            accelerator,
            main and (lambda: self._write_main(tmp, full, optimizer, scheduler, state, config)),
            tmp,
        )
        self._collectively(accelerator, main and (lambda: self._publish(tmp, final, step)), tmp)
        return final

    @staticmethod
    def _fresh(tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    def _collectively(self, accelerator: Any, work: Callable[[], None] | bool, tmp: Path) -> None:
        """Run ``work`` on this process (when given), then agree: if it failed with an OSError anywhere,
        every process raises one OutputError and the temporary folder is removed."""
        error: OutputError | None = None
        if callable(work):
            try:
                with output_errors(self.root):
                    work()
            except OutputError as e:
                error = e
        if any_process(accelerator, error is not None):
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise error or OutputError(f"{self.root}: another process could not write the checkpoint")

    @staticmethod
    def _write_main(
        tmp: Path,
        full: dict[str, torch.Tensor],
        optimizer: Any,
        scheduler: Any,
        state: TrainState,
        config: dict[str, Any],
    ) -> None:
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in full.items()}
        save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        torch.save(getattr(optimizer, "optimizer", optimizer).state_dict(), tmp / OPTIMIZER_FILE)
        (tmp / SCHEDULER_FILE).write_text(_json_state(scheduler), encoding="utf-8")
        scaler = getattr(optimizer, "scaler", None)
        if scaler is not None:
            (tmp / SCALER_FILE).write_text(_json_state(scaler), encoding="utf-8")
        (tmp / TRAINER_STATE).write_text(state.to_json(), encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def _publish(self, tmp: Path, final: Path, step: int) -> None:
        """Mark, seal and rename the written folder; then drop the checkpoints beyond ``keep_last``."""
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        with open(tmp / COMPLETE_MARKER, "w", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "files": files}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        seal_folder(tmp, KIND, version=VERSION, meta={"step": step})
        if final.exists():  # the same step written again (a resumed run): swap, then drop the old one
            old = self.root / f".old-{self.name(step)}"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        for old in self.complete()[: -self.keep_last]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def load(
        self,
        accelerator: Any,
        path: Path,
        state: TrainState,
        *,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any,
    ) -> None:
        """Restore weights, optimizer, scheduler and this process's RNG states from ``path``, which
        :meth:`verify` checked (and which gave ``state``)."""
        from accelerate.utils import DistributedType

        if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise CheckpointError(
                f"{path}: resuming a sharded (FSDP / DeepSpeed) run is not supported; resume without sharding"
            )
        errors = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, OSError)
        try:
            accelerator.unwrap_model(model).load_state_dict(load_file(str(path / MODEL_FILE)))
        except errors as e:
            raise CheckpointError(f"{path / MODEL_FILE}: does not fit this model ({e})") from None
        try:  # the restricted unpickler: tensors and plain containers only, never a class or a function
            saved = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
            getattr(optimizer, "optimizer", optimizer).load_state_dict(saved)
        except errors as e:
            raise CheckpointError(
                f"{path / OPTIMIZER_FILE}: refused by torch.load(weights_only=True) or not this run's "
                "optimizer "
                f"state: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        _load_scheduler(scheduler, path / SCHEDULER_FILE)
        scaler = getattr(optimizer, "scaler", None)
        if scaler is not None and (path / SCALER_FILE).is_file():
            scaler.load_state_dict(json.loads((path / SCALER_FILE).read_text(encoding="utf-8")))
        if not _load_rng(path, accelerator.process_index):
            logger.warning(
                "%s holds no RNG state for process %d (written by %d processes): its random stream starts "
                "anew",
                path,
                accelerator.process_index,
                state.world_size,
            )
        accelerator.step = state.micro_step
