"""Scorecards: one model's numbers on the frozen evaluation sets, for the promotion gate.

``score_model(model, holdout, val_posts=..., gold=..., new_labels=..., policy=...)`` returns a
:class:`~ximgctx.evaluation.gate.Scorecard`; :func:`score_model_details` returns it with the counts behind
every number. Scoring the serving model and a candidate on the same posts gives two cards that
:func:`~ximgctx.evaluation.gate.gate` compares. Every number is higher-is-better, in [0, 1]:

* **tasks**: per task, accuracy on the holdout posts labeled for it (exact match for a multilabel task), from
  :func:`~ximgctx.evaluation.metrics.task_metrics` with the model's temperature and thresholds; posts without
  the task's label are masked, as everywhere in evaluation. A task no holdout post is labeled for has no
  entry (nothing to compare).
* **categories**: per moderation category of ``policy`` (the shipped default when None), the **balanced
  accuracy** (the mean of the recall on posts in the category and on posts outside it) of the category's
  decision on the holdout. The decision is the policy's own: the category's score is the reduce of its labels'
  calibrated scores (:meth:`~ximgctx.models.policy.CategoryRule.reduce_scores`, as the service computes it),
  and the category is *actioned* when that score reaches the flag threshold: the decision is at or above the
  policy's ``flag_on`` (``ModerationPolicy.flags``). A category that can never reach ``flag_on`` (a
  review-only category under ``flag_on: block``) is actioned at its review threshold instead; a category with
  no threshold at all never acts and is not scored (the details say so). A post's truth comes from its labels
  by the same category rule (:func:`~ximgctx.models.policy.category_truth`: in the category when any label
  the category reads is true); posts not labeled for the category's task, and posts without a usable image
  for an image-only task (which abstains), are left out.

  Why balanced accuracy: it judges the decision the operator actually set (the threshold), unlike AUROC,
  which ignores the operating point; and unlike plain accuracy it does not reward a model that never acts on
  a rare category (a holdout with 3% threats scores 0.97 for a model that never blocks, and 0.5 in balanced
  accuracy). With posts of one truth only, it is the recall on those (scikit-learn's definition).
* **gold** and **new_labels**: the mean over tasks of the per-task accuracy on the gold items (posts whose
  labels are known) and on the round's held-out new labels; None when none are given.

``val_posts`` refits each task's temperature and each multilabel threshold on validation first
(:func:`~ximgctx.evaluation.report.calibrate`), so that two models are compared each at its own calibration.
The model is left as it was: its temperatures and thresholds are restored afterwards unless
``keep_calibration=True``, and its training mode too. Scoring runs in eval mode without gradients, so the
same model on the same posts gives the same card (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ximgctx.data.dataset import PostDataset
from ximgctx.data.record import LoadReport, Post
from ximgctx.evaluation.gate import Scorecard
from ximgctx.evaluation.metrics import task_metrics
from ximgctx.evaluation.predict import FULL, Predictions, predict
from ximgctx.evaluation.report import calibrate
from ximgctx.models.heads import probabilities
from ximgctx.models.policy import (
    CategoryRule,
    ModerationPolicy,
    PolicyError,
    category_truth,
    default_policy_path,
)

__all__ = ["CATEGORY_METRIC", "balanced_accuracy", "score_model", "score_model_details"]

#: the metric of every category entry of a scorecard
CATEGORY_METRIC = "balanced_accuracy"

PostsLike = Sequence[Post] | str | Path


def _posts(posts: PostsLike, name: str) -> tuple[list[Post], int]:
    """The posts as a list, and how many malformed records a manifest had (skipped, the same for every
    model scored on it)."""
    if isinstance(posts, (str, Path)):
        from ximgctx.data.io import load_posts

        report = LoadReport()
        out = list(load_posts(posts, on_error="skip", report=report))
        return out, report.skipped
    rows = list(posts)
    if not all(isinstance(p, Post) for p in rows):
        raise TypeError(f"{name} must be a list of Post or a manifest path")
    return rows, 0


def _predict(model: Any, posts: list[Post], batch_size: int) -> Predictions:
    loader = DataLoader(PostDataset(posts), batch_size=batch_size, shuffle=False, collate_fn=model.processor)
    return predict(model, loader, keys=(FULL,))[FULL]


def _task_scores(model: Any, preds: Predictions) -> dict[str, dict[str, Any]]:
    """Per task: accuracy (None with no labeled post) and labeled-post count, at the model's calibration."""
    out = {}
    for spec in model.config.tasks:
        head = model.heads[spec.name]
        metrics = task_metrics(
            spec,
            preds.logits[spec.name],
            preds.targets[spec.name],
            preds.label_mask[spec.name],
            temperature=float(head.temperature),
            thresholds=head.thresholds.cpu().numpy().astype(np.float64)
            if spec.kind == "multilabel"
            else None,
        )
        out[spec.name] = {"accuracy": metrics["accuracy"], "n": metrics["n"]}
    return out


