"""Erase opted-out authors from everything built so far, and say which models used them
(``ximgctx purge``, in :mod:`ximgctx.cli.purge`).

    ximgctx purge --opt-out opt_out.txt [--index DIR]... [--memory DIR]... [--data FILE]... \
        [--model DIR]... [--key-file governance.key] [--report purge.jsonl]

- ``--index``: every post and reply of those authors leaves the search index (``SearchIndex.remove_authors``,
  FAISS ``remove_ids``), which is saved again in place.
- ``--memory``: the same for a label memory (``LabelMemory.remove_authors``).
- ``--data``: a manifest is rewritten atomically without their posts (own, quoted or reposted: the rule of
  :func:`ximgctx.governance.identity.post_authors`) and without their replies.
- ``--model``: nothing is changed (weights cannot forget); the count of opted-out authors whose words
  trained it is reported from the folder's keyed digest set (:mod:`ximgctx.governance.authors`), a retrain
  signal that names nobody. It needs the key that governed the training data.

One audit line per target (counts only, never ids) goes to stdout, the log, and ``--report`` (JSON lines,
appended).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ximgctx.data.io import load_posts, write_posts
from ximgctx.data.record import Post
from ximgctx.governance.identity import erasure, identities, post_authors

logger = logging.getLogger(__name__)


def purge_posts(posts: Iterable[Post], authors: set[str], counts: dict[str, int]) -> Iterator[Post]:
    """``posts`` without those by (or quoting) ``authors`` and without their replies; fills ``counts``."""
    for post in posts:
        counts["posts"] = counts.get("posts", 0) + 1
        rule = erasure(post_authors(post.meta), [identities(r.author) for r in post.replies], authors)
        if rule.drop_post:
            counts["removed_posts"] = counts.get("removed_posts", 0) + 1
            continue
        kept = [r for i, r in enumerate(post.replies) if i not in rule.drop_replies]
        counts["removed_replies"] = counts.get("removed_replies", 0) + len(post.replies) - len(kept)
        if len(kept) != len(post.replies):
            post = Post(
                id=post.id, image=post.image, text=post.text, replies=kept, labels=post.labels, meta=post.meta
            )
        yield post


def purge_manifest(path: str | Path, authors: set[str]) -> dict[str, int]:
    """Rewrite the manifest at ``path`` without ``authors`` (atomically; untouched on any error)."""
    from ximgctx._artifacts import atomic_output

    counts = {"posts": 0, "removed_posts": 0, "removed_replies": 0}
    with atomic_output(path) as tmp:
        write_posts(purge_posts(load_posts(path, streaming=True), authors, counts), tmp)
    return counts


def _verified_files(folder: Path) -> set[str]:
    """The files of a model folder, after every one is checked against its manifest (the artifact
    module's, or the model saver's own ``ximgctx-model`` manifest of folders saved before it)."""
    from ximgctx._artifacts import verify_artifact
    from ximgctx.errors import ArtifactError

    try:
        return set(verify_artifact(folder, "model").files)
    except ArtifactError:
        from ximgctx.models._serialization import FORMAT, ModelFolderError, verify_folder

        try:
            legacy = (
                json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("format") == FORMAT
            )
        except (OSError, ValueError, AttributeError):
            legacy = False
        if not legacy:
            raise
        try:
            return set(verify_folder(folder)["files"])
        except ModelFolderError as e:
            raise ArtifactError(str(e)) from e


def model_report(folder: str | Path, authors: set[str], key: bytes, key_held: bool) -> dict[str, Any]:
    """How many of ``authors`` trained the model in ``folder`` (its manifest is verified first)."""
    from ximgctx.errors import ArtifactError
    from ximgctx.governance.authors import MODEL_AUTHORS_FILE, read_author_digests, trained_on_counts
    from ximgctx.governance.keys import key_id

    folder = Path(folder)
    if MODEL_AUTHORS_FILE not in _verified_files(folder):
        raise ArtifactError(
            f"{folder}: has no {MODEL_AUTHORS_FILE} in its manifest, so which authors trained it is unknown; "
            "treat it as trained on them and retrain from governed data"
        )
    digests, kid = read_author_digests(folder / MODEL_AUTHORS_FILE)
    if not key_held or kid != key_id(key):
        raise ArtifactError(
            f"{folder}: its author set was made with governance key {kid}, not the key given "
            f"({'none: pass --key-file or set $XIMGCTX_GOVERNANCE_KEY' if not key_held else key_id(key)})"
        )
    n = trained_on_counts(digests, authors, key)
    return {"trained_on_opted_out_authors": n, "authors_in_model": len(digests), "retrain": n > 0}
