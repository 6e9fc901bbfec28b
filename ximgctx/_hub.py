"""Hugging Face Hub facts every layer needs (model and dataset loading alike): whether a name is a repo id,
and whether the Hub can be reached. Base layer: imports nothing from ximgctx."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["hub_reachable", "looks_like_repo_id"]


def looks_like_repo_id(name: str) -> bool:
    """``org/name`` or ``name``: no path separators beyond the one slash, not a relative or absolute path."""
    if not name or name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return False
    return not Path(name).exists()


def hub_reachable(timeout: float = 3.0) -> bool:
    """False at once under ``HF_HUB_OFFLINE``; else whether the Hub's host accepts a TCP connection."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of open_clip
        host = "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
