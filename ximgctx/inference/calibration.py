"""Choosing moderation thresholds on a labeled validation set.

For each category, a validation post is *positive* when its human labels for the category's task
include one of the category's labels (for a ``{label: probability}`` distribution: when the category's
probability, summed for a multiclass task and maxed for a multilabel one, is at least 0.5). Posts not
labeled for the task are left out of that category.

Thresholds use the decision rule ``score >= threshold`` and are always one of the observed scores:

* ``target_precision=p``: the **lowest** threshold whose precision on the set is at least ``p`` (the
  most recall among operating points that meet the target).
* ``target_fpr=f``: the lowest threshold whose false-positive rate is at most ``f`` (FPR only falls as
  the threshold rises, so this is also the point of most recall).
* ``review_recall=r``: the **highest** review threshold that still sends at least a share ``r`` of the
  positives to review or block; capped at the block threshold (an empty band when it is above).

When no threshold meets a block target, ``block`` becomes null (never block automatically, review only)
and the report says so: automatic action without the precision asked for is the wrong failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ximgctx.data.record import Post
from ximgctx.errors import ConfigError, InputError
from ximgctx.inference.moderation import Moderator
from ximgctx.models.policy import CategoryRule, ModerationPolicy, category_truth

logger = logging.getLogger(__name__)

__all__ = [
    "OperatingPoint",
    "calibrate_policy",
    "category_truth",
    "choose_block_threshold",
    "choose_review_threshold",
    "operating_point",
]

#: Below this many positives (or negatives) a chosen threshold is reported as unreliable.
MIN_SUPPORT = 20


@dataclass
class OperatingPoint:
    """What a threshold does on the validation set."""

    threshold: float | None  # None: no threshold met the target
    target: str  # e.g. "precision>=0.9"
    met: bool
    flagged: int = 0  # posts with score >= threshold
    true_positives: int = 0
    positives: int = 0
    negatives: int = 0
    precision: float | None = None
    recall: float | None = None
    fpr: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (round(v, 6) if isinstance(v, float) and k != "threshold" else v)
            for k, v in self.__dict__.items()
        }


def _curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distinct thresholds (descending) with TP and FP counts of ``score >= threshold``."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positives[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, dtype=bool)  # end of each tie group
    return s[last], tp[last], fp[last]


def operating_point(
    scores: np.ndarray,
    positives: np.ndarray,
    threshold: float | None,
    target: str = "",
    met: bool = True,
    note: str = "",
) -> OperatingPoint:
    """Precision, recall and FPR of ``score >= threshold`` (nothing flagged when threshold is None)."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    p, n = int(positives.sum()), int((~positives).sum())
    flagged = np.zeros_like(positives) if threshold is None else scores >= threshold
    tp, fp = int((flagged & positives).sum()), int((flagged & ~positives).sum())
    return OperatingPoint(
        threshold=threshold,
        target=target,
        met=met,
        flagged=tp + fp,
        true_positives=tp,
        positives=p,
        negatives=n,
        precision=tp / (tp + fp) if tp + fp else None,
        recall=tp / p if p else None,
        fpr=fp / n if n else None,
        note=note,
    )


def choose_block_threshold(
    scores: np.ndarray,
    positives: np.ndarray,
    *,
    target_precision: float | None = None,
    target_fpr: float | None = None,
) -> OperatingPoint:
    """The lowest observed score meeting a precision or false-positive-rate target (see module docstring)."""
    if (target_precision is None) == (target_fpr is None):
        raise ConfigError("give exactly one of target_precision and target_fpr")
    value = target_precision if target_precision is not None else target_fpr
    if value is None or not 0.0 <= value <= 1.0:
        raise ConfigError(f"the target must be in [0, 1], got {value!r}")
    target = f"precision>={target_precision}" if target_precision is not None else f"fpr<={target_fpr}"
    t, tp, fp = _curve(scores, positives)
    p = int(np.asarray(positives, dtype=bool).sum())
    n = len(positives) - p
    if target_precision is not None:
        if p == 0:
            return operating_point(scores, positives, None, target, False, "no positives in the set")
        ok = tp / (tp + fp) >= target_precision
    else:
        if n == 0:
            return operating_point(scores, positives, None, target, False, "no negatives in the set")
        ok = fp / n <= value  # value is target_fpr here
    if not ok.any():
        return operating_point(
            scores,
            positives,
            None,
            target,
            False,
            "no threshold meets the target; block disabled (review only)",
        )
    i = int(np.flatnonzero(ok)[-1])  # lowest threshold (thresholds descend)
    note = f"fewer than {MIN_SUPPORT} positives or negatives: unreliable" if min(p, n) < MIN_SUPPORT else ""
    return operating_point(scores, positives, float(t[i]), target, True, note)


def choose_review_threshold(
    scores: np.ndarray, positives: np.ndarray, *, target_recall: float
) -> OperatingPoint:
    """The highest observed score whose ``score >= threshold`` keeps at least ``target_recall`` of
    positives."""
    if not 0.0 < target_recall <= 1.0:
        raise ConfigError(f"target_recall must be in (0, 1], got {target_recall!r}")
    target = f"recall>={target_recall}"
    t, tp, _ = _curve(scores, positives)
    p = int(np.asarray(positives, dtype=bool).sum())
    if p == 0:
        return operating_point(scores, positives, None, target, False, "no positives in the set")
    ok = tp / p >= target_recall
    i = int(np.flatnonzero(ok)[0])  # recall reaches 1 at the lowest threshold, so some i exists
    return operating_point(scores, positives, float(t[i]), target, True)


