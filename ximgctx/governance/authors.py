"""Which authors a model was trained on, kept so that nobody can read it: a keyed digest set.

``govern`` returns :attr:`GovernanceResult.author_digests`: HMAC-SHA256 (the operator's key) of every
author whose words were kept (post authors, quoted authors, reply authors); :func:`author_digests_of`
computes the same set from a governed manifest's posts. Training (``train`` and ``pretrain``) writes the
set of its training posts, under ``$XIMGCTX_GOVERNANCE_KEY``, into every model folder it saves as
:data:`MODEL_AUTHORS_FILE` (listed in the folder's manifest like every other file); by hand::

    from ximgctx.governance.authors import author_digests_of, model_authors_bytes
    from ximgctx.governance.keys import load_key
    key, held = load_key(key_file)                      # the key that governed the data
    model.save_pretrained(out, authors=model_authors_bytes(author_digests_of(train_posts, key), key))

Later, ``ximgctx purge --model DIR --opt-out FILE --key-file KEY`` counts how many opted-out authors are in
the set (:func:`trained_on_counts`): a retrain signal that reveals nobody else, since testing membership
needs the key. The key itself is never written to the folder; only its
:func:`~ximgctx.governance.keys.key_id`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ximgctx.errors import ArtifactError
from ximgctx.governance.identity import author_digest
from ximgctx.governance.keys import key_id

MODEL_AUTHORS_FILE = "governance/authors.json"
FORMAT = "ximgctx.author-digests"
VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_DIGESTS = 50_000_000  # a bound on what a stranger's file may make us hold


def author_digest_record(digests: Iterable[str], key: bytes) -> dict[str, Any]:
    """The JSON record of a digest set: format, version, the key's public id, sorted digests."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "digest": "hmac-sha256",
        "key_id": key_id(key),
        "digests": sorted(set(digests)),
    }


def model_authors_bytes(digests: Iterable[str], key: bytes) -> bytes:
    """The bytes of :data:`MODEL_AUTHORS_FILE` for a model trained on the authors of ``digests``."""
    return (json.dumps(author_digest_record(digests, key)) + "\n").encode("utf-8")


def author_digests_of(posts: Iterable[Any], key: bytes) -> set[str]:
    """The keyed digests of every author whose words ``posts`` (governed posts) hold: post, quoted and
    reply authors, by the one identity rule."""
    from ximgctx.governance.identity import identities, post_authors

    out: set[str] = set()
    for p in posts:
        names = post_authors(p.meta).union(*(identities(r.author) for r in p.replies))
        out.update(d for d in (author_digest(a, key) for a in names) if d)
    return out


def write_author_digests(path: str | Path, digests: Iterable[str], key: bytes) -> None:
    """Write :func:`author_digest_record` to ``path`` atomically."""
    from ximgctx._artifacts import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_bytes(model_authors_bytes(digests, key))


def read_author_digests(path: str | Path) -> tuple[set[str], str]:
    """``(digests, key_id)`` from a digest-set file; raises ArtifactError naming the file if malformed."""
    path = Path(path)
    try:
        if path.stat().st_size > 80 * _MAX_DIGESTS:
            raise ArtifactError(f"{path}: too large for an author digest set")
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ArtifactError(
            f"{path}: no author digest set; the model was saved without governance.authors "
            "(retrain from governed data with the author set passed to save_pretrained)"
        ) from e
    except OSError as e:
        raise ArtifactError(f"{path}: not a readable author digest set: {e}") from e
    return parse_author_digests(data, str(path))


def parse_author_digests(data: bytes, where: str) -> tuple[set[str], str]:
    """``(digests, key_id)`` from the bytes of a digest-set file; ArtifactError naming ``where`` if
    malformed."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{where}: not a readable author digest set: {e}") from e
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("version") != VERSION:
        raise ArtifactError(f"{where}: not an author digest set (format {FORMAT!r}, version {VERSION})")
    digests, kid = record.get("digests"), record.get("key_id")
    if not isinstance(digests, list) or not all(isinstance(d, str) and _HEX64.fullmatch(d) for d in digests):
        raise ArtifactError(f"{where}: 'digests' must be a list of 64-hex HMAC-SHA256 digests")
    if not isinstance(kid, str):
        raise ArtifactError(f"{where}: 'key_id' is missing")
    return set(digests), kid


def trained_on_counts(digest_set: set[str], opt_out_authors: Iterable[str], key: bytes) -> int:
    """How many of ``opt_out_authors`` have a digest (under ``key``) in ``digest_set``."""
    found = {author_digest(a, key) for a in opt_out_authors} - {None}
    return len(found & digest_set)
