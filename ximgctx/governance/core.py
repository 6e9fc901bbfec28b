"""``govern``: keep only what may be trained on, redact personal data, and write an audit.

What a post must satisfy to be kept, checked in this order (the first failing rule is the post's one
drop reason, so the counts add up to the input); the vocabulary is :mod:`ximgctx.governance.flags`:

1. ``opted_out_author``: any author ``meta`` names (its own, and those of quoted/reposted/original records
   inside it, :func:`ximgctx.governance.identity.post_authors`) is opted out (policy list, opt-out file, or
   an opt-out flag on any of that author's posts), or the post itself carries an opt-out flag.
2. ``direct_message``: DM flags, DM types, DM-only fields, a direct visibility.
3. ``deleted``: deleted/removed by its author or the platform.
4. ``private_account``: protected/locked/private accounts, Bluesky's no-unauthenticated label.
5. ``visibility_missing`` / ``visibility_unknown`` / ``non_public``: every visibility field present must be
   among the policy's public values (fail closed: an unknown value is dropped).

A record in a known export shape (:mod:`ximgctx.governance.shapes`: X, Mastodon, ActivityPub, Bluesky,
Reddit, Threads, Telegram, Discord, Slack, Instagram) is first read by its row of the shape table (its DM,
deleted, private and opt-out fields; a raw public record of a platform whose records are public needs no
visibility field); unknown shapes keep the fail-closed rules above. Opt-outs are widened to every id an
account object gives (``{"id", "screen_name"}``, ``{did, handle}``, a local ``acct``), and a post that only
mentions an opted-out person is kept with their ids, handles, DIDs and bare names redacted.

In kept posts, replies by opted-out authors are removed (``opted_out_author``), replies whose author
cannot be read follow ``policy.unknown_reply_author`` (kept with handles redacted, or ``unknown_author``),
then personal data is redacted in the text, every reply and (``redact_meta``) every string and
phone/card-like number of ``meta`` at any depth, except the exact paths of ``meta_keep_keys`` and, with
``keep_id_fields``, ``id``/``*_id`` values and authors (author keys at any depth: the post's, a quoted post's)
that look like ids (an ``@handle`` there is kept as its normalised identity, so a later erasure can find it).
Mention lists in meta are redacted as handles. The governance marker ``meta["governance"] = {"version",
"policy_sha256", "key_id"}`` is added, where ``policy_sha256`` is the keyed :meth:`GovernancePolicy.digest`.
The audit holds counts only: no text, no ids, no authors, no keys taken from records.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ximgctx.governance.flags as flags
import ximgctx.governance.shapes as shapes
from ximgctx.data.record import Post, Reply
from ximgctx.governance.flags import is_direct_message
from ximgctx.governance.identity import (
    AUTHOR_KEYS,
    MENTION_KEYS,
    author_digest,
    identities,
    normalize_author,
    post_authors,
)
from ximgctx.governance.keys import key_id, load_key
from ximgctx.governance.names import describe
from ximgctx.governance.pii import KINDS, NOT_DETECTED, Redactor
from ximgctx.governance.policy import GovernancePolicy

logger = logging.getLogger(__name__)

MARKER_KEY = "governance"
MARKER_VERSION = 2  # 2: keyed policy digest (1 hashed the raw opt-out ids and is no longer accepted)
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class GovernanceMarker:
    """What governance leaves in each kept post's ``meta["governance"]``: which policy (keyed digest) and
    which key made it. It records a process, it is not a signature."""

    policy_sha256: str  # HMAC-SHA256 of the whole policy under the operator's key (64 hex)
    key_id: str  # the key's short public name (16 hex)
    version: int = MARKER_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "policy_sha256": self.policy_sha256, "key_id": self.key_id}

    @classmethod
    def from_meta(cls, meta: Any) -> GovernanceMarker | None:
        """The marker in a post's ``meta``, or None when there is none or it is malformed."""
        m = meta.get(MARKER_KEY) if isinstance(meta, dict) else None
        if not isinstance(m, dict):
            return None
        version, digest = m.get("version"), m.get("policy_sha256")
        if isinstance(version, bool) or version != MARKER_VERSION:
            return None
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            return None
        return cls(policy_sha256=digest, key_id=str(m.get("key_id") or ""), version=MARKER_VERSION)


