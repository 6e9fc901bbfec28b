"""From many labelers' noisy votes to training labels, with per-labeler reliability (crowd-kit).

``aggregate_votes(votes, method=...)`` aggregates each task separately:

- ``majority``: crowd-kit ``MajorityVote``; a labeler's reliability is their agreement with the majority.
- ``dawid_skene``: crowd-kit Dawid–Skene; the label is the posterior's argmax and a labeler's reliability is
  their estimated probability of answering correctly.
- ``soft``: the same Dawid–Skene fit, but each post keeps the posterior ``{label: probability}``, which the
  soft-label loss reads directly.

Dawid–Skene comes in two models (``ds_model``). ``one_coin`` (crowd-kit ``OneCoinDawidSkene``, the default)
gives every labeler one accuracy; ``full`` (``DawidSkene``) a K x K confusion matrix each, which can model
systematic confusions but needs many votes per labeler. With many people each labeling a few posts, its
matrices are fitted to noise: on simulated 3-class votes (1,000 posts, 100 labelers 70% accurate, 20% of them
spammers, 3 votes a post, 8 seeds) full Dawid–Skene was 6.6 points *below* majority vote on average, one-coin
level with it; with 10-20 labelers and 5 votes a post, one-coin gained 2-6 points over majority vote on every
seed.

**Ties** (the tie rule, deliberate): a post's votes on a task are *tied* when the most-voted labels have
the same count (1-1, 2-2-1, ...); on a multilabel task, when a label was ticked by exactly half of the post's
labelers.

- A hard label is never picked by label order or by chance. ``majority``: a tied task is *unresolved* for
  that post: it gets no label, ``AggregatedPost.unresolved`` names it, and the post needs another vote
  (``queue export`` leaves out a post with no label left). ``dawid_skene`` weighs the votes by the labelers'
  estimated reliability, so a tie of counts between labelers of different reliability is decided by the fit
  (that is what the model is for); only a tie of the posterior itself (equal top probabilities, or a
  multilabel label at exactly 0.5) leaves the task unresolved.
- ``soft`` keeps a tie of counts as it is: the post's distribution is the share of its votes per label
  (``{a: 0.5, b: 0.5}`` for a 1-1 tie), and a tied multilabel label gets probability 0.5, instead of a
  posterior that a few votes per labeler would tip to one side (or, for a multilabel label ticked by one
  of two labelers, push towards 0 for both labels).

Multilabel tasks are aggregated label by label as binary tasks (binary relevance), each with the same
aggregator; a post's label set is every label whose posterior is at least 0.5, its soft label the per-label
probabilities. The loop over labels is written here rather than through crowd-kit's ``BinaryRelevance``:
that class returns label sets only (the posteriors stay inside its per-label aggregators), knows only labels
that some vote ticked, and its ``aggregators_`` dict is one class attribute shared by all its instances (in
crowd-kit 1.4.2), so reading posteriors from it after a second aggregation (another task) would find both's.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from ximgctx._extras import missing_extra
from ximgctx.data.record import LabelValue, Post
from ximgctx.errors import ConfigError
from ximgctx.hitl.votes import BadVote, Vote, VoteSet, load_tasks, read_votes

_T = TypeVar("_T")

__all__ = [
    "DS_MODELS",
    "METHODS",
    "AggregatedPost",
    "AggregationResult",
    "LabelerReport",
    "aggregate_votes",
    "soft_to_hard",
]

METHODS = ("majority", "dawid_skene", "soft")
DS_MODELS = ("one_coin", "full")
_DIGITS = 6  # probabilities written to JSON are rounded to this many decimals


@dataclass
class AggregatedPost:
    """One post's aggregated labels."""

    id: str
    labels: dict[str, LabelValue]  # task -> label | [labels] | {label: probability}
    agreement: dict[str, float]  # task -> share of votes agreeing with the aggregate (Jaccard for multilabel)
    votes: dict[str, int]  # task -> number of votes
    unresolved: list[str] = field(default_factory=list)  # tasks whose votes tie (hard methods): no label

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "labels": self.labels, "agreement": self.agreement, "votes": self.votes}
        if self.unresolved:
            out["unresolved"] = list(self.unresolved)
        return out


