"""The promotion gate: whether a candidate model may replace the serving one.

Both models are scored on the same frozen holdout (and the same gold items and new labels) into a
:class:`Scorecard`; :func:`gate` compares the two cards under the operator's :class:`GateRule` and returns a
:class:`Verdict` that says why. A candidate is promoted only when

1. no task and no moderation category regresses by more than ``rule.tolerance`` (absolute, in the metric's
   units), and no gold-item accuracy drop beyond it either; and
2. the chosen metric (``rule.metric``: a task, a category, or ``"mean"`` over the tasks) improves by more
   than ``rule.min_gain``; or, when the holdout metric is unchanged (within ``rule.tie``), accuracy on the
   round's new labels improves by more than ``rule.min_gain``.

The comparison is pure (numbers in, verdict out), so the loop, the drift simulation and a reviewer reading a
registry row all apply the same rule. A metric missing on one side is never a pass: it is a reason to refuse.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ximgctx.errors import ConfigError

__all__ = ["GateRule", "Scorecard", "Verdict", "gate"]


@dataclass(frozen=True)
class GateRule:
    """The operator's promotion rule."""

    metric: str = "mean"  # what must improve: "mean" (over tasks), "task:<name>" or "category:<name>"
    tolerance: float = 0.01  # the largest drop allowed in any task, category or gold accuracy (absolute)
    min_gain: float = 0.0  # the metric (or new-label accuracy on a tie) must improve by more than this
    tie: float = 1e-9  # holdout metrics closer than this count as unchanged

    def __post_init__(self) -> None:
        if self.metric != "mean" and not self.metric.startswith(("task:", "category:")):
            raise ConfigError(
                f"gate.metric must be 'mean', 'task:<name>' or 'category:<name>', got {self.metric!r}"
            )
        for name in ("tolerance", "min_gain", "tie"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"gate.{name} must be a finite number >= 0, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Scorecard:
    """One model's scores on the frozen evaluation sets (higher is better for every number)."""

    tasks: dict[
        str, float
    ]  # per task: its primary metric on the holdout (accuracy; exact match if multilabel)
    categories: dict[str, float] = field(default_factory=dict)  # per moderation category, on the holdout
    gold: float | None = None  # accuracy on the gold items (None: there are none)
    new_labels: float | None = None  # accuracy on the round's held-out new labels (None: none held out)
    posts: int = 0  # holdout posts scored

    @property
    def mean(self) -> float | None:
        values = [v for v in self.tasks.values() if v is not None]
        return sum(values) / len(values) if values else None

    def value(self, metric: str) -> float | None:
        """The number ``metric`` names (see :attr:`GateRule.metric`), or None when this card lacks it."""
        if metric == "mean":
            return self.mean
        kind, _, name = metric.partition(":")
        table = self.tasks if kind == "task" else self.categories
        return table.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scorecard:
        return cls(
            tasks=dict(d.get("tasks") or {}),
            categories=dict(d.get("categories") or {}),
            gold=d.get("gold"),
            new_labels=d.get("new_labels"),
            posts=int(d.get("posts") or 0),
        )


@dataclass
class Verdict:
    """The gate's answer: ``promote`` and the reasons, regressions and gain behind it."""

    promote: bool
    reasons: list[str]
    regressions: dict[str, float]  # "task:x" / "category:y" / "gold" -> drop beyond the tolerance
    gain: float | None  # candidate - serving on the chosen metric (None: missing on a side)
    rule: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _drop(
    name: str, old: float | None, new: float | None, rule: GateRule, out: dict[str, float]
) -> str | None:
    if old is None:
        return None  # nothing to regress from
    if new is None or not math.isfinite(new):
        out[name] = math.inf
        return f"{name}: the candidate has no score (serving {old:.4f})"
    if old - new > rule.tolerance + rule.tie:  # a drop of exactly the tolerance (0.315 - 0.305) passes
        out[name] = old - new
        return f"{name} regressed {old:.4f} -> {new:.4f} (drop {old - new:.4f} > tolerance {rule.tolerance})"
    return None


def gate(serving: Scorecard, candidate: Scorecard, rule: GateRule | None = None) -> Verdict:
    """Compare the candidate's card with the serving model's under ``rule`` (see the module docstring)."""
    rule = rule or GateRule()
    reasons: list[str] = []
    regressions: dict[str, float] = {}
    for task, old in sorted(serving.tasks.items()):
        why = _drop(f"task:{task}", old, candidate.tasks.get(task), rule, regressions)
        reasons += [why] if why else []
    for cat, old in sorted(serving.categories.items()):
        why = _drop(f"category:{cat}", old, candidate.categories.get(cat), rule, regressions)
        reasons += [why] if why else []
    why = _drop("gold", serving.gold, candidate.gold, rule, regressions)
    reasons += [why] if why else []

    old_m, new_m = serving.value(rule.metric), candidate.value(rule.metric)
    gain = None if old_m is None or new_m is None else new_m - old_m
    improved = False
    if gain is None:
        reasons.append(f"{rule.metric}: missing on the {'serving' if old_m is None else 'candidate'} side")
    elif gain > rule.min_gain and gain > rule.tie:
        improved = True
    elif abs(gain) <= rule.tie:
        old_n, new_n = serving.new_labels, candidate.new_labels
        if (
            old_n is not None
            and new_n is not None
            and new_n - old_n > rule.min_gain
            and new_n - old_n > rule.tie
        ):
            improved = True
            reasons.append(f"{rule.metric} unchanged; new-label accuracy {old_n:.4f} -> {new_n:.4f}")
        else:
            reasons.append(f"{rule.metric} unchanged ({old_m:.4f}) and new-label accuracy did not improve")
    else:
        reasons.append(
            f"{rule.metric} did not improve: {old_m:.4f} -> {new_m:.4f} (min gain {rule.min_gain})"
        )
    promote = improved and not regressions
    if promote and gain is not None and gain > rule.tie:
        reasons.insert(0, f"{rule.metric} improved {old_m:.4f} -> {new_m:.4f}")
    return Verdict(promote=promote, reasons=reasons, regressions=regressions, gain=gain, rule=rule.to_dict())
