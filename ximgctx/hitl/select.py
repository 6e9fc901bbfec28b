"""Choosing what to label next: uncertainty sampling and uncertainty-weighted diverse batches.

``select_for_labeling(predictor, pool, k, strategy=...)`` returns k distinct posts from ``pool``, none of
them already labeled, most useful first:

- ``entropy``: the k posts with the highest predictive entropy (normalised to [0, 1] per task: divided by
  log C for multiclass, the mean binary entropy in bits over labels for multilabel).
- ``margin``: the k posts with the smallest margin: 1 - (p_top1 - p_top2) for multiclass, 1 - |2p - 1|
  averaged over labels for multilabel.
- ``mc_dropout``: BALD, the mutual information between the prediction and the weights, estimated from
  ``mc_samples`` forward passes with the fusion module's dropout switched on (Gal et al., 2017). Models
  trained with ``fusion.dropout = 0`` have no dropout to sample from; their dropout layers are run at
  ``mc_dropout_p`` (default 0.1) for these passes, and restored afterwards.
- ``diverse``: a batch that is uncertain *and* spread out, never k near-duplicates. Over the L2-normalised
  fused embeddings, the first post is the most uncertain one and each next one maximises
  entropy x squared distance to the nearest post already chosen: the weights of BADGE's k-means++ seeding
  (Ash et al., 2020, with the entropy standing in for the gradient norm), taken greedily rather than
  sampled. Sampling them, as k-means++ does, put a near-duplicate of an already chosen post into 4 of 6
  batches (seeds 0-5) on the test pool (8 posts x 4 near-copies, k=6); the greedy choice takes one only
  when nothing farther is left.

Scores are averaged over tasks unless ``task`` names one. With a predictor that has a label memory
(``Predictor(model, memory=...)``), uncertainty is measured on the memory-blended scores: posts that people
have already corrected nearby become less uncertain.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ximgctx.data.io import load_posts
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError

if TYPE_CHECKING:
    from ximgctx.inference.predictor import Predictor
    from ximgctx.models.context_model import ContextModel

__all__ = [
    "STRATEGIES",
    "Selection",
    "choose",
    "dropout_on",
    "pairwise_distance",
    "select_for_labeling",
    "uncertainty",
]

STRATEGIES = ("entropy", "margin", "mc_dropout", "diverse", "random")
_EPS = 1e-12


@dataclass
class Selection:
    """One post chosen for labeling."""

    id: str
    rank: int  # 0 = the first to send to labelers
    score: float  # the strategy's uncertainty score (entropy, 1 - margin, or BALD), in [0, 1] except BALD
    per_task: dict[str, float] = field(default_factory=dict)  # task -> the same score on that task alone

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rank": self.rank,
            "score": round(self.score, 6),
            "per_task": {k: round(v, 6) for k, v in self.per_task.items()},
        }


# ------------------------------------------------------------------------------------------- scores


def _entropy(p: np.ndarray, kind: str) -> np.ndarray:
    """Normalised entropy per row of (N, C) probabilities -> (N,) in [0, 1]."""
    p = np.clip(p, _EPS, 1.0)
    if kind == "multiclass":
        return -(p * np.log(p)).sum(-1) / math.log(max(p.shape[-1], 2))
    q = np.clip(1.0 - p, _EPS, 1.0)
    return (-(p * np.log2(p)) - q * np.log2(q)).mean(-1)


def _margin(p: np.ndarray, kind: str) -> np.ndarray:
    """1 - margin per row -> (N,) in [0, 1]; 1 is a coin toss."""
    if kind == "multiclass":
        top = np.sort(p, axis=-1)[:, ::-1]
        return 1.0 - (top[:, 0] - top[:, 1])
    return 1.0 - np.abs(2.0 * p - 1.0).mean(-1)


def uncertainty(
    scores: dict[str, np.ndarray], kinds: dict[str, str], strategy: str = "entropy"
) -> dict[str, np.ndarray]:
    """Per task, the uncertainty of each post from its (N, C) calibrated scores."""
    fn = _margin if strategy == "margin" else _entropy
    return {t: fn(p, kinds[t]) for t, p in scores.items()}


def _bald(samples: list[dict[str, np.ndarray]], kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """Mutual information per task: H(mean prediction) - mean H(prediction), from (S x) (N, C) samples."""
    out = {}
    for t, kind in kinds.items():
        stack = np.stack([s[t] for s in samples])  # (S, N, C)
        mean_h = np.mean([_entropy(s, kind) for s in stack], axis=0)
        out[t] = np.maximum(_entropy(stack.mean(0), kind) - mean_h, 0.0)
    return out


# ------------------------------------------------------------------------------------------- passes


def _as_predictor(predictor: Predictor | ContextModel) -> Predictor:
    """A ContextModel is run through a CPU :class:`Predictor`; a Predictor is used as it is."""
    from ximgctx.inference.predictor import Predictor
    from ximgctx.models.context_model import ContextModel

    return Predictor(predictor, device="cpu") if isinstance(predictor, ContextModel) else predictor


def _scores_and_embeddings(
    base: Predictor, posts: Sequence[Post], batch_size: int | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Calibrated scores (memory-blended when the predictor has a memory) and unit-norm fused embeddings."""
    scores: dict[str, list[np.ndarray]] = {t: [] for t in base.task_names}
    emb = []
    for result in base.iter_batches(posts, batch_size):
        batch_scores = result.scores  # Predictor.scores: blended with its memory, if any
        fused = F.normalize(result.output.fused.float(), dim=-1)  # (B, H)
        for t in base.task_names:
            scores[t].append(batch_scores[t].float().cpu().numpy())
        emb.append(fused.cpu().numpy())
    dim = base.model.config.fusion.hidden_dim
    return (
        {t: np.concatenate(v) if v else np.zeros((0, 1)) for t, v in scores.items()},
        np.concatenate(emb) if emb else np.zeros((0, dim), dtype=np.float32),
    )