@dataclass
class LabelerReport:
    """How much one labeler can be trusted."""

    labeler: str
    reliability: float  # estimated probability of a correct answer (majority: agreement with the majority)
    agreement: float  # share of their votes agreeing with the aggregate labels (Jaccard for multilabel)
    votes: int  # votes counted
    per_task: dict[str, float] = field(default_factory=dict)  # task -> reliability on that task

    def to_dict(self) -> dict[str, Any]:
        return {
            "labeler": self.labeler,
            "reliability": round(self.reliability, _DIGITS),
            "agreement": round(self.agreement, _DIGITS),
            "votes": self.votes,
            "per_task": {k: round(v, _DIGITS) for k, v in self.per_task.items()},
        }


@dataclass
class AggregationResult:
    """Aggregated labels per post, labeler reliability, and the votes that were skipped."""

    method: str
    ds_model: str | None  # the Dawid–Skene model, None for majority vote
    posts: list[AggregatedPost]  # in manifest order when posts were given, else in order of first vote
    labelers: list[LabelerReport]  # most reliable first
    problems: list[BadVote]  # skipped votes, with file and row
    kinds: dict[str, str]  # task -> multiclass | multilabel
    votes_read: int = 0
    votes_used: int = 0

    def __getitem__(self, post_id: str) -> AggregatedPost:
        for p in self.posts:
            if p.id == post_id:
                return p
        raise KeyError(post_id)

    def labels(self) -> dict[str, dict[str, LabelValue]]:
        """``{post_id: {task: label}}``."""
        return {p.id: p.labels for p in self.posts}

    def reliability(self) -> dict[str, float]:
        """``{labeler: reliability}``."""
        return {r.labeler: r.reliability for r in self.labelers}

    def write(self, path: str | Path, *, inputs: Iterable[str | Path | None] = ()) -> str | Path:
        """One JSON object per post: ``{"id", "labels", "agreement", "votes"}`` (JSONL), written atomically;
        ``"-"`` writes to stdout. An output that is one of ``inputs`` is refused."""
        from ximgctx._artifacts import open_text_out

        with open_text_out(path, inputs=inputs) as f:
            for p in self.posts:
                f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
        return path if str(path) == "-" else Path(path)

    def report(self) -> dict[str, Any]:
        """The labelers report: method, counts, reliability per labeler and every skipped vote."""
        return {
            "method": self.method,
            "ds_model": self.ds_model,
            "tasks": self.kinds,
            "posts": len(self.posts),
            "votes_read": self.votes_read,
            "votes_used": self.votes_used,
            "votes_skipped": len(self.problems),
            # posts with a task left without a label by a tie (majority, dawid_skene): they need another vote
            "unresolved": {p.id: list(p.unresolved) for p in self.posts if p.unresolved},
            "labelers": [r.to_dict() for r in self.labelers],
            "skipped": [str(p) for p in self.problems],
        }

    def merge(self, posts: Iterable[Post], *, keep_existing: bool = True) -> list[Post]:
        """Copies of ``posts`` with the aggregated labels set (replacing the same tasks' labels) and
        ``meta["aggregation"] = {"method", "agreement", "votes"}`` (and ``"unresolved"``: tasks whose votes
        tie, which keep the post's own label if it had one). Posts without votes are returned unchanged, or
        dropped when ``keep_existing`` is False."""
        by_id = {p.id: p for p in self.posts}
        out = []
        for post in posts:
            agg = by_id.get(post.id)
            if agg is None:
                if keep_existing:
                    out.append(post)
                continue
            aggregation: dict[str, Any] = {
                "method": self.method,
                "agreement": agg.agreement,
                "votes": agg.votes,
            }
            if agg.unresolved:
                aggregation["unresolved"] = list(agg.unresolved)
            meta = {**post.meta, "aggregation": aggregation}
            out.append(replace(post, labels={**post.labels, **agg.labels}, meta=meta))
        return out


