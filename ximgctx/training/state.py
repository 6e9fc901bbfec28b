"""The training loop's counters: one dataclass, saved as ``trainer_state.json`` in every checkpoint.

Everything the loop needs to continue exactly where it stopped, besides tensors (weights, optimizer moments)
and RNG states, lives here as plain JSON data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ximgctx._json import json_safe
from ximgctx.errors import ArtifactError

__all__ = ["TRAINER_STATE", "TrainState"]

TRAINER_STATE = "trainer_state.json"


@dataclass
class TrainState:
    """Where a run is. Saved with each checkpoint; a resumed run starts from exactly this."""

    step: int = 0  # optimizer steps completed
    epoch: int = 0  # the epoch in progress (0-based)
    samples_in_epoch: int = 0  # position in the data: samples (over every process) consumed in this epoch
    global_batch: int = 0  # batch_size x processes x grad_accum_steps the run was written with
    max_steps: int = 0  # optimizer steps in the whole schedule
    world_size: int = 1  # processes that wrote the checkpoint
    micro_step: int = 0  # Accelerate's micro-batch counter (the gradient-accumulation phase)
    best_metric: float | None = None  # best value of train.metric_for_best so far
    best_step: int | None = None  # the step that reached it (best/ holds that model)
    nonfinite_run: int = 0  # consecutive optimizer steps skipped for a NaN/inf loss or gradient
    skipped_steps: int = 0  # every step skipped for a NaN/inf loss or gradient
    history: list[dict[str, float]] = field(default_factory=list)  # every validation, with its step
    # post id -> problem kinds, for training posts with a problem, over every epoch and process so far; the
    # data report counts each post once per kind from this (see ximgctx.training._runtime.count_problems)
    problem_posts: dict[str, list[str]] = field(default_factory=dict)
    # streamed data (a shard folder): {"world_size", "workers", "ranks": [each rank's StreamPosition as a
    # dict]}, where every (rank, worker) is in the epoch in progress; null for in-memory data
    stream: dict[str, Any] | None = None

    def to_json(self) -> str:
        """Standard JSON: a NaN/inf validation metric is written as null."""
        return json.dumps(json_safe(asdict(self)), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = TRAINER_STATE) -> TrainState:
        """Read the saved counters, refusing unknown keys or values of the wrong type (naming them)."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: must hold a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ArtifactError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        for name in ("step", "epoch", "samples_in_epoch", "global_batch", "max_steps", "world_size"):
            value = data.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ArtifactError(f"{where}: {name} must be an integer >= 0, got {value!r}")
        if not isinstance(data.get("history", []), list) or not isinstance(
            data.get("problem_posts", {}), dict
        ):
            raise ArtifactError(f"{where}: history must be a list and problem_posts a mapping")
        stream = data.get("stream")
        if stream is not None and not (
            isinstance(stream, dict)
            and set(stream) == {"world_size", "workers", "ranks"}
            and isinstance(stream["ranks"], list)
        ):
            raise ArtifactError(
                f"{where}: stream must be null or {{world_size, workers, ranks}}, got {stream!r}"
            )
        return cls(**data)

    @classmethod
    def read(cls, folder: Path) -> TrainState:
        path = folder / TRAINER_STATE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError(
                f"{folder}: no {TRAINER_STATE}; not a checkpoint written by ximgctx training"
            ) from None
        except ValueError as e:
            raise ArtifactError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(data, str(path))
