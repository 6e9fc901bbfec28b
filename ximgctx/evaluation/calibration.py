"""Temperature scaling, expected calibration error, and per-label decision thresholds.

* **Temperature** (Guo et al., 2017): one scalar ``T`` per task divides the logits; it is the ``T`` that
  minimises the task's own loss (cross-entropy, or binary cross-entropy for multilabel) on validation
  posts. That loss is convex in ``1/T``, so a golden-section search over ``log T`` finds it exactly,
  deterministically, without an optimizer. Argmax decisions do not change; probabilities do.
* **ECE** with equal-width bins. Multiclass: the top label's probability against whether it is right.
  Multilabel: every (post, label) probability against whether the label is present, so a score of 0.8
  should mean "present 80% of the time", which is how moderation thresholds read it.
* **Thresholds** per label of a multilabel task, chosen on validation probabilities (after temperature) to
  maximise that label's F1 (or its accuracy); ties go to the threshold nearest 0.5.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ximgctx.config import TaskSpec
from ximgctx.models.heads import masked_task_loss

__all__ = ["THRESHOLD_OBJECTIVES", "expected_calibration_error", "fit_temperature", "fit_thresholds"]

THRESHOLD_OBJECTIVES = ("f1", "accuracy")
_T_MIN, _T_MAX = 0.05, 20.0


def fit_temperature(
    spec: TaskSpec, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, iterations: int = 80
) -> float:
    """The temperature minimising the task's loss on these (validation) posts; 1.0 with no labeled post."""
    m = mask.bool()
    if not bool(m.any()):
        return 1.0
    z, t = logits[m].double(), targets[m].double()
    ones = torch.ones(z.shape[0], dtype=torch.bool)

    def loss(log_t: float) -> float:
        return float(masked_task_loss(z / math.exp(log_t), t, ones, spec.kind))

    lo, hi = math.log(_T_MIN), math.log(_T_MAX)
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    best = (lo + hi) / 2.0
    return float(math.exp(best)) if loss(best) <= loss(0.0) else 1.0


def expected_calibration_error(
    spec: TaskSpec, probs: np.ndarray, truth: np.ndarray, n_bins: int = 15
) -> tuple[float | None, list[dict[str, Any]]]:
    """ECE and the reliability-diagram bins ``[{lo, hi, count, confidence, accuracy}]``.

    Args:
        probs: (M, C) probabilities of the labeled posts.
        truth: class ids (M,) for multiclass, a 0/1 matrix (M, C) for multilabel.
    """
    if len(probs) == 0:
        return None, []
    if spec.kind == "multiclass":
        conf = probs.max(-1)
        hit = (probs.argmax(-1) == truth).astype(np.float64)
    else:
        conf = probs.reshape(-1)
        hit = truth.reshape(-1).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for k in range(n_bins):
        sel = which == k
        count = int(sel.sum())
        if count == 0:
            bins.append(
                {
                    "lo": float(edges[k]),
                    "hi": float(edges[k + 1]),
                    "count": 0,
                    "confidence": None,
                    "accuracy": None,
                }
            )
            continue
        c, a = float(conf[sel].mean()), float(hit[sel].mean())
        ece += count / len(conf) * abs(c - a)
        bins.append(
            {"lo": float(edges[k]), "hi": float(edges[k + 1]), "count": count, "confidence": c, "accuracy": a}
        )
    return float(ece), bins


def fit_thresholds(probs: np.ndarray, truth: np.ndarray, objective: str = "f1") -> np.ndarray:
    """Per-label thresholds (C,) for a multilabel task from validation probabilities (M, C) and 0/1 truth."""
    if objective not in THRESHOLD_OBJECTIVES:
        raise ValueError(
            f"threshold objective must be one of {list(THRESHOLD_OBJECTIVES)}, got {objective!r}"
        )
    n, c = probs.shape
    out = np.full(c, 0.5)
    for j in range(c):
        y, p = truth[:, j].astype(bool), probs[:, j]
        if n == 0 or y.all() or not y.any():
            continue  # nothing to learn a threshold from: keep 0.5
        values = np.unique(p)
        cands = np.concatenate([[0.5], (values[1:] + values[:-1]) / 2.0 if len(values) > 1 else values])
        best, best_score = 0.5, -1.0
        for thr in cands:
            pred = p >= thr
            if objective == "f1":
                tp = float((pred & y).sum())
                score = 2 * tp / max(float(pred.sum() + y.sum()), 1.0)
            else:
                score = float((pred == y).mean())
            if score > best_score + 1e-12 or (
                abs(score - best_score) <= 1e-12 and abs(thr - 0.5) < abs(best - 0.5)
            ):
                best, best_score = float(thr), score
        out[j] = best
    return out