# ------------------------------------------------------------------------------------------ fitting


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # crowd-kit 1.4 on pandas 2/3 raises FutureWarnings and SettingWithCopyWarnings that say nothing to users
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _fit(
    df: pd.DataFrame, method: str, ds_model: str, n_iter: int, tol: float
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Posteriors (post x label) and reliability per labeler for one single-choice task.

    ``df`` has columns task (post id), worker, label.
    """
    try:
        from crowdkit.aggregation import DawidSkene, MajorityVote, OneCoinDawidSkene
    except ImportError as e:
        raise missing_extra(e, feature="vote aggregation (aggregate_votes)") from None

    values = pd.unique(df["label"])
    if len(values) == 1:  # every vote agrees: nothing to estimate, and no EM to run
        probas = pd.DataFrame({values[0]: 1.0}, index=pd.Index(pd.unique(df["task"]), name="task"))
        return probas, {w: 1.0 for w in pd.unique(df["worker"])}
    with _quiet():
        if method == "majority":
            majority = MajorityVote().fit(df)
            skills = _fitted(majority.skills_).items()
            return _fitted(majority.probas_), {str(k): float(v) for k, v in skills}
        if ds_model == "one_coin":
            one_coin = OneCoinDawidSkene(n_iter=n_iter, tol=tol).fit(df)
            skills = _fitted(one_coin.skills_).items()
            return _fitted(one_coin.probas_), {str(k): float(v) for k, v in skills}
        agg = DawidSkene(n_iter=n_iter, tol=tol).fit(df)
    # probability of a correct answer: sum over true labels c of prior(c) * P(answer c | truth c)
    errors, priors = _fitted(agg.errors_), _fitted(agg.priors_)
    reliability = {}
    for worker, block in errors.groupby(level="worker", sort=False):
        block = block.droplevel("worker")
        reliability[str(worker)] = float(
            sum(priors[c] * block.at[c, c] for c in priors.index if c in block.index)
        )
    return _fitted(agg.probas_), reliability


def _fitted(estimate: _T | None) -> _T:
    """An estimate crowd-kit declares optional and sets in ``fit``."""
    if estimate is None:
        raise RuntimeError("crowd-kit left an estimate unset after fit")
    return estimate


def _jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    a, b = set(a), set(b)
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def _ties(votes: list[Vote], kind: str, vocab: list[str]) -> dict[str, dict[str, float]]:
    """Per tied post, the share of its votes per label (multiclass: every label; multilabel: the share of
    labelers who ticked each label) - see the tie rule in the module's documentation."""
    counts: dict[str, dict[str, int]] = {}
    n: dict[str, int] = {}
    for v in votes:
        c = counts.setdefault(v.post_id, {})
        for lab in [v.label] if isinstance(v.label, str) else v.label:
            c[lab] = c.get(lab, 0) + 1
        n[v.post_id] = n.get(v.post_id, 0) + 1
    out = {}
    for pid, c in counts.items():
        if kind == "multiclass":
            top = sorted(c.values(), reverse=True)
            tied = len(top) > 1 and top[0] == top[1]
        else:
            tied = any(2 * k == n[pid] for k in c.values())
        if tied:
            out[pid] = {lab: c.get(lab, 0) / n[pid] for lab in vocab}
    return out


def _aggregate_task(
    votes: list[Vote], kind: str, vocab: list[str], method: str, ds_model: str, n_iter: int, tol: float
) -> tuple[dict[str, LabelValue], dict[str, float], dict[str, float], dict[str, float], set[str]]:
    """One task: per post the label and agreement, per labeler reliability and agreement, and the posts
    left unresolved by a tie (hard methods)."""
    posts = list(dict.fromkeys(v.post_id for v in votes))
    ties = _ties(votes, kind, vocab)
    if kind == "multiclass":
        df = pd.DataFrame(
            {
                "task": [v.post_id for v in votes],
                "worker": [v.labeler for v in votes],
                "label": [v.label for v in votes],
            }
        )
        probas, reliability = _fit(df, method, ds_model, n_iter, tol)
        probas = probas.reindex(index=posts, columns=vocab, fill_value=0.0).fillna(0.0)  # (P, C)
        if method == "soft":
            for pid, share in ties.items():
                probas.loc[pid] = [share[lab] for lab in vocab]
        hard = {pid: vocab[int(np.argmax(row))] for pid, row in zip(posts, probas.to_numpy(), strict=True)}
        if method == "soft":
            labels: dict[str, LabelValue] = {
                pid: {lab: round(float(p), _DIGITS) for lab, p in zip(vocab, row, strict=True)}
                for pid, row in zip(posts, probas.to_numpy(), strict=True)
            }
        else:
            labels = dict(hard)
        vote_agrees = [float(v.label == hard[v.post_id]) for v in votes]
    else:
        present = np.zeros((len(posts), len(vocab)))  # (P, C) P(label present)
        per_label: list[dict[str, float]] = []
        for j, lab in enumerate(vocab):
            df = pd.DataFrame(
                {
                    "task": [v.post_id for v in votes],
                    "worker": [v.labeler for v in votes],
                    "label": [int(lab in v.label) for v in votes],
                }
            )
            probas, rel = _fit(df, method, ds_model, n_iter, tol)
            present[:, j] = (
                probas.reindex(index=posts, columns=[1], fill_value=0.0).fillna(0.0).to_numpy()[:, 0]
            )
            if method == "soft":
                for i, pid in enumerate(posts):
                    if pid in ties and ties[pid][lab] == 0.5:
                        present[i, j] = 0.5
            per_label.append(rel)
        sets = {
            pid: [lab for lab, p in zip(vocab, row, strict=True) if p >= 0.5]
            for pid, row in zip(posts, present, strict=True)
        }
        if method == "soft":
            labels = {
                pid: {lab: round(float(p), _DIGITS) for lab, p in zip(vocab, row, strict=True)}
                for pid, row in zip(posts, present, strict=True)
            }
        else:
            labels = dict(sets)
        workers = {v.labeler for v in votes}
        reliability = {w: float(np.mean([rel.get(w, np.nan) for rel in per_label])) for w in workers}
        vote_agrees = [_jaccard(v.label, sets[v.post_id]) for v in votes]

    unresolved: set[str] = set()
    if method != "soft":  # a tie of the posterior (majority: of the counts) leaves the task without a label
        if kind == "multiclass":
            top2 = np.sort(probas.to_numpy(), axis=1)[:, -2:] if len(vocab) > 1 else None
            if top2 is not None:
                unresolved = {pid for pid, (b, a) in zip(posts, top2, strict=True) if a - b < 1e-9}
            # a vote in a tie agrees with the unresolved task as much as its label's share of the votes
            shares = {pid: ties.get(pid, {}) for pid in unresolved}
            vote_agrees = [
                (shares[v.post_id].get(str(v.label), 0.0) if v.post_id in unresolved else a)
                for v, a in zip(votes, vote_agrees, strict=True)
            ]
        else:
            unresolved = {
                pid for pid, row in zip(posts, present, strict=True) if np.any(np.abs(row - 0.5) < 1e-9)
            }
        labels = {pid: x for pid, x in labels.items() if pid not in unresolved}
    agreement: dict[str, list[float]] = {}
    by_labeler: dict[str, list[float]] = {}
    for v, a in zip(votes, vote_agrees, strict=True):
        agreement.setdefault(v.post_id, []).append(a)
        by_labeler.setdefault(v.labeler, []).append(a)
    if method == "majority" and unresolved:
        # crowd-kit's majority skills count a tie as won by whichever label it picked; here a tied vote
        # counts half (its share), the same for both sides
        reliability = {k: float(np.mean(x)) for k, x in by_labeler.items()}
    return (
        labels,
        {k: float(np.mean(x)) for k, x in agreement.items()},
        reliability,
        {k: float(np.mean(x)) for k, x in by_labeler.items()},
        unresolved,
    )


@dataclass
class _PerTask:
    """What aggregating every task gives: per post and per labeler, each keyed by task."""

    labels: dict[str, dict[str, LabelValue]] = field(default_factory=dict)  # post -> task -> label
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)  # post -> task -> agreement
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # post -> task -> votes
    rel: dict[str, dict[str, float]] = field(default_factory=dict)  # labeler -> task -> reliability
    agree: dict[str, dict[str, float]] = field(default_factory=dict)  # labeler -> task -> agreement
    n_votes: dict[str, dict[str, int]] = field(default_factory=dict)  # labeler -> task -> votes
    unresolved: dict[str, list[str]] = field(default_factory=dict)  # post -> tasks left unresolved by a tie


