"""Small filesystem helpers shared by every writer of a folder artefact (models, indexes)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def replace_folder(tmp: Path, path: Path) -> Path:
    """Move the completed folder ``tmp`` to ``path``, replacing an existing one.

    A reader sees the old folder or the new one, never a half-written mix: the old folder is renamed
    aside first and removed only once the new one is in place.
    """
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (manifests of models and indexes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
