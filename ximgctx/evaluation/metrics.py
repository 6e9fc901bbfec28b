"""Per-task metrics from logits and labels (scikit-learn does the counting).

Multiclass: accuracy, macro-F1, one-vs-rest AUROC per label, confusion matrix.
Multilabel: exact-match accuracy (every label of the post right), micro- and macro-F1, mAP (macro average
precision over labels that occur), AUROC and average precision per label, per-label accuracy.
Only posts labeled for the task count; soft labels are read as their argmax (multiclass) or ``>= 0.5``
(multilabel). A label that never occurs (or always occurs) has no AUROC: it is ``None``, not a made-up 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from ximgctx.config import TaskSpec
from ximgctx.models.decision import decide
from ximgctx.models.heads import masked_task_loss, probabilities

__all__ = ["decide", "label_arrays", "task_loss", "task_metrics"]


def label_arrays(
    spec: TaskSpec, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (M, C) and true labels of the M labeled posts: class ids (M,) or a 0/1 matrix (M, C)."""
    m = mask.bool()
    probs = probabilities(logits[m].float(), spec.kind, temperature).numpy()
    t = targets[m].float()
    truth = t.argmax(-1).numpy() if spec.kind == "multiclass" else (t >= 0.5).numpy().astype(np.int64)
    return probs, truth


def _per_label(fn: Any, truth: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for c, name in enumerate(labels):
        y = truth[:, c]
        out[name] = float(fn(y, scores[:, c])) if 0 < y.sum() < len(y) else None
    return out


def task_loss(spec: TaskSpec, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    """The training loss of this task over these posts (the same masked loss the model trains with)."""
    return float(masked_task_loss(logits.float(), targets.float(), mask.bool(), spec.kind))


def task_metrics(
    spec: TaskSpec,
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    thresholds: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every metric of one task. ``accuracy`` is exact-match accuracy for a multilabel task."""
    probs, truth = label_arrays(spec, logits, targets, mask, temperature)
    n = int(len(truth))
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return {**out, "accuracy": None}
    pred = decide(spec, probs, thresholds)
    labels = spec.labels
    if spec.kind == "multiclass":
        onehot = np.eye(len(labels), dtype=np.int64)[truth]  # (M, C)
        out["accuracy"] = float((pred == truth).mean())
        out["macro_f1"] = float(
            f1_score(truth, pred, labels=list(range(len(labels))), average="macro", zero_division=0)
        )
        out["auroc"] = _per_label(roc_auc_score, onehot, probs, labels)
        out["confusion"] = confusion_matrix(truth, pred, labels=list(range(len(labels)))).tolist()
    else:
        out["accuracy"] = float((pred == truth).all(axis=1).mean())
        out["label_accuracy"] = dict(
            zip(labels, (pred == truth).mean(axis=0).astype(float).tolist(), strict=True)
        )
        out["micro_f1"] = float(f1_score(truth, pred, average="micro", zero_division=0))
        out["macro_f1"] = float(f1_score(truth, pred, average="macro", zero_division=0))
        ap = _per_label(average_precision_score, truth, probs, labels)
        present = [v for v in ap.values() if v is not None]
        out["map"] = float(np.mean(present)) if present else None
        out["ap"] = ap
        out["auroc"] = _per_label(roc_auc_score, truth, probs, labels)
        out["label_confusion"] = {
            name: confusion_matrix(truth[:, c], pred[:, c], labels=[0, 1]).tolist()
            for c, name in enumerate(labels)
        }  # [[true negatives, false positives], [false negatives, true positives]] per label
        out["support"] = dict(zip(labels, truth.sum(axis=0).astype(int).tolist(), strict=True))
    return out