def _mean_accuracy(tasks: dict[str, dict[str, Any]]) -> float | None:
    values = [e["accuracy"] for e in tasks.values() if e["accuracy"] is not None]
    return float(np.mean(values)) if values else None


def _action_threshold(policy: ModerationPolicy, rule: CategoryRule) -> tuple[float | None, str]:
    """The score at which the category is actioned, and which decision that is (see the module docstring)."""
    if policy.flag_on == "review" and rule.review is not None:
        return rule.review, "review"
    if rule.block is not None:
        return rule.block, "block"
    return rule.review, "review"


def balanced_accuracy(truth: np.ndarray, actioned: np.ndarray) -> float:
    """Mean recall over the truths present (scikit-learn's ``balanced_accuracy_score``)."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # one truth only: sklearn warns, and returns that truth's recall
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(truth.astype(bool), actioned.astype(bool)))


def _category_scores(
    model: Any, preds: Predictions, posts: list[Post], policy: ModerationPolicy
) -> dict[str, dict[str, Any]]:
    """Per category: balanced accuracy of the policy's decision, with its counts (or why it is unscored)."""
    specs = {t.name: t for t in model.config.tasks}
    probs = {  # calibrated float32 scores, as the service computes them (Predictor.scores)
        t: probabilities(z, specs[t].kind, float(model.heads[t].temperature)).float()
        for t, z in preds.logits.items()
    }
    has_image = preds.image_mask if preds.image_mask is not None else torch.ones(len(posts), dtype=torch.bool)
    out: dict[str, dict[str, Any]] = {}
    for name, rule in policy.categories.items():
        threshold, decision = _action_threshold(policy, rule)
        if threshold is None:
            out[name] = {"value": None, "why": "the policy never acts on it (no threshold)"}
            continue
        spec = specs[rule.task]
        columns = [spec.labels.index(x) for x in rule.labels]
        scores = rule.reduce_scores(probs[rule.task].numpy().astype(np.float64)[:, columns])  # (N,)
        truth = [category_truth(p.labels.get(rule.task), spec, rule.labels) for p in posts]
        keep = np.array(
            [y is not None and (spec.source != "image" or bool(has_image[i])) for i, y in enumerate(truth)],
            dtype=bool,
        )
        y = np.array([bool(t) for t in truth], dtype=bool)[keep]
        actioned = scores[keep] >= threshold
        entry = {
            "threshold": threshold,
            "actioned_at": decision,
            "n": int(keep.sum()),
            "positives": int(y.sum()),
            "actioned": int(actioned.sum()),
            "true_positives": int((actioned & y).sum()),
            "true_negatives": int((~actioned & ~y).sum()),
        }
        entry["value"] = balanced_accuracy(y, actioned) if keep.any() else None
        out[name] = entry
    return out


def _policy(policy: ModerationPolicy | None, model: Any) -> tuple[ModerationPolicy | None, str | None]:
    """The policy to score categories with, or None and why (the default policy does not fit the model)."""
    if policy is not None:
        policy.check_tasks(model.config.tasks, source="score_model(policy=...)")
        return policy, None
    default = ModerationPolicy.from_yaml(default_policy_path())
    try:
        default.check_tasks(model.config.tasks, source="the default moderation policy")
    except PolicyError as e:
        return None, f"no categories scored: {e}; pass policy= for this model's tasks"
    return default, None


