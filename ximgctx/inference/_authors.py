"""Keyed author digests stored with index records and memory entries, so an opted-out author's posts can be
found and removed later (``ximgctx purge``) without the artifact ever writing an author id down.

The key is the operator's governance key (:mod:`ximgctx.governance.keys`: ``--key-file`` or
``$XIMGCTX_GOVERNANCE_KEY``), never a key stored in the artifact: ``index.json`` / ``memory.json`` hold only
its public :func:`~ximgctx.governance.keys.key_id`. Whoever holds the folder alone cannot test whether an
author is in it (the digest cannot be recomputed without the key); whoever holds the key can erase them.
Without an operator key the process draws a random one: the digests are then unmatchable for ever, and the
saved folder says so (``author_key_held: false``), so ``purge`` refuses it with a clear message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ximgctx.data.record import Post
from ximgctx.errors import ArtifactError
from ximgctx.governance.identity import AUTHOR_KEYS as IDENTITY_AUTHOR_KEYS
from ximgctx.governance.identity import author_digest, post_authors
from ximgctx.governance.keys import ENV_VAR, key_id, load_key

__all__ = [
    "AUTHOR_KEYS",
    "AuthorKey",
    "digests_of",
    "post_author_digests",
]

#: ``meta`` keys that name a post's author: the governance identity rule's, so that what governance would
#: drop for an opted-out author is exactly what erasure finds
AUTHOR_KEYS = IDENTITY_AUTHOR_KEYS


class AuthorKey:
    """The key an artifact's author digests are made with: the bytes when this process holds them, always
    the public id (and whether an operator held the key when the digests were made).

    Args:
        key: the key bytes, or None when this process does not hold the key the artifact was made with.
        kid: its :func:`key_id`.
        held: True when the key is the operator's (a key file or the environment), False for a process's
            random key (digests nobody can ever match again).
    """

    def __init__(self, key: bytes | None, kid: str, held: bool) -> None:
        self.key = key
        self.id = kid
        self.held = held

    @classmethod
    def operator(cls, key: bytes | None = None) -> AuthorKey:
        """``key`` (the operator's, held), or the governance key from ``$XIMGCTX_GOVERNANCE_KEY``, or this
        process's random key (not held)."""
        if key is not None:
            return cls(key, key_id(key), True)
        raw, held = load_key()
        return cls(raw, key_id(raw), held)

    @classmethod
    def for_saved(cls, saved: dict[str, Any], key: bytes | None, where: str) -> AuthorKey:
        """The key of an artifact whose JSON (``saved``) names ``author_key_id`` and ``author_key_held``: the
        bytes only when ``key`` (or the operator's from the environment) has that id."""
        if "author_key" in saved:
            raise ArtifactError(
                f"{where}: written by ximgctx < 0.2, which stored its author key beside the author digests "
                "it protects; rebuild this folder (its authors cannot be re-keyed without their ids): "
                "`ximgctx index` / `ximgctx memory add` with the governance key in --key-file or "
                f"${ENV_VAR}"
            )
        kid, held = saved.get("author_key_id"), saved.get("author_key_held")
        if not isinstance(kid, str) or len(kid) != 16 or not isinstance(held, bool):
            raise ArtifactError(f"{where}: author_key_id (16 hex) and author_key_held (bool) are required")
        mine = cls.operator(key)
        return cls(mine.key if mine.id == kid else None, kid, held)

    def to_json(self) -> dict[str, Any]:
        """What an artifact saves: the key's id and whether it was an operator's, never the key."""
        return {"author_key_id": self.id, "author_key_held": self.held}

    def require(self, where: str) -> bytes:
        """The key bytes, or an ArtifactError saying which key is needed (and where to give it)."""
        if self.key is not None:
            return self.key
        if not self.held:
            raise ArtifactError(
                f"{where}: its author digests were made with a random key of the process that built it (no "
                f"governance key was given), so no author in it can ever be found; rebuild it with the "
                f"governance key in --key-file or ${ENV_VAR}"
            )
        raise ArtifactError(
            f"{where}: its author digests were made with governance key {self.id}; give that key "
            f"(--key-file or ${ENV_VAR}) to add posts to it or erase authors from it"
        )


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