DROP_REASONS = (
    "opted_out_author",
    "direct_message",
    "deleted",
    "private_account",
    "visibility_missing",
    "visibility_unknown",
    "non_public",
)
REPLY_REASONS = ("opted_out_author", "unknown_author")
_ID_LIKE = re.compile(r"[\w:.-]{1,128}")  # an id: one token, no @, no spaces, no + (ids, not contacts)
_MAX_DEPTH = 64


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
    key_held: bool = False  # the digest is keyed by the operator's key (not a throw-away process key)
    # SHA-256 of the published policy (opt-out ids as their count): the same for the same policy on every run
    policy_public_sha256: str = ""
    names: dict[str, Any] = field(default_factory=dict)  # which NER model found names, or that none ran

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
            "policy_public_sha256": self.policy_public_sha256,
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
            "digest": {"kind": "hmac-sha256", "key_held": self.key_held},
            "redaction": {
                "engine": "presidio pattern recognizers + phonenumbers"
                + (" + spaCy NER (names)" if self.names.get("ran") else ""),
                "not_detected": NOT_DETECTED,
                "names": dict(self.names),
            },
            "counts_add_up": True,
        }


@dataclass
class GovernanceResult:
    posts: list[Post]  # the kept, redacted, marked posts
    audit: AuditReport
    author_digests: set[str] = field(
        default_factory=set
    )  # keyed digests of every author whose words were kept
    key_id: str = ""  # which key made the digests (keys.key_id), to check the key later


def collect_opt_outs(posts: Iterable[Post], policy: GovernancePolicy) -> set[str]:
    """Normalised opted-out author ids: the policy's list plus the authors of posts with an opt-out flag."""
    out = set(policy.opt_out_authors)
    # a fediverse account opted out as name@host also answers to its local acct "name" on its own server
    out |= {a.split("@", 1)[0] for a in out if a.count("@") == 1 and not a.startswith("@") and "." in a}
    listed = set(out)
    if policy.honor_post_opt_out or listed:
        extra = tuple(policy.opt_out_flags)
        for p in posts:
            if not isinstance(p.meta, dict):
                continue
            if policy.honor_post_opt_out and flags.is_opted_out(p.meta, extra):
                out |= own_identities(p.meta)  # every id the record gives: id, username, DID, acct
            elif listed:  # an account object naming a listed author by one id gives its other ids too
                for ids in account_groups(p.meta):
                    if ids & listed:
                        out |= ids
    return out


def own_identities(meta: dict[str, Any]) -> set[str]:
    """Every identity a record gives for its own author: the author keys' values (an account object's every
    id) and the author paths of its export shape (:mod:`ximgctx.governance.shapes`)."""
    found: set[str] = set()
    for key in AUTHOR_KEYS:
        if key in meta:
            found |= identities(meta[key])
    shape = shapes.detect(meta)
    if shape is not None:
        found |= shapes.own_authors(meta, shape)
    return {a for a in found if a not in flags.DELETED_MARKERS}


def account_groups(meta: Any, _depth: int = 0) -> list[set[str]]:
    """The identity sets of every account object in ``meta`` (``{"id": "2299", "screen_name": "x"}``)."""
    out: list[set[str]] = []
    if _depth > 8:
        return out
    if isinstance(meta, dict):
        ids = identities(meta)
        if len(ids) > 1:
            out.append(ids)
        for v in meta.values():
            if isinstance(v, (dict, list)):
                out.extend(account_groups(v, _depth + 1))
    elif isinstance(meta, list):
        for v in meta:
            out.extend(account_groups(v, _depth + 1))
    return out


def _drop_reason(post: Post, policy: GovernancePolicy, opted_out: set[str]) -> str | None:
    meta = post.meta if isinstance(post.meta, dict) else {}
    shape = shapes.detect(meta)
    if (policy.honor_post_opt_out and flags.is_opted_out(meta, tuple(policy.opt_out_flags))) or (
        opted_out and (post_authors(meta) | own_identities(meta)) & opted_out
    ):
        return "opted_out_author"
    if shape is not None:
        reason = shapes.shape_reason(meta, shape)
        if reason is not None:
            return reason
        meta = {k: v for k, v in meta.items() if k not in shape.ignore}
    if is_direct_message(meta, (*flags.DM_TYPES, *policy.dm_types)):
        return "direct_message"
    if policy.drop_deleted and flags.is_deleted(meta, post.text):
        return "deleted"
    if flags.is_private_account(meta):
        return "private_account"
    reason = flags.visibility_reason(
        meta,
        tuple(policy.allowed_visibilities),
        (*flags.NON_PUBLIC_VISIBILITIES, *flags.DM_VISIBILITIES, *policy.non_public_visibilities),
    )
    if reason == "visibility_missing" and shape is not None and shapes.is_public(meta, shape):
        return None  # a raw export of a platform whose records are public unless marked otherwise
    return reason