def _aggregate_tasks(
    by_task: dict[str, list[Vote]],
    kinds: dict[str, str],
    spec_by_name: dict[str, Any],
    method: str,
    ds_model: str,
    n_iter: int,
    tol: float,
) -> _PerTask:
    out = _PerTask()
    for task, tvotes in by_task.items():
        if task in spec_by_name:
            vocab = list(spec_by_name[task].labels)
        else:
            seen = (x for v in tvotes for x in ([v.label] if isinstance(v.label, str) else v.label))
            vocab = sorted(set(seen))
        t_labels, t_agreement, t_rel, t_agree, t_unresolved = _aggregate_task(
            tvotes, kinds[task], vocab, method, ds_model, n_iter, tol
        )
        n_task: dict[str, int] = {}
        for v in tvotes:
            post_counts = out.counts.setdefault(v.post_id, {})
            post_counts[task] = post_counts.get(task, 0) + 1
            n_task[v.labeler] = n_task.get(v.labeler, 0) + 1
        for pid, value in t_labels.items():
            out.labels.setdefault(pid, {})[task] = value
        for pid, a in t_agreement.items():
            out.labels.setdefault(pid, {})
            out.agreement.setdefault(pid, {})[task] = round(a, _DIGITS)
        for pid in t_unresolved:
            out.unresolved.setdefault(pid, []).append(task)
        for w, r in t_rel.items():
            out.rel.setdefault(w, {})[task] = r
            out.agree.setdefault(w, {})[task] = t_agree[w]
            out.n_votes.setdefault(w, {})[task] = n_task[w]
    return out


