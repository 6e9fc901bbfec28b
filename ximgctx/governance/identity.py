"""One identity rule for authors, everywhere: posts, replies, quoted/reposted posts, opt-out lists.

An author id is compared only after :func:`normalize_author`: Unicode NFKC, case-folded, surrounding white
space and a leading ``@`` (ASCII or full-width) removed. So ``U_GONE``, `` u_gone`` and ``@u_gone`` are one
author. :func:`author_digest` is the keyed, non-reversible form stored wherever an author must be
recognised later (search indexes, label memories) without being written down.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Sequence, Set
from typing import Any, NamedTuple

from ximgctx.data.record import ACCOUNT_ID_KEYS, AUTHOR_KEYS

__all__ = [
    "AUTHOR_KEYS",
    "MENTION_KEYS",
    "REFERENCE_KEYS",
    "author_digest",
    "author_of",
    "erasure",
    "identities",
    "normalize_author",
    "post_authors",
]


def normalize_author(value: Any) -> str | None:
    """The canonical form of an author id or handle, or None when ``value`` names nobody."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, dict):  # {"id": ..., "name": ...} / {"username": ...}
        for key in ("id", "user_id", "username", "screen_name", "handle", "name"):
            found = normalize_author(value.get(key))
            if found:
                return found
        return None
    text = _ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", str(value))).casefold().strip()
    url = _PROFILE_URL.match(text)
    if url:  # a profile URL names its account: x.com/name, host/@name, bsky.app/profile/h, reddit.com/user/n
        host = url.group(1) or url.group(3)
        path = [p for p in (url.group(2) or url.group(4) or "").split("/") if p]
        if path and path[0].startswith("@"):
            return f"{path[0][1:]}@{host}" if path[0][1:] else None
        if len(path) >= 2 and path[0] in ("profile", "user", "u", "users"):
            return path[1] or None
        return path[0] if path else None
    text = re.sub(r"^/?u/(?=[\w-]{2,})", "", text)  # Reddit u/name
    text = text.lstrip("@").strip()
    return text or None


_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")
_PROFILE_URL = re.compile(
    r"^(?:https?://(?:www\.|m\.|old\.|mobile\.)?([a-z0-9.-]+\.[a-z]{2,})(/[^?#\s]*)?"
    r"|(?:www\.)?([a-z0-9.-]+\.[a-z]{2,})(/[^?#\s]+))/?$"
)


def author_digest(author: Any, key: bytes) -> str | None:
    """HMAC-SHA256 of the normalised author under ``key`` (hex), or None when ``author`` names nobody."""
    norm = normalize_author(author)
    if norm is None:
        return None
    return hmac.new(key, norm.encode("utf-8"), hashlib.sha256).hexdigest()


#: keys holding accounts *mentioned* by a post rather than its authors (redacted, never a drop reason)
MENTION_KEYS = (
    "mentions",
    "mentioned_users",
    "user_mentions",
    "mention",
    "tagged_users",
    "in_reply_to_screen_name",
)
#: keys naming accounts a post refers to (mentions, the account replied to, expansions of both): never its
#: author, so never a drop reason; identifiers there of opted-out people are redacted (core._MetaRedactor)
REFERENCE_KEYS = (
    *MENTION_KEYS,
    "in_reply_to_user_id",
    "in_reply_to_user_id_str",
    "in_reply_to_account_id",
    "includes",  # X API v2 expansions: the author (found by author_id) beside every mentioned account
    "entities",
    "facets",  # Bluesky mention facets
    "tag",  # ActivityPub Mention tags
    "reply",  # Bluesky reply references (the parent's and root's AT-URIs)
    "parent_id",
    "reply_authors",  # the account objects of a post's replies, kept by adapters for the identity rule
)


def identities(value: Any) -> set[str]:
    """Every normalised author id an author value names: ``{id, username, name}`` gives all three."""
    if isinstance(value, dict):
        found: set[str] = set()
        for key in ACCOUNT_ID_KEYS:
            norm = normalize_author(value.get(key)) if not isinstance(value.get(key), dict) else None
            if norm:
                found.add(norm)
        return found
    if isinstance(value, list):
        return set().union(*(identities(v) for v in value)) if value else set()
    norm = normalize_author(value)
    return {norm} if norm else set()


def post_authors(meta: Any, *, _depth: int = 0) -> set[str]:
    """The authors a post's ``meta`` names at any depth: its own author keys and those of quoted,
    reposted, embedded or original records inside it (all count: a quote carries its author's words).
    Mentions and references (:data:`REFERENCE_KEYS`) are not authors."""
    found: set[str] = set()
    if _depth > 32:
        return found
    if isinstance(meta, dict):
        for key, value in meta.items():
            k = str(key)
            if k in REFERENCE_KEYS:
                continue
            if k in AUTHOR_KEYS and not (isinstance(value, dict) and _is_record(value)):
                found |= identities(value)
            if isinstance(value, (dict, list)):
                found |= post_authors(value, _depth=_depth + 1)
    elif isinstance(meta, list):
        for v in meta:
            found |= post_authors(v, _depth=_depth + 1)
    return found


def _is_record(value: dict[str, Any]) -> bool:
    # {"author": {"id": ..., "name": ...}} is an author; {"user": {"author": ..., "text": ...}} a record
    return any(k in value for k in AUTHOR_KEYS)


def author_of(meta: Any) -> str | None:
    """The post's own author: the first key of :data:`AUTHOR_KEYS` at the top of ``meta`` naming someone."""
    if not isinstance(meta, dict):
        return None
    for key in AUTHOR_KEYS:
        norm = normalize_author(meta.get(key))
        if norm:
            return norm
    return None


class Erasure(NamedTuple):
    """What an opt-out takes out of one post: the whole post, or some of its replies (by position)."""

    drop_post: bool
    drop_replies: tuple[int, ...]


def erasure(
    post_authors: Iterable[str], reply_authors: Sequence[Iterable[str]] | None, opted_out: Set[str]
) -> Erasure:
    """The one erasure rule, shared by every place that holds posts (manifests, shard folders, the search
    index, the label memory, the labeling queue), whether it compares normalised ids or keyed digests.

    A post goes when one of ``post_authors`` (its own author and the authors of posts it quotes or reposts:
    :func:`post_authors`) opted out: a quote carries its author's words. A reply by an opted-out author is
    taken out of the post, which stays. When the replies cannot be taken out alone (``reply_authors`` None:
    an embedding or a digest set computed over the post with its replies), a reply by an opted-out author
    takes the whole post with it, since what is kept would still be derived from their words.
    """
    if reply_authors is None:
        return Erasure(not opted_out.isdisjoint(post_authors), ())
    if not opted_out.isdisjoint(post_authors):
        return Erasure(True, ())
    return Erasure(False, tuple(i for i, who in enumerate(reply_authors) if not opted_out.isdisjoint(who)))
