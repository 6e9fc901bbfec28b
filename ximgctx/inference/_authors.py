"""Keyed author digests stored with index records and memory entries, so an opted-out author's posts can be
found and removed later (``ximgctx purge``) without the artifact ever writing an author id down.

Each artifact holds its own random key (hex, in its ``index.json`` / ``memory.json``): digests from two
artifacts cannot be joined with each other, and without the artifact's key a digest names nobody.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from ximgctx.data.record import Post
from ximgctx.errors import ArtifactError
from ximgctx.governance.identity import AUTHOR_KEYS as IDENTITY_AUTHOR_KEYS
from ximgctx.governance.identity import author_digest, post_authors

__all__ = ["AUTHOR_KEYS", "digests_of", "new_author_key", "parse_author_key", "post_author_digests"]

#: ``meta`` keys that name a post's author: the governance identity rule's, so that what governance would
#: drop for an opted-out author is exactly what erasure finds
AUTHOR_KEYS = IDENTITY_AUTHOR_KEYS


def new_author_key() -> bytes:
    """A fresh random 32-byte key for one artifact's author digests."""
    return secrets.token_bytes(32)


def parse_author_key(raw: Any, where: str) -> bytes:
    """The key as written in an artifact's JSON (64 hex characters)."""
    if not isinstance(raw, str) or len(raw) != 64:
        raise ArtifactError(f"{where}: author_key must be 64 hex characters")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise ArtifactError(f"{where}: author_key must be 64 hex characters") from None


def _post_authors(post: Post) -> list[Any]:
    """Everyone whose words a post carries, by the governance identity rule: its author under any of
    :data:`AUTHOR_KEYS`, the authors of posts quoted or reposted inside its meta, and its replies' authors."""
    return [*sorted(post_authors(post.meta)), *(r.author for r in post.replies if r.author is not None)]


def post_author_digests(post: Post, key: bytes) -> list[str]:
    """Sorted distinct keyed digests of a post's author and its replies' authors."""
    return digests_of(_post_authors(post), key)


def digests_of(authors: Iterable[Any], key: bytes) -> list[str]:
    """Sorted distinct keyed digests of ``authors`` (normalised first; ids naming nobody are skipped)."""
    return sorted({d for a in authors if (d := author_digest(a, key)) is not None})