def _labeler_reports(per_task: _PerTask) -> list[LabelerReport]:
    """One report per labeler, most reliable first: averages over tasks weighted by their votes on each."""
    reports = []
    for w, by_task in per_task.rel.items():
        tasks_w = list(by_task)
        weights = [per_task.n_votes[w][t] for t in tasks_w]
        r = float(np.average([by_task[t] for t in tasks_w], weights=weights))
        a = float(np.average([per_task.agree[w][t] for t in tasks_w], weights=weights))
        reports.append(LabelerReport(w, r, a, sum(weights), dict(by_task)))
    reports.sort(key=lambda r: (-r.reliability, r.labeler))
    return reports


def aggregate_votes(
    votes: str | Path | VoteSet | Iterable[Vote | Mapping[str, Any]],
    method: str = "dawid_skene",
    tasks: Any = None,
    posts: Sequence[Post] | Iterable[str] | None = None,
    *,
    ds_model: str = "one_coin",
    n_iter: int = 100,
    tol: float = 1e-5,
) -> AggregationResult:
    """Aggregate labelers' votes into one label (or distribution) per post and task.

    Args:
        votes: a votes file (``.jsonl`` / ``.csv`` / ``.parquet`` rows ``post_id, labeler, task, label``),
            checked votes from :func:`~ximgctx.hitl.read_votes`, or :class:`Vote` objects / mappings.
        method: ``majority``, ``dawid_skene`` (hard labels) or ``soft`` (Dawid–Skene posteriors).
        tasks: task specs (list, ``ModelConfig``, a task YAML, a model folder, ``"contextbench"``). With them,
            unknown tasks and labels are bad votes, soft labels cover every label, and each task's kind is
            known; without them a task is multilabel when any vote is a list.
        posts: the posts (or their ids). With them, votes on other posts are bad votes and the result follows
            their order.
        ds_model: ``one_coin`` (one accuracy per labeler; robust when each labels a few posts) or ``full``
            (a confusion matrix per labeler; needs many votes each).
        n_iter: most EM iterations of Dawid–Skene.
        tol: EM stops when the evidence lower bound per vote improves by less than this (crowd-kit's
            default). A looser tolerance is faster but moves the posteriors of single posts noticeably on
            small sets, so the default stays.

    Returns:
        An :class:`AggregationResult`; skipped votes are in ``result.problems`` with their file and row.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
    if ds_model not in DS_MODELS:
        raise ConfigError(f"ds_model must be one of {list(DS_MODELS)}, got {ds_model!r}")
    specs = None if tasks is None else load_tasks(tasks)
    ids = None if posts is None else [p.id if isinstance(p, Post) else str(p) for p in posts]
    if not isinstance(votes, VoteSet):
        votes = read_votes(votes, tasks=specs, post_ids=ids)

    by_task: dict[str, list[Vote]] = {}
    for v in votes.votes:
        by_task.setdefault(v.task, []).append(v)
    spec_by_name = {t.name: t for t in specs} if specs is not None else {}
    per_task = _aggregate_tasks(by_task, votes.kinds, spec_by_name, method, ds_model, n_iter, tol)
    labels, agreement, counts = per_task.labels, per_task.agreement, per_task.counts
    order = ids if ids is not None else list(dict.fromkeys(v.post_id for v in votes.votes))
    out_posts = [
        AggregatedPost(pid, labels[pid], agreement[pid], counts[pid], per_task.unresolved.get(pid, []))
        for pid in order
        if pid in labels
    ]
    reports = _labeler_reports(per_task)
    return AggregationResult(
        method=method,
        ds_model=None if method == "majority" else ds_model,
        posts=out_posts,
        labelers=reports,
        problems=list(votes.problems),
        kinds={t: votes.kinds[t] for t in by_task} if by_task else dict(votes.kinds),
        votes_read=votes.read,
        votes_used=len(votes.votes),
    )


def soft_to_hard(value: LabelValue, kind: str) -> str | list[str]:
    """A label value as a hard label: the argmax of a multiclass distribution, labels with p >= 0.5 of a
    multilabel one; hard values are returned as they are."""
    if not isinstance(value, dict):
        return value
    if kind == "multiclass":
        return max(value, key=lambda k: value[k])
    return [k for k, p in value.items() if p >= 0.5]
