"""The learning loop's configuration (:class:`LoopConfig`), read from a YAML file or given in Python.

loop_db: loop.sqlite            # the loop store the servers share (SQLite file or postgresql:// URL)
queue_key_file: queue.key       # the store's HMAC key
registry_root: registry/        # the model registry's folder
experiment: configs/loop.yaml   # the fine-tuning experiment (model, train); data comes from the round
replay: [train.jsonl, shards/]  # earlier training data: manifests or shard folders
replay_size: 256
holdout: holdout.jsonl          # the frozen holdout both models are scored on
min_new_labels: 20
gate: {metric: mean, tolerance: 0.01}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ximgctx.config import config_from_dict, read_yaml
from ximgctx.errors import ConfigError
from ximgctx.evaluation.gate import GateRule

__all__ = ["LoopConfig", "load_loop_config"]


@dataclass
class LoopConfig:
    """What one round of the learning loop reads, trains and decides with."""

    loop_db: str | None = None  # the loop store: a SQLite file or postgresql:// URL (the servers' --loop-db)
    queue_key_file: str | None = None  # the store's HMAC key file (default: $XIMGCTX_QUEUE_KEY)
    registry_root: str | None = None  # the model registry's folder (versions are copied under it)
    experiment: str | None = None  # the fine-tuning experiment YAML (model and train; the round gives data)
    overrides: list[str] = field(default_factory=list)  # section.key=value applied to the experiment
    replay: list[str] = field(default_factory=list)  # earlier training data: manifests or shard folders
    replay_size: int = 256  # posts sampled (seeded) from replay and from earlier rounds' labels per round
    holdout: str | None = None  # the frozen holdout manifest both models are scored on
    val_fraction: float = 0.2  # share of the new labels used to refit calibration (and validate training)
    heldout_fraction: float = 0.2  # share of the new labels held out to score new-label accuracy
    min_new_labels: int = 20  # fewer governed new labels than this: the round is skipped
    gate: GateRule = field(default_factory=GateRule)  # the promotion rule
    governance: str | None = None  # governance policy YAML applied again to the labels (default: shipped)
    key_file: str | None = None  # the operator's governance key file (default: $XIMGCTX_GOVERNANCE_KEY)
    policy: str | None = None  # moderation policy YAML whose categories are scored (default: shipped)
    seed: int = 0  # splits and the replay sample: the same seed and labels give the same round
    round_lease_s: float = 600.0  # seconds a round holds the lock unrenewed: a dead owner's runs out
    rounds_dir: str | None = None  # where rounds train (the registry root's rounds/ when not given)

    def __post_init__(self) -> None:
        if isinstance(self.gate, dict):
            self.gate = config_from_dict(GateRule, self.gate, "gate")
        for name in ("val_fraction", "heldout_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"loop.{name} must be a number in [0, 1), got {value!r}")
        if self.val_fraction + self.heldout_fraction >= 1:
            raise ConfigError(
                f"loop.val_fraction + loop.heldout_fraction must leave labels to train on, got "
                f"{self.val_fraction} + {self.heldout_fraction}"
            )
        for name in ("replay_size", "min_new_labels", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"loop.{name} must be an integer >= 0, got {value!r}")
        if (
            not isinstance(self.round_lease_s, (int, float))
            or not math.isfinite(self.round_lease_s)
            or self.round_lease_s <= 0
        ):
            raise ConfigError(f"loop.round_lease_s must be positive seconds, got {self.round_lease_s!r}")
        if isinstance(self.replay, str):
            self.replay = [self.replay]
        if isinstance(self.overrides, str):
            self.overrides = [self.overrides]

    def require(self, *names: str) -> None:
        """Refuse a config without the fields an operation needs, naming them."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(f"the loop config needs {', '.join(missing)} (in --config or as flags)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_loop_config(source: str | Path | dict[str, Any] | LoopConfig | None, **given: Any) -> LoopConfig:
    """A :class:`LoopConfig` from a YAML path, a dict or a config, with ``given`` fields on top (None values
    are not given). Relative paths in a YAML file are resolved against the file's folder."""
    if isinstance(source, LoopConfig):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = dict(source)
    elif source is None:
        data = {}
    else:
        path = Path(source)
        data = read_yaml(path, "loop config")
        base = path.parent
        for name in ("queue_key_file", "registry_root", "experiment", "holdout", "governance", "key_file",
                     "policy", "rounds_dir"):  # fmt: skip
            value = data.get(name)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                data[name] = str(base / value)
        db = data.get("loop_db")
        if isinstance(db, str) and "://" not in db and not Path(db).is_absolute():
            data["loop_db"] = str(base / db)
        replay = data.get("replay")
        if isinstance(replay, str):
            replay = [replay]
        if isinstance(replay, list):
            data["replay"] = [
                str(base / r) if isinstance(r, str) and not Path(r).is_absolute() else r for r in replay
            ]
    data.update({k: v for k, v in given.items() if v is not None})
    return config_from_dict(LoopConfig, data, "loop")
