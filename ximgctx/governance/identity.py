"""One identity rule for authors, everywhere: posts, replies, quoted/reposted posts, opt-out lists.

An author id is compared only after :func:`normalize_author`: Unicode NFKC, case-folded, surrounding white
space and a leading ``@`` (ASCII or full-width) removed. So ``U_GONE``, `` u_gone`` and ``@u_gone`` are one
author. :func:`author_digest` is the keyed, non-reversible form stored wherever an author must be
recognised later (search indexes, label memories) without being written down.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from typing import Any

__all__ = ["author_digest", "normalize_author"]


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
    text = unicodedata.normalize("NFKC", str(value)).casefold().strip()
    text = text.lstrip("@").strip()
    return text or None


def author_digest(author: Any, key: bytes) -> str | None:
    """HMAC-SHA256 of the normalised author under ``key`` (hex), or None when ``author`` names nobody."""
    norm = normalize_author(author)
    if norm is None:
        return None
    return hmac.new(key, norm.encode("utf-8"), hashlib.sha256).hexdigest()
