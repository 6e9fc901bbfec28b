"""Model folders on the Hugging Face Hub: download through the cache, verified; upload exactly the verified
files.

``ContextModel.from_pretrained("org/name")`` resolves the repo with ``huggingface_hub.snapshot_download``
(``revision``, ``cache_dir``; offline when ``HF_HUB_OFFLINE`` is set or the hub is unreachable) and verifies
the snapshot against its manifest before anything in it is read. The cache stores snapshot files as symbolic
links to ``blobs/``, so links are accepted only when they stay inside that repo's cache folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ximgctx._artifacts import verify_artifact
from ximgctx._hub import is_hub_id, looks_like_repo_id, snapshot
from ximgctx.errors import ArtifactError

__all__ = [
    "HUB_PREFIX",
    "HubModelError",
    "download_model",
    "looks_like_repo_id",
    "meant_local",
    "push_folder",
    "resolve_model",
    "transformers_hint",
]  # looks_like_repo_id: from ximgctx._hub


#: forces a model source to be read as a hub repo id (``hub:org/name``, ``hub:name``), never a local folder
HUB_PREFIX = "hub:"


class HubModelError(ArtifactError):
    """A model repo cannot be had from the hub or its cache."""


def _uncached(repo_id: str, why: str) -> str:
    return (
        f"cannot load model {repo_id!r} from the Hugging Face Hub: {why}. With network access "
        "(HF_HUB_OFFLINE "
        "unset) it is downloaded into the cache; otherwise run "
        f"huggingface_hub.snapshot_download({repo_id!r}) "
        f"elsewhere and copy the cache here (cache_dir=...), or pass the model folder itself: "
        f"ContextModel.from_pretrained('/path/to/model')."
    )


def download_model(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
) -> Path:
    """The verified local snapshot of model repo ``repo_id`` (downloaded or from the cache)."""
    folder = snapshot(
        repo_id,
        revision=revision,
        cache_dir=cache_dir,
        error=lambda why: HubModelError(_uncached(repo_id, f"{why}, and no folder {repo_id!r} exists here")),
    )
    # snapshots/<commit>/ -> models--org--name/: the blobs the snapshot links to live under it
    repo_cache = folder.parent.parent
    verify_artifact(folder, "model", expected_sha256=expected_sha256, link_root=repo_cache)
    return folder


def resolve_model(
    source: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
) -> tuple[Path, bool]:
    """The local folder of a model source, and whether it is verified already.

    A hub repo id (a ``str`` such as ``"org/name"`` that is no existing path) is downloaded or found in the
    cache and verified against its manifest (and ``expected_sha256``), links into the cache's blobs
    included: ``(snapshot, True)``. Anything else is a local folder, returned as given and not yet verified:
    ``(Path(source), False)``.
    """
    if isinstance(source, str) and source.startswith(HUB_PREFIX):  # a hub id, whatever folders exist here
        repo_id = source[len(HUB_PREFIX) :]
        return download_model(
            repo_id, revision=revision, cache_dir=cache_dir, expected_sha256=expected_sha256
        ), True
    if is_hub_id(source) and not meant_local(str(source)):
        folder = download_model(
            str(source), revision=revision, cache_dir=cache_dir, expected_sha256=expected_sha256
        )
        return folder, True
    return Path(source), False


def meant_local(source: str) -> bool:
    """Whether a name that does not exist is a mistyped local folder rather than a hub id: it has no ``/``
    (ximgctx models on the hub are ``org/name``; ``hub:name`` names a namespace-less repo), or its first part
    is a folder here (``runs/bset`` when ``runs/`` exists)."""
    head, sep, _ = source.partition("/")
    return not sep or Path(head).is_dir()


def transformers_hint(folder: str | os.PathLike[str]) -> str:
    """A hint when ``folder`` holds a Hugging Face ``transformers`` checkpoint (a ``config.json`` with a
    ``model_type``), so that a user who passed it as an ximgctx model or an open_clip architecture learns
    what it is; ``""`` otherwise."""
    import json

    config = Path(folder) / "config.json"
    try:
        if not config.is_file() or config.stat().st_size > 1 << 20:
            return ""
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(raw, dict) or "model_type" not in raw or "format" in raw:  # ximgctx's has "format"
        return ""
    return (
        f"; {folder} looks like a transformers folder (model_type={raw['model_type']!r}): use it as the "
        f"encoder with backend='transformers' (EncoderConfig(backend='transformers', "
        f"arch={str(folder)!r}), on the command line model.encoder.backend=transformers "
        f"model.encoder.arch={folder})"
    )


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload ximgctx model",
    create_pr: bool = False,
    api: Any = None,
) -> Any:
    """Upload exactly the files of the verified model ``folder`` (its manifest and every file it lists) in one
    commit, deleting files a previous version left in the repo; returns the hub's commit info."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    manifest = verify_artifact(folder, "model")
    names = sorted(set(manifest.files) | {"manifest.json"})
    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
    existing = set(api.list_repo_files(repo_id, revision=revision, repo_type="model", token=token))
    stale = sorted(existing - set(names) - {".gitattributes"})
    operations: list[Any] = [CommitOperationDelete(path_in_repo=name) for name in stale]
    operations += [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names
    ]
    return api.create_commit(
        repo_id,
        operations=operations,
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
        repo_type="model",
        token=token,
    )
