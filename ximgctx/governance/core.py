"""``govern``: keep only what may be trained on, redact personal data, and write an audit.

What a post must satisfy to be kept, checked in this order (the first failing rule is the post's one
drop reason, so the counts add up to the input):

1. ``opted_out_author``: its ``meta.author`` is in the policy's opt-out list or the opt-out file, or it
   is itself marked ``meta.opt_out: true`` (which also opts its author out everywhere else).
2. ``direct_message``: any of ``meta.is_dm`` / ``meta.is_direct_message`` true, ``meta.type`` or
   ``meta.kind`` in {dm, direct, direct_message, private_message}, ``meta.visibility`` in {direct, dm}.
3. ``visibility_missing``: no ``meta.visibility`` at all (default deny).
4. ``non_public``: ``meta.visibility`` not among the policy's allowed visibilities (default: public).

In kept posts, replies by opted-out authors are removed (``opted_out_author``), then personal data is
redacted in the text, every reply and (``redact_meta``) the string values of ``meta`` (at any depth,
except under ``meta_keep_keys`` and, with ``keep_id_fields``, ``id``/``*_id`` keys), and the governance marker ``meta["governance"] = {"version", "policy_sha256"}`` is
added. Everything else is left as it was. The audit holds counts only: no text, no ids, no authors.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ximgctx.data.post import Post, Reply
from ximgctx.governance.pii import KINDS, Redactor
from ximgctx.governance.policy import GovernancePolicy

logger = logging.getLogger(__name__)

MARKER_KEY = "governance"
MARKER_VERSION = 1
DROP_REASONS = ("opted_out_author", "direct_message", "visibility_missing", "non_public")
REPLY_REASONS = ("opted_out_author",)
_DM_TYPES = {"dm", "direct", "direct_message", "private_message"}
_DM_VISIBILITIES = {"direct", "dm"}


@dataclass
class AuditReport:
    """Counts of what governance kept, dropped and redacted. Never content."""

    policy_sha256: str
    policy: dict[str, Any]  # the policy, opt-out ids replaced by their count
    input_posts: int = 0
    kept_posts: int = 0
    dropped_posts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    input_replies: int = 0  # replies of kept posts, before removal
    kept_replies: int = 0
    removed_replies: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPLY_REASONS, 0))
    redactions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    posts_with_redactions: int = 0
    opted_out_authors: int = 0  # distinct opted-out author ids in force (list, file and flagged posts)
    skipped_records: int = 0  # malformed input records skipped by the loader (counted, never shown)

    def check(self) -> None:
        """Raise AssertionError when the counts do not add up."""
        if self.kept_posts + sum(self.dropped_posts.values()) != self.input_posts:
            raise AssertionError(
                f"audit: kept {self.kept_posts} + dropped {sum(self.dropped_posts.values())} "
                f"!= input {self.input_posts}"
            )
        if self.kept_replies + sum(self.removed_replies.values()) != self.input_replies:
            raise AssertionError("audit: kept + removed replies != input replies")

    def to_dict(self) -> dict[str, Any]:
        self.check()
        return {
            "version": MARKER_VERSION,
            "policy_sha256": self.policy_sha256,
            "policy": self.policy,
            "posts": {
                "input": self.input_posts,
                "kept": self.kept_posts,
                "dropped": dict(self.dropped_posts),
                "skipped_malformed": self.skipped_records,
            },
            "replies": {
                "input": self.input_replies,
                "kept": self.kept_replies,
                "removed": dict(self.removed_replies),
            },
            "redactions": dict(self.redactions),
            "posts_with_redactions": self.posts_with_redactions,
            "opted_out_authors": self.opted_out_authors,
            "counts_add_up": True,
        }


@dataclass
class GovernanceResult:
    posts: list[Post]  # the kept, redacted, marked posts
    audit: AuditReport


def is_direct_message(meta: dict[str, Any]) -> bool:
    """Whether ``meta`` marks a direct/private message (the fields are listed in the module docstring)."""
    if meta.get("is_dm") is True or meta.get("is_direct_message") is True:
        return True
    for key in ("type", "kind"):
        v = meta.get(key)
        if isinstance(v, str) and v.strip().lower() in _DM_TYPES:
            return True
    v = meta.get("visibility")
    return isinstance(v, str) and v.strip().lower() in _DM_VISIBILITIES


def collect_opt_outs(posts: Iterable[Post], policy: GovernancePolicy) -> set[str]:
    """Opted-out author ids: the policy's list plus the authors of posts flagged ``meta.opt_out: true``."""
    out = set(policy.opt_out_authors)
    if policy.honor_post_opt_out:
        for p in posts:
            if p.meta.get("opt_out") is True and p.meta.get("author") is not None:
                out.add(str(p.meta["author"]))
    return out