_NAME_TOKEN = re.compile(r"did:[a-z0-9]+:[\w.-]+|@?\w[\w.-]*(?:@[\w-]+(?:\.[\w-]+)+)?")


def scrub_names(text: str, opted_out: set[str], token: str) -> tuple[str, int]:
    """``text`` with every word naming an opted-out person (a handle with or without ``@``, a DID inside an
    AT-URI, ``name@host``) replaced by ``token``: a post that mentions them is kept, their name is not.
    Bare digit runs are left alone (an account id in prose is indistinguishable from a number)."""
    if not opted_out or not text:
        return text, 0
    n = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal n
        word = m.group().rstrip(".-")
        if word.lstrip("@").isdigit() or normalize_author(word) not in opted_out:
            return m.group()
        n += 1
        return token + m.group()[len(word) :]

    return _NAME_TOKEN.sub(sub, text), n


class _MetaRedactor:
    """Redacts every string, dict key and phone/card-like number of ``meta`` (rules in the module doc)."""

    def __init__(
        self, policy: GovernancePolicy, redactor: Redactor, counts: Counter[str], opted_out: set[str]
    ):
        self.keep = set(policy.meta_keep_keys)
        self.keep_ids = policy.keep_id_fields
        self.redactor, self.counts, self.opted_out = redactor, counts, opted_out
        self.handle = redactor._tokens["handle"]
        self.redact_handles = "handle" in redactor.kinds

    def text(self, value: str) -> str:
        out, c = self.redactor.redact(value)
        self.counts.update(c)
        out, n = scrub_names(out, self.opted_out, self.handle)
        if n:
            self.counts["handle"] += n
        return out

    def _opted(self, value: Any) -> bool:
        return bool(self.opted_out) and normalize_author(value) in self.opted_out

    def _id_like(self, path: str, value: Any) -> bool:
        leaf = flags.norm_value(path.rsplit(".", 1)[-1])  # userId, user-id and user_id are one key
        return (
            self.keep_ids
            # an id, or an author (the post's own, a quoted post's)
            and (leaf == "id" or leaf.endswith("_id") or leaf in AUTHOR_KEYS)
            and bool(_ID_LIKE.fullmatch(str(value)))
        )

    def _kept(self, path: str, value: str) -> str | None:
        """The value an id or author field keeps, or None when it is redacted like any text. An author written
        as a handle keeps its normalised identity ("@Gone" -> "gone"): what a later erasure matches."""
        if self._id_like(path, value):
            return value
        is_author = self.keep_ids and path.rsplit(".", 1)[-1] in AUTHOR_KEYS
        author = normalize_author(value) if is_author else None
        return author if author and self._id_like(path, author) else None

    def mention(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.mention(v) for v in value]
        if self.redact_handles or identities(value) & self.opted_out:
            self.counts["handle"] += 1
            return self.handle
        return value

    def __call__(self, value: Any, path: str = "", depth: int = 0) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if path in self.keep and not isinstance(value, (dict, list)):
            return value  # a kept path holds a value; objects under it (extra columns) are read like any
        if depth > _MAX_DEPTH:
            return None  # deeper than any real export: dropped rather than left unread
        if isinstance(value, str):
            if self._opted(value):  # an opted-out person's id or handle, wherever it sits, is redacted
                self.counts["handle"] += 1
                return self.handle
            kept = self._kept(path, value)
            return kept if kept is not None else self.text(value)
        if isinstance(value, (int, float)):
            if self._opted(value):  # in_reply_to_user_id of an opted-out person, as a number
                self.counts["handle"] += 1
                return self.handle
            kind = None if self._id_like(path, value) else self.redactor.number_kind(value)
            if kind is None:
                return value
            self.counts[kind] += 1
            return self.redactor._tokens[kind]
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                sub = f"{path}.{k}" if path else str(k)
                key = self.text(k) if isinstance(k, str) else k
                out[key] = self.mention(v) if str(k) in MENTION_KEYS else self(v, sub, depth + 1)
            return out
        if isinstance(value, list):
            return [self(v, path, depth + 1) for v in value]
        return value