def score_model(
    model: Any,
    holdout: PostsLike,
    *,
    val_posts: PostsLike | None = None,
    gold: PostsLike | None = None,
    new_labels: PostsLike | None = None,
    policy: ModerationPolicy | None = None,
    batch_size: int = 64,
    keep_calibration: bool = False,
) -> Scorecard:
    """``model``'s :class:`Scorecard` (see the module docstring); :func:`score_model_details` also returns
    the counts behind it."""
    return score_model_details(
        model,
        holdout,
        val_posts=val_posts,
        gold=gold,
        new_labels=new_labels,
        policy=policy,
        batch_size=batch_size,
        keep_calibration=keep_calibration,
    )[0]


@torch.no_grad()
def score_model_details(
    model: Any,
    holdout: PostsLike,
    *,
    val_posts: PostsLike | None = None,
    gold: PostsLike | None = None,
    new_labels: PostsLike | None = None,
    policy: ModerationPolicy | None = None,
    batch_size: int = 64,
    keep_calibration: bool = False,
) -> tuple[Scorecard, dict[str, Any]]:
    """The :class:`Scorecard` of ``model`` (a ``ContextModel``, not wrapped) and its details.

    Args:
        holdout: the frozen holdout posts (or a manifest path): tasks and categories are scored on them.
        val_posts: validation posts; temperatures and thresholds are refit on them first.
        gold: posts whose labels are known (a queue's gold items): ``gold`` is their mean task accuracy.
        new_labels: the round's held-out new labels: ``new_labels`` is their mean task accuracy.
        policy: the moderation policy whose categories are scored; the shipped default when None (no
            categories, with the reason in the details, when the default does not fit the model's tasks).
        keep_calibration: leave the refit temperatures and thresholds on the model (else they are restored).

    Returns:
        ``(card, details)``; details hold, per task and category, the counts behind each number, the
        calibration fit, the policy's name and the skipped records of each set.
    """
    posts, skipped = _posts(holdout, "holdout")
    if not posts:
        raise ValueError("score_model: the holdout has no posts")
    use_policy, why = _policy(policy, model)
    saved = {n: (h.temperature.clone(), h.thresholds.clone()) for n, h in model.heads.items()}
    was_training = model.training
    model.eval()
    try:
        fit = None
        if val_posts is not None:
            val, _ = _posts(val_posts, "val_posts")
            fit = calibrate(model, val, batch_size=batch_size) if val else None
        preds = _predict(model, posts, batch_size)
        tasks = _task_scores(model, preds)
        categories = _category_scores(model, preds, posts, use_policy) if use_policy is not None else {}
        extra: dict[str, Any] = {}
        for name, source in (("gold", gold), ("new_labels", new_labels)):
            extra[name] = None
            if source is not None:
                rows, bad = _posts(source, name)
                scored = _task_scores(model, _predict(model, rows, batch_size)) if rows else {}
                extra[name] = {
                    "value": _mean_accuracy(scored),
                    "posts": len(rows),
                    "skipped": bad,
                    "tasks": scored,
                }
    finally:
        if not keep_calibration:
            for n, (temperature, thresholds) in saved.items():
                model.heads[n].temperature.copy_(temperature)
                model.heads[n].thresholds.copy_(thresholds)
        model.train(was_training)
    card = Scorecard(
        tasks={t: float(e["accuracy"]) for t, e in tasks.items() if e["accuracy"] is not None},
        categories={c: float(e["value"]) for c, e in categories.items() if e["value"] is not None},
        gold=None if extra["gold"] is None else extra["gold"]["value"],
        new_labels=None if extra["new_labels"] is None else extra["new_labels"]["value"],
        posts=len(posts),
    )
    details = {
        "posts": len(posts),
        "skipped_records": skipped,
        "tasks": tasks,
        "category_metric": CATEGORY_METRIC,
        "categories": categories,
        "policy": use_policy.name if use_policy is not None else None,
        "policy_note": why,
        "calibration": fit,
        "gold": extra["gold"],
        "new_labels": extra["new_labels"],
    }
    return card, details