def _drop_reason(post: Post, policy: GovernancePolicy, opted_out: set[str]) -> str | None:
    meta = post.meta
    author = meta.get("author")
    if (author is not None and str(author) in opted_out) or (
        policy.honor_post_opt_out and meta.get("opt_out") is True
    ):
        return "opted_out_author"
    if is_direct_message(meta):
        return "direct_message"
    vis = meta.get("visibility")
    if vis is None:
        return "visibility_missing"
    if not isinstance(vis, str) or vis.strip() not in policy.allowed_visibilities:
        return "non_public"
    return None


def _redact_value(
    value: Any, redactor: Redactor, counts: Counter[str], keep: Callable[[str], bool] = lambda _k: False
) -> Any:
    """Redact strings, recursing into dicts and lists; values under keys for which ``keep`` is true are
    left alone."""
    if isinstance(value, str):
        out, c = redactor.redact(value)
        counts.update(c)
        return out
    if isinstance(value, dict):
        return {k: v if keep(str(k)) else _redact_value(v, redactor, counts, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, redactor, counts, keep) for v in value]
    return value


def iter_govern(
    posts: Iterable[Post], policy: GovernancePolicy, audit: AuditReport, opted_out: set[str]
) -> Iterator[Post]:
    """Single-pass governance for streams: ``opted_out`` must already hold every opted-out author (see
    :func:`collect_opt_outs`); ``audit`` is filled as posts go by."""
    redactor = Redactor(kinds=tuple(policy.redact), tokens=policy.tokens, regions=policy.phone_regions)
    marker = {"version": MARKER_VERSION, "policy_sha256": policy.sha256()}
    keep_keys = set(policy.meta_keep_keys)

    def keep(key: str) -> bool:
        return key in keep_keys or (policy.keep_id_fields and (key == "id" or key.endswith("_id")))

    audit.opted_out_authors = len(opted_out)
    for post in posts:
        audit.input_posts += 1
        reason = _drop_reason(post, policy, opted_out)
        if reason is not None:
            audit.dropped_posts[reason] += 1
            continue
        counts: Counter[str] = Counter()
        text = _redact_value(post.text, redactor, counts)
        replies: list[Reply] = []
        for r in post.replies:
            audit.input_replies += 1
            if r.author is not None and str(r.author) in opted_out:
                audit.removed_replies["opted_out_author"] += 1
                continue
            replies.append(Reply(text=_redact_value(r.text, redactor, counts), author=r.author))
        audit.kept_replies += len(replies)
        meta = {k: v for k, v in post.meta.items() if k != MARKER_KEY}  # a previous marker is replaced
        if policy.redact_meta:
            meta = _redact_value(meta, redactor, counts, keep)
        meta[MARKER_KEY] = dict(marker)
        for k, n in counts.items():
            audit.redactions[k] += n
        audit.posts_with_redactions += bool(counts)
        audit.kept_posts += 1
        yield Post(
            id=post.id, image=post.image, text=text, replies=replies, labels=dict(post.labels), meta=meta
        )


def new_audit(policy: GovernancePolicy) -> AuditReport:
    return AuditReport(policy_sha256=policy.sha256(), policy=policy.public_summary())


def govern(posts: Iterable[Post], policy: GovernancePolicy | None = None) -> GovernanceResult:
    """Keep only trainable posts, redact personal data, and count what happened.

    ``posts`` is read twice (opt-out flags first, so an author who opted out on any post loses every
    post and reply); an iterator is materialised. For manifests larger than memory, the ``ximgctx
    govern`` command streams the file twice instead.
    """
    policy = policy or GovernancePolicy()
    posts = posts if isinstance(posts, list) else list(posts)
    opted_out = collect_opt_outs(posts, policy)
    audit = new_audit(policy)
    kept = list(iter_govern(posts, policy, audit, opted_out))
    audit.check()
    logger.info(
        "governance: kept %d of %d posts (dropped %s), removed %d replies, redacted %s",
        audit.kept_posts,
        audit.input_posts,
        audit.dropped_posts,
        sum(audit.removed_replies.values()),
        audit.redactions,
    )
    return GovernanceResult(posts=kept, audit=audit)