def iter_govern(
    posts: Iterable[Post],
    policy: GovernancePolicy,
    audit: AuditReport,
    opted_out: set[str],
    *,
    key: bytes | None = None,
    author_digests: set[str] | None = None,
) -> Iterator[Post]:
    """Single-pass governance for streams: ``opted_out`` must already hold every opted-out author (see
    :func:`collect_opt_outs`); ``audit`` is filled as posts go by, ``author_digests`` (when given) with
    the keyed digest of every author whose words are kept. ``key`` defaults to :func:`keys.load_key`."""
    if key is None:
        key, audit.key_held = load_key()
    redactor = Redactor(
        kinds=tuple(policy.redact),
        tokens=policy.tokens,
        regions=policy.phone_regions,
        ner_model=policy.ner_model,
    )
    with_handles = tuple(dict.fromkeys((*policy.redact, "handle")))
    marker = GovernanceMarker(policy_sha256=policy.digest(key), key_id=key_id(key))
    audit.policy_sha256 = marker.policy_sha256
    audit.opted_out_authors = len(opted_out)
    for post in posts:
        audit.input_posts += 1
        reason = _drop_reason(post, policy, opted_out)
        if reason is not None:
            audit.dropped_posts[reason] += 1
            continue
        counts: Counter[str] = Counter()
        meta_redactor = _MetaRedactor(policy, redactor, counts, opted_out)
        text = meta_redactor.text(post.text)
        replies: list[Reply] = []
        authors = post_authors(post.meta)
        for r in post.replies:
            audit.input_replies += 1
            who = identities(r.author)
            if who & opted_out:
                audit.removed_replies["opted_out_author"] += 1
                continue
            if not who and policy.unknown_reply_author == "drop":
                audit.removed_replies["unknown_author"] += 1
                continue
            author = r.author
            if (
                author is not None
                and "@" in author.strip().lstrip("@＠")
                and redactor.spans(author, ("email",))
            ):
                author = redactor._tokens["email"]  # an email is not an account id to keep
                counts["email"] += 1
            out, c = redactor.redact(r.text, None if who else with_handles)
            counts.update(c)
            out, n = scrub_names(out, opted_out, redactor._tokens["handle"])
            if n:
                counts["handle"] += n
            authors |= who
            replies.append(Reply(text=out, author=author))
        audit.kept_replies += len(replies)
        meta = {k: v for k, v in post.meta.items() if k != MARKER_KEY}  # a previous marker is replaced
        if policy.redact_meta:
            meta = meta_redactor(meta)
        meta[MARKER_KEY] = marker.to_dict()
        for k, n in counts.items():
            audit.redactions[k] += n
        audit.posts_with_redactions += bool(counts)
        audit.kept_posts += 1
        if author_digests is not None:
            author_digests.update(d for d in (author_digest(a, key) for a in authors) if d)
        yield Post(
            id=post.id, image=post.image, text=text, replies=replies, labels=dict(post.labels), meta=meta
        )


def new_audit(policy: GovernancePolicy) -> AuditReport:
    """An empty audit for ``policy``: its published summary and digest, and which NER model finds names
    (loading that model: a bad one fails here, before any post is read)."""
    return AuditReport(
        policy_sha256="",
        policy=policy.public_summary(),
        policy_public_sha256=policy.public_sha256(),
        names=describe(policy.ner_model, "name" in policy.redact),
    )


def govern(
    posts: Iterable[Post], policy: GovernancePolicy | None = None, *, key: bytes | None = None
) -> GovernanceResult:
    """Keep only trainable posts, redact personal data, and count what happened.

    ``posts`` is read twice (opt-out flags first, so an author who opted out on any post loses every
    post and reply); an iterator is materialised. For manifests larger than memory, the ``ximgctx
    govern`` command streams the file twice instead. ``key`` is the operator's governance key (see
    :mod:`ximgctx.governance.keys`); without it, ``$XIMGCTX_GOVERNANCE_KEY`` or a random process key.
    """
    policy = policy or GovernancePolicy()
    posts = posts if isinstance(posts, list) else list(posts)
    held = True
    if key is None:
        key, held = load_key()
    opted_out = collect_opt_outs(posts, policy)
    audit = new_audit(policy)
    audit.key_held = held
    digests: set[str] = set()
    kept = list(iter_govern(posts, policy, audit, opted_out, key=key, author_digests=digests))
    audit.check()
    logger.info(
        "governance: kept %d of %d posts (dropped %s), removed %d replies, redacted %s",
        audit.kept_posts,
        audit.input_posts,
        audit.dropped_posts,
        sum(audit.removed_replies.values()),
        audit.redactions,
    )
    return GovernanceResult(posts=kept, audit=audit, author_digests=digests, key_id=key_id(key))