@contextlib.contextmanager
def dropout_on(model: ContextModel, p: float | None = None) -> Iterator[int]:
    """Switch on the dropout layers of ``model.fusion`` (everything else stays in eval mode), at their own
    rate or at ``p`` where that rate is 0 (or at ``p`` everywhere when ``p`` is given and larger). Yields
    how many layers were switched; restores rates and modes on exit."""
    saved: list[tuple[nn.Module, str, float, bool]] = []
    try:
        for m in model.fusion.modules():
            if isinstance(m, nn.Dropout):
                saved.append((m, "p", m.p, m.training))
                m.p = max(m.p, p or 0.0)
                m.train()
            elif isinstance(m, nn.MultiheadAttention):
                saved.append((m, "dropout", m.dropout, m.training))
                m.dropout = max(m.dropout, p or 0.0)
                m.train()
        yield sum(1 for m, attr, *_ in saved if getattr(m, attr) > 0)
    finally:
        for m, attr, value, training in saved:
            setattr(m, attr, value)
            m.train(training)


def _mc_samples(
    base: Predictor, posts: Sequence[Post], samples: int, p: float, seed: int, batch_size: int | None
) -> list[dict[str, np.ndarray]]:
    memory = base.memory
    out: list[dict[str, list[np.ndarray]]] = [{t: [] for t in base.task_names} for _ in range(samples)]
    size = batch_size or base.batch_size
    with torch.random.fork_rng(devices=[]), dropout_on(base.model, p) as n_active:
        if n_active == 0:
            raise ConfigError(
                "mc_dropout: the model's fusion module has no dropout layers to sample from; "
                "use another strategy"
            )
        torch.manual_seed(seed)
        model = base.model
        for start in range(0, len(posts), size):
            batch = base.collate(posts[start : start + size])
            with torch.inference_mode(), base.autocast():
                # ContextModel.forward split in two: the encoder has no sampled dropout, so it runs once
                # and only fusion + heads run `samples` times
                emb = model.encode(batch)
                for s in range(samples):
                    fused = model.fusion(emb.image, emb.text, emb.replies, emb.reply_mask).fused  # (B, H)
                    sc = {t: v.float() for t, v in model.scores(model.heads(fused, emb.image)).items()}
                    if memory is not None:
                        sc = memory.blend(sc, fused)
                    for t in base.task_names:
                        out[s][t].append(sc[t].cpu().numpy())
    return [{t: np.concatenate(v) for t, v in o.items()} for o in out]


# ------------------------------------------------------------------------------------------ batches


def _weighted_farthest(emb: np.ndarray, weight: np.ndarray, k: int) -> list[int]:
    """Greedy k-means++-style seeding over rows of ``emb`` (N, H): the heaviest row first, then each time the
    row maximising weight x squared distance to the nearest chosen row (ties: the heavier, then the first)."""
    chosen = [int(np.argmax(weight))]
    taken = np.zeros(len(emb), dtype=bool)
    taken[chosen[0]] = True
    d2 = ((emb - emb[chosen[0]]) ** 2).sum(-1)  # (N,)
    for _ in range(1, k):
        score = np.where(taken, -np.inf, weight * d2)  # (N,)
        best = np.flatnonzero(score == score.max())
        i = int(best[np.argmax(weight[best])])
        chosen.append(i)
        taken[i] = True
        d2 = np.minimum(d2, ((emb - emb[i]) ** 2).sum(-1))
    return chosen


def pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean Euclidean distance between distinct rows (of unit-norm embeddings: sqrt(2 - 2 cos))."""
    n = len(embeddings)
    if n < 2:
        return 0.0
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    d = torch.cdist(x, x)  # (N, N)
    return float(d.sum() / (n * (n - 1)))


def select_for_labeling(
    predictor: Predictor | ContextModel,
    pool: Sequence[Post] | str | Path,
    k: int,
    strategy: str = "entropy",
    labeled_ids: Iterable[str] = (),
    task: str | None = None,
    seed: int = 0,
    *,
    mc_samples: int = 8,
    mc_dropout_p: float = 0.1,
    batch_size: int | None = None,
) -> list[Selection]:
    """Choose ``k`` posts of ``pool`` to send to labelers.

    Args:
        predictor: a :class:`~ximgctx.Predictor` (with or without a label memory), or a
            :class:`~ximgctx.ContextModel` (run on the CPU).
        pool: candidate posts, or a manifest path. Posts whose id repeats are considered once.
        k: how many to choose; fewer when fewer candidates are left.
        strategy: one of :data:`STRATEGIES` (see the module docstring); ``random`` is the baseline.
        labeled_ids: posts already labeled; never chosen.
        task: measure uncertainty on this task only (default: the mean over the model's tasks).
        seed: seeds ``random`` and the ``mc_dropout`` masks (``diverse`` and the others are deterministic).
        mc_samples: stochastic forward passes for ``mc_dropout``.
        mc_dropout_p: dropout rate for ``mc_dropout`` where the model's own is lower (0 when trained without).
        batch_size: posts per forward pass (the predictor's default when None).

    Returns:
        Up to ``k`` :class:`Selection` objects, distinct, in the order they should be labeled.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if k < 0:
        raise ConfigError(f"k must be >= 0, got {k!r}")
    if mc_samples < 2 and strategy == "mc_dropout":
        raise ConfigError(f"mc_samples must be >= 2, got {mc_samples!r}")
    posts = load_posts(pool) if isinstance(pool, (str, Path)) else pool
    labeled = set(labeled_ids)
    seen: set[str] = set()
    candidates = []
    for post in posts:
        if post.id not in labeled and post.id not in seen:
            seen.add(post.id)
            candidates.append(post)
    k = min(k, len(candidates))
    if k == 0:
        return []
    if strategy == "random":
        order, total, per_task = choose("random", k, n=len(candidates), rng=np.random.default_rng(seed))
        return [Selection(candidates[i].id, r, 0.0) for r, i in enumerate(order)]

    base = _as_predictor(predictor)
    kinds: dict[str, str] = {s.name: s.kind for s in base.model.config.tasks}
    if task is not None and task not in kinds:
        raise ConfigError(f"task must be one of {sorted(kinds)}, got {task!r}")
    kinds = {t: kinds[t] for t in ([task] if task is not None else list(kinds))}

    if strategy == "mc_dropout":
        samples = _mc_samples(base, candidates, mc_samples, mc_dropout_p, seed, batch_size)
        order, total, per_task = choose(strategy, k, kinds=kinds, samples=samples)
    else:
        scores, emb = _scores_and_embeddings(base, candidates, batch_size)
        order, total, per_task = choose(strategy, k, kinds=kinds, scores=scores, embeddings=emb)
    return [
        Selection(candidates[i].id, r, float(total[i]), {t: float(per_task[t][i]) for t in kinds})
        for r, i in enumerate(order)
    ]


def choose(
    strategy: str,
    k: int,
    *,
    kinds: dict[str, str] | None = None,
    scores: dict[str, np.ndarray] | None = None,
    embeddings: np.ndarray | None = None,
    samples: list[dict[str, np.ndarray]] | None = None,
    n: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[list[int], np.ndarray, dict[str, np.ndarray]]:
    """The selection itself, on arrays: which rows to label, in order.

    Args:
        strategy: one of :data:`STRATEGIES`.
        k: how many rows (at most the number of rows).
        kinds: task -> multiclass | multilabel, for the tasks to score.
        scores: task -> (N, C) calibrated scores (entropy, margin, diverse).
        embeddings: (N, H) unit-norm fused embeddings (diverse).
        samples: per stochastic pass, task -> (N, C) scores (mc_dropout).
        n: number of rows (random).
        rng: random generator (random).

    Returns:
        (chosen row indices in order, (N,) score per row averaged over tasks, task -> (N,) score).
    """
    if strategy == "random":
        if n is None or rng is None:
            raise ConfigError("choose('random') needs n and rng")
        k = min(k, n)
        return [int(i) for i in rng.choice(n, size=k, replace=False)], np.zeros(n), {}
    if kinds is None:
        raise ConfigError(f"choose({strategy!r}) needs the task kinds")
    if strategy == "mc_dropout":
        if samples is None:
            raise ConfigError("choose('mc_dropout') needs the stochastic passes' scores")
        per_task = _bald(samples, kinds)
    else:
        if scores is None:
            raise ConfigError(f"choose({strategy!r}) needs the scores")
        per_task = uncertainty(
            {t: scores[t] for t in kinds}, kinds, "margin" if strategy == "margin" else "entropy"
        )
    total = np.mean([per_task[t] for t in kinds], axis=0)  # (N,)
    k = min(k, len(total))
    if k == 0:
        return [], total, per_task
    if strategy == "diverse":
        if embeddings is None:
            raise ConfigError("choose('diverse') needs the fused embeddings")
        order = _weighted_farthest(
            np.asarray(embeddings, dtype=np.float64), total.astype(np.float64) + _EPS, k
        )
    else:
        order = [int(i) for i in np.argsort(-total, kind="stable")[:k]]
    return order, total, per_task
