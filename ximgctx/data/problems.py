"""What was wrong with one post, as data.

A :class:`Problem` names the field (``"image"``, ``"text"``, ``"replies"``, ``"labels.intent"``, ...), a short
machine-readable ``kind`` (``"truncated"``, ``"capped"``, ``"invalid_label"``, ...) and a human-readable
``detail``. Counting, reporting and policy rules read ``field`` and ``kind``; nothing parses the message text.
``str(problem)`` is the line a person reads: ``"image: truncated: the file ends early"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Problem", "count_problems", "split_key"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one post; the post goes on with that part masked."""

    field: str  # which part of the post: "image", "text", "replies", "labels.<task>", "meta", "id"
    kind: str  # short code: "missing", "truncated", "too_many_pixels", "capped", "invalid_label", ...
    detail: str = ""  # what a person reads; never an absolute server path in confined mode

    @property
    def key(self) -> str:
        """``"field: kind"``, the unit problems are counted by."""
        return f"{self.field}: {self.kind}"

    def __str__(self) -> str:
        return f"{self.key}: {self.detail}" if self.detail else self.key

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "kind": self.kind, "detail": self.detail}


def split_key(key: str) -> tuple[str, str]:
    """``(field, kind)`` of a :attr:`Problem.key` read back from a saved count (a report, a gathered dict).

    The inverse of ``key``, kept next to it so that no other module knows the format.
    """
    fld, sep, kind = key.rpartition(": ")
    return (fld, kind) if sep else (key, "")


def count_problems(problems: Iterable[Iterable[Problem]]) -> Counter[str]:
    """Posts per ``"field: kind"``: each kind counted once per post, over all the posts given."""
    counts: Counter[str] = Counter()
    for plist in problems:
        counts.update({p.key for p in plist})
    return counts
