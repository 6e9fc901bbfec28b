"""Simulated labelers: honest ones who are right with a given probability, and spammers who answer at random.

Used by the tests (Dawid–Skene against majority vote) and by ``ximgctx simulate-labeling``.

- An honest labeler gives the true answer with probability ``accuracy``, otherwise another answer chosen
  uniformly: another label of a multiclass task, another subset of a multilabel task's labels (the way
  ContextBench's ``label_noise`` corrupts labels).
- A spammer answers uniformly at random: any label of a multiclass task, any subset of a multilabel one
  (each label with probability 1/2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ximgctx.config import TaskSpec
from ximgctx.data.record import LabelValue
from ximgctx.errors import ConfigError
from ximgctx.hitl.votes import Vote

__all__ = ["LabelerPool"]


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}], got {value!r}")


@dataclass
class LabelerPool:
    """A crowd of simulated labelers.

    Args:
        n_labelers: how many people.
        accuracy: probability that an honest labeler's answer is right (the whole label set, for multilabel).
        spammers: share of the labelers who answer at random (rounded to a whole number of people).
        votes_per_post: distinct labelers asked about each post.
        seed: the same seed gives the same crowd and the same answers.
    """

    n_labelers: int = 10  # people in the crowd
    # an honest labeler's chance of a correct answer (the whole set for multilabel tasks)
    accuracy: float = 0.7
    spammers: float = 0.2  # share of the crowd answering at random
    votes_per_post: int = 3  # labelers asked per post
    seed: int = 0  # seeds who is a spammer and every answer

    def __post_init__(self) -> None:
        if self.n_labelers < 1:
            raise ConfigError(f"n_labelers must be >= 1, got {self.n_labelers!r}")
        _check("accuracy", self.accuracy, 0.0, 1.0)
        _check("spammers", self.spammers, 0.0, 1.0)
        if not 1 <= self.votes_per_post <= self.n_labelers:
            raise ConfigError(
                f"votes_per_post must be in [1, n_labelers={self.n_labelers}], got {self.votes_per_post!r}"
            )
        self.rng = np.random.default_rng(self.seed)
        n_spam = int(round(self.spammers * self.n_labelers))
        self.ids = [f"labeler_{i:03d}" for i in range(self.n_labelers)]
        spam = self.rng.choice(self.n_labelers, size=n_spam, replace=False)
        self.spammer_ids = sorted(self.ids[i] for i in spam)

    def _answer(self, labeler: str, truth: LabelValue, spec: TaskSpec) -> str | tuple[str, ...]:
        rng, spam = self.rng, labeler in self.spammer_ids
        if spec.kind == "multiclass":
            if isinstance(truth, dict):
                dist = truth
                truth = max(dist, key=lambda k: dist[k])
            elif isinstance(truth, list):
                truth = truth[0]
            if spam:
                return spec.labels[int(rng.integers(spec.num_labels))]
            if rng.random() < self.accuracy:
                return truth
            others = [x for x in spec.labels if x != truth]
            return others[int(rng.integers(len(others)))]
        if isinstance(truth, dict):
            true_set = {k for k, p in truth.items() if p >= 0.5}
        else:
            true_set = {truth} if isinstance(truth, str) else set(truth)
        n = spec.num_labels
        true_mask = sum(1 << i for i, lab in enumerate(spec.labels) if lab in true_set)
        if spam:
            mask = int(rng.integers(1 << n))
        elif rng.random() < self.accuracy:
            mask = true_mask
        else:  # one of the 2^n - 1 other subsets, uniformly
            r = int(rng.integers((1 << n) - 1))
            mask = r if r < true_mask else r + 1
        return tuple(lab for i, lab in enumerate(spec.labels) if mask >> i & 1)

    def vote(self, truth: Mapping[str, Mapping[str, LabelValue]], tasks: Sequence[TaskSpec]) -> list[Vote]:
        """Votes on every post of ``truth`` (``{post_id: {task: true label}}``) for every task it has a label
        for, by ``votes_per_post`` distinct labelers chosen at random per post."""
        out: list[Vote] = []
        for pid, labels in truth.items():
            who = self.rng.choice(self.n_labelers, size=self.votes_per_post, replace=False)
            for spec in tasks:
                if spec.name not in labels:
                    continue
                for w in who:
                    labeler = self.ids[int(w)]
                    out.append(
                        Vote(
                            pid,
                            labeler,
                            spec.name,
                            self._answer(labeler, labels[spec.name], spec),
                            source="<simulated>",
                            row=len(out) + 1,
                        )
                    )
        return out
