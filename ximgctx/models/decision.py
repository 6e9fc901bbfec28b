"""The label decision rule, in one place: argmax for a multiclass task, score >= threshold for a multilabel
one.

Evaluation (metrics) and inference (the labels a prediction names) both decide through :func:`decide`, so
the labels a model reports are exactly the ones its metrics count.
"""

from __future__ import annotations

import numpy as np

from ximgctx.config import TaskSpec

__all__ = ["decide", "decided_labels"]


def decide(spec: TaskSpec, probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Decisions: class ids (M,) by argmax, or a 0/1 matrix (M, C) by per-label thresholds (default 0.5).

    A multilabel label is chosen when its score is ``>=`` its threshold (a score equal to the threshold is
    in).
    """
    if spec.kind == "multiclass":
        return probs.argmax(-1)
    thr = np.full(probs.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    return (probs >= thr[None, :]).astype(np.int64)


def decided_labels(
    spec: TaskSpec, probs: np.ndarray, thresholds: np.ndarray | None = None
) -> list[list[str]]:
    """:func:`decide` as label names per post: ``[[label, ...], ...]`` for probabilities (M, C)."""
    chosen = decide(spec, probs, thresholds)
    if spec.kind == "multiclass":
        return [[spec.labels[int(c)]] for c in chosen]
    return [[lab for lab, on in zip(spec.labels, row, strict=True) if on] for row in chosen]
