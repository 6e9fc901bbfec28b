"""The served model as one swappable bundle, and where a new one may come from (used by
:class:`ximgctx.serve.app.Service`).

A server holds one :class:`ServedModel` at a time: the predictor, the moderator over it, ``NAME@DIGEST``, a
version label and the time it was loaded. Every request reads the bundle once when it starts
(:meth:`ServedModel.pin`) and is answered by that bundle alone, so a response's ``model`` always names the
weights that computed it. ``Service.swap`` loads a new model beside the served one on a thread of its own,
then makes it the served bundle in one assignment; requests that started on the old bundle, queued in a
batch included, finish on it, and the old bundle is released when its last request is answered.

A reload request names a folder; the server reads only folders under the operator's ``--model-root``
(:func:`folder_under_root`): a request body is untrusted, and a path in it must not make the server read
anything else. A reloaded folder is verified against its manifest (and the ``expected_sha256`` given), may
not load an architecture from outside ximgctx (``--trust-remote-arch`` covers the startup model only), and
must have the served model's tasks (:func:`check_same_tasks`): the moderation policy, the loop store's labels
and the label queue all speak them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ximgctx.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "ModelSource",
    "ServedModel",
    "SwapError",
    "check_same_tasks",
    "folder_under_root",
    "registry_source",
]


class SwapError(InputError):
    """A model could not be swapped in; the served model is unchanged."""


@dataclass(frozen=True)
class ModelSource:
    """What a swap loads: a model folder, the digest it must have (its manifest's SHA-256) and the version
    label responses report (the registry's version number, the operator's label, or the digest)."""

    folder: Path
    expected_sha256: str | None = None
    version: str | None = None


@dataclass(eq=False)
class ServedModel:
    """One loaded model and everything the service derived from it (compared by identity)."""

    predictor: Any
    moderator: Any
    name: str  # NAME@DIGEST, the "model" of responses
    version: str  # the version label (registry version, the operator's, else the digest's first 12 digits)
    digest: str | None  # the SHA-256 of the model's manifest
    source: str  # the folder it was loaded from (logs only: responses never carry a server path)
    loaded_at: float = field(default_factory=time.time)  # unix time the bundle was made ready
    base_memory: Any = None  # the files' label memory when it was built by this model, else None
    generation: int | None = None  # the loop store generation its label memory was derived at
    files_epoch: int = -1  # the service's files-memory epoch it was derived at (erasures bump it)
    embedded: dict[str, Any] = field(default_factory=dict)  # post digest -> fused embedding (this model's)
    in_flight: int = 0  # requests that started on this bundle and are not answered yet
    retired: bool = False  # another bundle is served; this one is released when in_flight reaches 0
    released: bool = False

    @property
    def processor(self) -> Any:
        return self.predictor.model.processor

    @property
    def tasks(self) -> list[Any]:
        return list(self.predictor.model.config.tasks)

    def describe(self) -> dict[str, Any]:
        """What ``/readyz``, ``/v1/models`` and the reload answer say about this bundle."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "loaded_at": round(self.loaded_at, 3),
        }

    @contextmanager
    def pin(self, on_idle: Any) -> Iterator[ServedModel]:
        """Count a request in flight on this bundle (on the event loop); ``on_idle(self)`` is called when a
        retired bundle's last request is answered."""
        self.in_flight += 1
        try:
            yield self
        finally:
            self.in_flight -= 1
            if self.retired and self.in_flight == 0:
                on_idle(self)

    def release(self) -> None:
        """Drop the model (its weights are freed once nothing else holds the predictor, such as a search
        index built with it)."""
        if self.released:
            return
        self.released = True
        self.predictor = self.moderator = self.base_memory = None
        self.embedded = {}


def folder_under_root(given: str, root: str | Path | None) -> Path:
    """The model folder a reload request names, resolved (symlinks followed) and refused unless it is a
    folder under ``root``. Errors name the request's path, never the root's place on disk."""
    if not root:
        raise SwapError(
            "model: this server reloads named folders only under its --model-root, and has none; send an "
            "empty body to reload the configured model"
        )
    if not isinstance(given, str) or not given.strip() or "\0" in given:
        raise SwapError("model: give a folder under the server's model root")
    base = Path(root).resolve()
    candidate = Path(given)
    candidate = candidate if candidate.is_absolute() else base / candidate
    try:
        folder = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        folder = None
    if folder is None or not folder.is_relative_to(base):
        # one answer for "outside" and "missing": the reply must not tell what exists outside the root
        raise SwapError(f"model: {given!r} is not a model folder under the server's model root")
    if not folder.is_dir():
        raise SwapError(f"model: {given!r} is not a folder")
    return folder


def check_same_tasks(served: list[Any], new: list[Any]) -> None:
    """Refuse a model whose tasks (names, kinds, labels, sources) differ from the served model's."""

    def spec(t: Any) -> tuple[str, str, tuple[str, ...], str]:
        return (t.name, t.kind, tuple(t.labels), t.source)

    have, got = [spec(t) for t in served], [spec(t) for t in new]
    if have != got:
        changed = sorted({s[0] for s in have} ^ {s[0] for s in got}) or sorted(
            a[0] for a, b in zip(have, got, strict=False) if a != b
        )
        raise SwapError(
            "model: its tasks differ from the served model's (the policy, the loop store and the label queue "
            f"speak the served tasks); differing: {changed or 'the order of the tasks'}"
        )


def registry_source(registry: Any) -> Callable[[], tuple[str, Path, str] | None]:
    """The model source of a :class:`~ximgctx.queue.registry.Registry`: ``(version, folder, digest)`` of its
    promoted version (None before the first promotion), read from the store at each poll; a promotion or a
    rollback changes it, and the server swaps."""

    def promoted() -> tuple[str, Path, str] | None:
        _, version = registry.served()
        if version is None:
            return None
        return str(version.version), Path(version.path), str(version.digest)

    return promoted
