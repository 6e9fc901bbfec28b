"""Hugging Face Hub resolution every layer needs (model and dataset loading alike): whether a name is a repo
id or a local path, whether the Hub can be reached, and a repo's local snapshot (downloaded or from the cache,
never a retry loop against an unreachable Hub). Base layer: imports nothing from ximgctx."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["hub_reachable", "is_hub_id", "looks_like_repo_id", "snapshot"]


def looks_like_repo_id(name: str) -> bool:
    """``org/name`` or ``name``: no path separators beyond the one slash, not a relative or absolute path."""
    if not name or name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return False
    return not Path(name).exists()


def is_hub_id(source: str | os.PathLike[str]) -> bool:
    """Whether a model source names a hub repo (a ``str`` such as ``"org/name"`` that is no existing path)
    rather than a local folder (any existing path, or a ``Path``)."""
    return isinstance(source, str) and looks_like_repo_id(source)


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


def snapshot(
    repo_id: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    error: Callable[[str], Exception],
    allow_patterns: list[str] | None = None,
) -> Path:
    """The local snapshot folder of hub repo ``repo_id`` (``huggingface_hub.snapshot_download``).

    When the Hub is unreachable (or ``HF_HUB_OFFLINE`` is set) only the cache is read, so an uncached repo
    fails at once. Every failure raises ``error(why)``, the caller's exception for its own message; ``why``
    says what went wrong (not a valid repo id, not cached while offline, the download's error).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    offline = not hub_reachable()
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=None if cache_dir is None else str(cache_dir),
            allow_patterns=allow_patterns,
            local_files_only=offline,
        )
    except HFValidationError as e:
        raise error(f"{repo_id!r} is not a valid hub repo id ({e})") from None
    except LocalEntryNotFoundError as e:
        why = "the hub cannot be reached (offline, or HF_HUB_OFFLINE is set)" if offline else str(e)
        raise error(f"it is not in the local cache and {why}") from None
    except OSError as e:  # huggingface_hub's HTTP errors (repo not found, gated, network) derive from OSError
        raise error(f"download failed ({e})") from None
    return Path(folder)
