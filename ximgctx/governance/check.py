"""The check training runs before it reads a manifest: did these posts pass through ``ximgctx govern``?

The marker lives in each post's ``meta["governance"]`` (``{"version": 2, "policy_sha256": <64 hex>, ...}``),
so it survives copying, concatenating and re-sharding manifests; a manifest that mixes governed and
ungoverned posts is refused. The marker records a process, it is not a signature: it stops accidents
(training on the raw conversion output), not someone who forges it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ximgctx.data.record import Post
from ximgctx.errors import InputError
from ximgctx.governance.core import MARKER_KEY, GovernanceMarker
from ximgctx.governance.pii import NOT_DETECTED

logger = logging.getLogger(__name__)


class UngovernedDataError(InputError):
    """Data that has not passed through governance reached training, an index or a label memory."""


def is_governed(post: Post) -> bool:
    """Whether ``post`` carries a well-formed governance marker."""
    return GovernanceMarker.from_meta(post.meta) is not None


@dataclass
class GovernanceStatus:
    """What a set of posts says about its governance; goes into the model card."""

    total: int = 0
    governed: int = 0
    policy_sha256: list[str] = field(default_factory=list)  # distinct policy hashes, most common first
    allowed_ungoverned: bool = False  # training was told to go on without governance

    @property
    def ungoverned(self) -> int:
        return self.total - self.governed

    @property
    def is_governed(self) -> bool:
        return self.total > 0 and self.ungoverned == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "governed": self.is_governed,
            "posts": self.total,
            "governed_posts": self.governed,
            "ungoverned_posts": self.ungoverned,
            "policy_sha256": list(self.policy_sha256),
            "allowed_ungoverned": self.allowed_ungoverned,
            "redaction_not_detected": NOT_DETECTED,  # the redactor's known gap, stated in every model card
        }


def require_governed(
    posts: Iterable[Post],
    *,
    allow_ungoverned: bool = False,
    source: str | None = None,
    command: str = "this command",
) -> Iterator[Post]:
    """Pass ``posts`` through, raising at the first one without the governance marker unless
    ``allow_ungoverned`` (then a warning counts them at the end). For streams: ``ximgctx index`` and
    ``ximgctx memory add`` wrap their input in it, so nothing is written from ungoverned data.

    Raises:
        UngovernedDataError: naming the source, the post's position, and how to fix it.
    """
    ungoverned = 0
    for i, post in enumerate(posts, 1):
        if not is_governed(post):
            if not allow_ungoverned:
                data = source or "DATA.jsonl"
                raise UngovernedDataError(
                    f"{command}: post {i}{' of ' + source if source else ''} has not passed through data "
                    f"governance (no meta.{MARKER_KEY} marker), so it may be private, a direct message, by "
                    "an "
                    f"opted-out author or hold personal data. Run `ximgctx govern --data {data} --out "
                    f"GOVERNED.jsonl --report AUDIT.json` and use GOVERNED.jsonl, or pass --allow-ungoverned."
                )
            ungoverned += 1
        yield post
    if ungoverned:
        logger.warning(
            "%s: used %d ungoverned posts because --allow-ungoverned was given", command, ungoverned
        )


def _status(posts: Iterable[Post]) -> GovernanceStatus:
    st = GovernanceStatus()
    hashes: Counter[str] = Counter()
    for p in posts:
        st.total += 1
        marker = GovernanceMarker.from_meta(p.meta)
        if marker is not None:
            st.governed += 1
            hashes[marker.policy_sha256] += 1
    st.policy_sha256 = [h for h, _ in hashes.most_common()]
    return st


def governance_summary(posts: Iterable[Post]) -> dict[str, Any]:
    """Governed or not, policy hashes and counts, for a model card. Never raises."""
    return _status(posts).to_dict()


def check_governed(
    posts: Iterable[Post], *, allow_ungoverned: bool = False, source: str | None = None
) -> GovernanceStatus:
    """Refuse posts that lack the governance marker unless ``allow_ungoverned``.

    Args:
        posts: the training posts (read once).
        allow_ungoverned: go on anyway (``--allow-ungoverned``); the returned status records it.
        source: the manifest's path, for the message.

    Raises:
        UngovernedDataError: what is wrong, how many posts lack the marker, and how to fix it.
    """
    st = _status(posts)
    st.allowed_ungoverned = allow_ungoverned and st.ungoverned > 0
    if st.ungoverned == 0:
        return st
    where = f" in {source}" if source else ""
    if not allow_ungoverned:
        data = source or "DATA.jsonl"
        raise UngovernedDataError(
            f"{st.ungoverned} of {st.total} posts{where} have not passed through data governance (no "
            f"meta.{MARKER_KEY} marker), so they may include private posts, direct messages, opted-out "
            f"authors or personal data. Run `ximgctx govern --data {data} --out GOVERNED.jsonl --report "
            f"AUDIT.json [--policy POLICY.yaml] [--opt-out OPT_OUT.txt]` and train on GOVERNED.jsonl, or "
            f"pass --allow-ungoverned (allow_ungoverned=True) to train anyway; the model card will say so."
        )
    logger.warning(
        "training on %d ungoverned posts of %d%s because allow_ungoverned=True; the model card records it",
        st.ungoverned,
        st.total,
        where,
    )
    return st