def _labeled_scores(
    moderator: Moderator, posts: Iterable[Post], names: list[str], batch_size: int | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Per category, the scores (as decisions compare them) and truths of the posts labeled for its task;
    a category whose task reads the image skips posts without a usable image (the task abstains there).
    Returns (scores, truths, posts read)."""
    policy = moderator.policy
    specs = {t.name: t for t in moderator.predictor.model.config.tasks}
    scores: dict[str, list[float]] = {c: [] for c in names}
    truth: dict[str, list[bool]] = {c: [] for c in names}
    n_posts = 0
    for result in moderator.predictor.iter_batches(posts, batch_size):
        cat = moderator.category_scores(result.scores)  # category -> (B,), the scores decisions compare
        has_image = result.batch.image_mask.cpu().tolist()  # (B,)
        for i, post in enumerate(result.posts):
            n_posts += 1
            for c in names:
                rule = policy.categories[c]
                if specs[rule.task].source == "image" and not has_image[i]:
                    continue
                y = category_truth(post.labels.get(rule.task), specs[rule.task], rule.labels)
                if y is not None:
                    scores[c].append(float(cat[c][i]))
                    truth[c].append(y)
    arrays = {c: np.asarray(v) for c, v in scores.items()}
    return arrays, {c: np.asarray(v, dtype=bool) for c, v in truth.items()}, n_posts


def _calibrate_rule(
    rule: CategoryRule,
    s: np.ndarray,
    y: np.ndarray,
    *,
    target_precision: float | None,
    target_fpr: float | None,
    review_recall: float | None,
) -> tuple[CategoryRule, dict[str, Any]]:
    """One category's new thresholds on scores ``s`` and truths ``y``, and its report entry."""
    entry: dict[str, Any] = {"labeled_posts": int(len(s))}
    block, review = rule.block, rule.review
    if rule.block is None and (target_precision is not None or target_fpr is not None):
        # a review-only category (block: null) stays review-only: a block target never adds blocking
        entry["block_note"] = "review-only category: block stays null"
    elif target_precision is not None or target_fpr is not None:
        point = choose_block_threshold(s, y, target_precision=target_precision, target_fpr=target_fpr)
        block = point.threshold
        entry["block"] = point.to_dict()
    if review_recall is not None:
        point = choose_review_threshold(s, y, target_recall=review_recall)
        review = point.threshold
        if review is not None and block is not None and review > block:
            point = operating_point(
                s,
                y,
                block,
                point.target,
                True,
                "the recall target is met above the block threshold: empty review band",
            )
            review = block
        entry["review"] = point.to_dict()
    elif review is not None and block is not None and review > block:
        review = block  # keep the policy valid when a new block threshold falls under the old band
        entry["review_note"] = "review threshold lowered to the new block threshold"
    final = operating_point(s, y, block)
    entry["final"] = {
        "block": block,
        "review": review,
        "block_precision": final.precision,
        "block_recall": final.recall,
        "block_fpr": final.fpr,
    }
    calibration = {k: v for k, v in entry.items() if k in ("block", "review")}
    calibration["labeled_posts"] = int(len(s))
    return replace(rule, block=block, review=review, calibration=calibration), entry


def calibrate_policy(
    moderator: Moderator,
    posts: Iterable[Post],
    *,
    target_precision: float | None = None,
    target_fpr: float | None = None,
    review_recall: float | None = None,
    categories: list[str] | None = None,
    batch_size: int | None = None,
) -> tuple[ModerationPolicy, dict[str, Any]]:
    """Choose thresholds for ``moderator``'s policy on labeled ``posts``.

    Args:
        categories: the categories to calibrate; by default every category with a block or review
            threshold (a score-only category, both null, is never turned into an actionable one unasked).

    Returns:
        The updated policy (categories not chosen keep their thresholds; each calibrated category records
        how in its ``calibration`` field) and a report per category (the operating points reached).
    """
    policy = moderator.policy
    if categories is None:  # score-only categories (no thresholds at all) stay score-only
        categories = [
            c for c, rule in policy.categories.items() if rule.block is not None or rule.review is not None
        ]
    names = list(categories)
    unknown = [c for c in names if c not in policy.categories]
    if unknown:
        raise InputError(f"unknown categories {unknown}; the policy has {list(policy.categories)}")
    scores, truth, n_posts = _labeled_scores(moderator, posts, names, batch_size)
    new_categories: dict[str, CategoryRule] = dict(policy.categories)
    report: dict[str, Any] = {"posts": n_posts, "categories": {}}
    for c in names:
        new_categories[c], entry = _calibrate_rule(
            policy.categories[c],
            scores[c],
            truth[c],
            target_precision=target_precision,
            target_fpr=target_fpr,
            review_recall=review_recall,
        )
        report["categories"][c] = entry
        for part in ("block", "review"):
            if part in entry and (not entry[part]["met"] or entry[part]["note"]):
                logger.warning(
                    "category %r, %s threshold: %s", c, part, entry[part]["note"] or "target not met"
                )
    return replace(policy, categories=new_categories), report
