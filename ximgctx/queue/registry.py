"""The model registry: every model the learning loop made (or the operator adopted), as a verified folder
under the registry root and a row in the store, with its lineage, scores and gate verdict; one of them is
promoted (served).

- **Versions** (:class:`ModelVersion`) are numbered 1, 2, ... A version's folder is a copy of a saved model
  folder's verified artifacts at ``root/versions/v{n}-{digest[:12]}``: copied under a temporary name, checked
  against the source's artifact digest (the SHA-256 of its ``manifest.json``, which hashes every file: the
  same value as ``Predictor.model_digest``), then renamed into place, so a version's folder is complete or
  absent. Rows hold the folder relative to the root; a path read back that leaves the root (a hostile or
  damaged row) is refused, and so is a folder whose digest is not the row's.
- **Lineage**: ``parent`` (the version that served when this one was trained), ``data`` (digests of every
  data source and of the new-label set, label counts), ``metrics`` (the serving and candidate scorecards),
  ``verdict`` (the promotion gate's), who and when. Rows are never deleted.
- **Promotion**: :meth:`Registry.promote` makes a version the served one, :meth:`Registry.rollback` goes back
  to the version promoted before the current one. Each is one transaction that moves the statuses, bumps the
  *model generation* (:meth:`Registry.generation`; servers poll it to swap models; it is separate from the
  label generation of :mod:`ximgctx.queue.loop`, so a promotion does not rebuild label memories and a vote
  does not reload a model), writes a promotion row and an audit row.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from ximgctx._artifacts import artifact_digest, verify_artifact
from ximgctx.errors import InputError
from ximgctx.queue.db import transaction
from ximgctx.queue.loop import audit
from ximgctx.queue.models import ModelVersionRow, PromotionRow, RegistryState

if TYPE_CHECKING:
    from ximgctx.queue.store import QueueStore

__all__ = ["ModelVersion", "Registry", "RegistryError", "Status", "version_path"]

#: a version's status: trained and not yet decided, served now, refused by the gate, served before
Status = Literal["candidate", "promoted", "refused", "retired"]
STATUSES: tuple[Status, ...] = ("candidate", "promoted", "refused", "retired")
MODEL_KIND = "model"
VERSIONS = "versions"


class RegistryError(InputError):
    """A registry operation that cannot be done: an unknown version, nothing to roll back to, a row whose
    folder is missing, altered or outside the root."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version (what :class:`Registry` returns; JSON-able with :meth:`to_dict`)."""

    version: int
    name: str
    digest: str  # the folder's artifact SHA-256 (Predictor.model_digest)
    path: Path  # the folder, absolute, inside the registry root
    parent: int | None
    status: Status
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    who: str = ""
    role: str = ""
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "digest": self.digest,
            "path": str(self.path),
            "parent": self.parent,
            "status": self.status,
            "data": self.data,
            "metrics": self.metrics,
            "verdict": self.verdict,
            "who": self.who,
            "role": self.role,
            "created_at": self.created_at,
        }


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _loads(text: str | None, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError as e:
        raise RegistryError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise RegistryError(f"{where}: expected a JSON object")
    return value


def version_path(root: Path, rel: str, where: str) -> Path:
    """The absolute folder a row names (relative to ``root``), refused when it is absolute, has ``..`` or a
    link, or otherwise resolves outside ``root``."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise RegistryError(f"{where}: path {rel!r} is not a relative path")
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RegistryError(f"{where}: path {rel!r} leaves the registry root {root}")
    path = root / rel
    resolved = path.resolve()
    if not resolved.is_relative_to(root) or resolved != path:
        raise RegistryError(f"{where}: path {rel!r} resolves outside the registry root {root} (a link)")
    return path


def _state(s: OrmSession, dialect: str) -> RegistryState:
    """The registry's one state row, locked for the transaction (PostgreSQL: FOR UPDATE; SQLite's
    transactions are BEGIN IMMEDIATE, one writer at a time): registry writes happen one after another."""
    query = select(RegistryState).where(RegistryState.id == 1)
    if dialect == "postgresql":
        query = query.with_for_update()
    row = s.scalar(query)
    if row is None:
        raise LookupError("the store has no model registry state row (migration 0005 did not run)")
    return row


class Registry:
    """The model registry over a :class:`~ximgctx.queue.QueueStore`'s database and a root folder.

    Args:
        store: the queue / loop store (SQLite or PostgreSQL).
        root: the folder that holds every version's model folder (created if missing).
    """

    def __init__(self, store: QueueStore, root: str | os.PathLike[str]) -> None:
        self.store = store
        self.sessions = store.sessions
        self.dialect = store.dialect
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        (self.root / VERSIONS).mkdir(exist_ok=True)

    # ----------------------------------------------------------------------------------------- reading
    def _version(self, row: ModelVersionRow) -> ModelVersion:
        where = f"registry version {row.version}"
        if row.status not in STATUSES:
            raise RegistryError(f"{where}: unknown status {row.status!r}")
        return ModelVersion(
            version=row.version,
            name=row.name,
            digest=row.digest,
            path=version_path(self.root, row.path, where),
            parent=row.parent,
            status=row.status,
            data=_loads(row.data, f"{where}: data"),
            metrics=_loads(row.metrics, f"{where}: metrics"),
            verdict=_loads(row.verdict, f"{where}: verdict"),
            who=row.who,
            role=row.role,
            created_at=row.created_at,
        )

    def generation(self) -> int:
        """The model generation: bumped by every promotion and rollback (servers poll it)."""
        with self.sessions() as s:
            row = s.get(RegistryState, 1)
        if row is None:
            raise LookupError("the store has no model registry state row (migration 0005 did not run)")
        return row.generation

    def get(self, version: int) -> ModelVersion:
        with self.sessions() as s:
            row = s.get(ModelVersionRow, int(version))
            if row is None:
                raise RegistryError(f"the registry has no version {version}")
            return self._version(row)

    def promoted(self) -> ModelVersion | None:
        """The version served now, or None before the first promotion (see :meth:`adopt`)."""
        with self.sessions() as s:
            state = s.get(RegistryState, 1)
            if state is None or state.promoted is None:
                return None
            row = s.get(ModelVersionRow, state.promoted)
            if row is None:
                raise RegistryError(f"the promoted version {state.promoted} has no registry row")
            return self._version(row)

    def served(self) -> tuple[int, ModelVersion | None]:
        """The model generation and the promoted version, read in one transaction (so the two agree)."""
        with self.sessions() as s:
            state = s.get(RegistryState, 1)
            if state is None:
                raise LookupError("the store has no model registry state row (migration 0005 did not run)")
            row = s.get(ModelVersionRow, state.promoted) if state.promoted is not None else None
            return state.generation, (self._version(row) if row is not None else None)

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first."""
        with self.sessions() as s:
            return [
                self._version(r) for r in s.scalars(select(ModelVersionRow).order_by(ModelVersionRow.version))
            ]

    def lineage(self, version: int) -> list[ModelVersion]:
        """``version`` and its ancestors, newest first (the first version has no parent)."""
        out: list[ModelVersion] = []
        seen: set[int] = set()
        current: int | None = int(version)
        while current is not None:
            if current in seen:
                raise RegistryError(f"registry version {version}: its lineage loops at version {current}")
            seen.add(current)
            v = self.get(current)
            out.append(v)
            current = v.parent
        return out

    def by_digest(self, digest: str) -> list[ModelVersion]:
        """The versions whose folder has this artifact digest, oldest first."""
        with self.sessions() as s:
            rows = s.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.digest == digest)
                .order_by(ModelVersionRow.version)
            )
            return [self._version(r) for r in rows]

    def promotions(self) -> list[dict[str, Any]]:
        """Every change of the promoted version, oldest first: ``{who, role, when, action, from, to,
        why}``."""
        with self.sessions() as s:
            rows = list(s.scalars(select(PromotionRow).order_by(PromotionRow.id)))
        return [
            {
                "who": r.who,
                "role": r.role,
                "when": r.at,
                "action": r.action,
                "from": r.from_version,
                "to": r.to_version,
                "why": r.why,
            }
            for r in rows
        ]

    def verify(self, version: ModelVersion | int) -> ModelVersion:
        """Check a version's folder against its row (every file against the manifest, the manifest against
        the row's digest); returns the version. Raises :class:`~ximgctx.errors.ArtifactError`."""
        v = self.get(version) if isinstance(version, int) else version
        verify_artifact(v.path, MODEL_KIND, expected_sha256=v.digest)
        return v

    # ----------------------------------------------------------------------------------------- writing
    def _copy_in(self, folder: Path) -> tuple[Path, str]:
        """Copy a model folder's verified artifacts to a temporary folder under the root; returns it and the
        digest. The copy is checked again against the source's digest after it is written."""
        source = Path(folder)
        verify_artifact(source, MODEL_KIND)
        digest = artifact_digest(source)
        tmp = self.root / VERSIONS / f".tmp-{secrets.token_hex(6)}"
        try:
            # a file changed, added or linked in the source after the check above fails the copy's check
            shutil.copytree(source, tmp, symlinks=True)
            verify_artifact(tmp, MODEL_KIND, expected_sha256=digest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp, digest

    def register(
        self,
        folder: str | os.PathLike[str],
        *,
        parent: int | None,
        data: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        verdict: Mapping[str, Any] | None = None,
        who: str,
        role: str = "admin",
        name: str | None = None,
    ) -> ModelVersion:
        """Add a model folder as the next version, status ``candidate`` (see :meth:`promote`, :meth:`refuse`).

        The folder's artifacts are verified, copied under the root, verified again against the source's
        digest and renamed into ``versions/v{n}-{digest[:12]}`` in the transaction that writes the row: a
        crash leaves either both or a stray temporary folder (never a row without its folder)."""
        if parent is not None:
            self.get(parent)  # refused by name when unknown
        tmp, digest = self._copy_in(Path(folder))
        final: Path | None = None
        try:
            with transaction(self.sessions) as s:
                _state(s, self.dialect)
                n = (s.scalar(select(func.max(ModelVersionRow.version))) or 0) + 1
                rel = f"{VERSIONS}/v{n}-{digest[:12]}"
                final = self.root / rel
                if final.exists():  # a folder left by a crash after its rename, before its row: replaced
                    shutil.rmtree(final)
                os.replace(tmp, final)
                row = ModelVersionRow(
                    version=n,
                    name=name or Path(folder).name,
                    digest=digest,
                    path=rel,
                    parent=parent,
                    status="candidate",
                    data=_json(dict(data or {})),
                    metrics=_json(dict(metrics or {})),
                    verdict=_json(dict(verdict or {})),
                    who=who,
                    role=role,
                    created_at=time.time(),
                )
                s.add(row)
                audit(s, who, role, "register", f"model:v{n}", {"digest": digest, "parent": parent})
                s.flush()
                out = self._version(row)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if final is not None and not self._has_row_for(final):
                shutil.rmtree(final, ignore_errors=True)
            raise
        return out

    def _has_row_for(self, folder: Path) -> bool:
        rel = folder.relative_to(self.root).as_posix()
        with self.sessions() as s:
            return s.scalar(select(ModelVersionRow.version).where(ModelVersionRow.path == rel)) is not None

    def _set_promoted(
        self,
        s: OrmSession,
        state: RegistryState,
        target: ModelVersionRow,
        action: str,
        who: str,
        role: str,
        why: str,
    ) -> None:
        before = state.promoted
        if before is not None and before != target.version:
            old = s.get(ModelVersionRow, before)
            if old is not None:
                old.status = "retired"
        target.status = "promoted"
        state.promoted = target.version
        state.generation += 1
        s.add(
            PromotionRow(
                at=time.time(),
                who=who,
                role=role,
                action=action,
                from_version=before,
                to_version=target.version,
                why=why,
            )
        )
        detail = {
            "from": before,
            "to": target.version,
            "digest": target.digest,
            "generation": state.generation,
        }
        audit(s, who, role, action, f"model:v{target.version}", detail, why)

    def promote(self, version: int, *, who: str, role: str = "admin", why: str = "") -> ModelVersion:
        """Serve ``version``: its folder is verified first; the version served before is retired; the model
        generation moves. Promoting the version already served is refused."""
        v = self.verify(int(version))
        with transaction(self.sessions) as s:
            state = _state(s, self.dialect)
            row = s.get(ModelVersionRow, v.version)
            if row is None:
                raise RegistryError(f"the registry has no version {version}")
            if state.promoted == row.version:
                raise RegistryError(f"version {version} is already the promoted version")
            self._set_promoted(s, state, row, "promote", who, role, why)
            s.flush()
            return self._version(row)

    def refuse(self, version: int, *, who: str, role: str = "admin", why: str = "") -> ModelVersion:
        """Mark a candidate refused (the gate said no); the served version does not change."""
        with transaction(self.sessions) as s:
            row = s.get(ModelVersionRow, int(version))
            if row is None:
                raise RegistryError(f"the registry has no version {version}")
            if row.status != "candidate":
                raise RegistryError(f"version {version} is {row.status}, not a candidate")
            row.status = "refused"
            audit(s, who, role, "refuse", f"model:v{row.version}", {"digest": row.digest}, why)
            s.flush()
            return self._version(row)

    def _stack(self, s: OrmSession) -> list[int]:
        """The promoted versions as a stack: an adoption or promotion pushes, a rollback pops."""
        stack: list[int] = []
        for r in s.scalars(select(PromotionRow).order_by(PromotionRow.id)):
            if r.action == "rollback":
                if stack:
                    stack.pop()
                if not stack or stack[-1] != r.to_version:
                    stack.append(r.to_version)
            else:
                stack.append(r.to_version)
        return stack

    def rollback(self, *, who: str, role: str = "admin", why: str = "") -> ModelVersion:
        """Promote the version promoted before the current one (again and again walks further back); its
        folder is verified first. Raises :class:`RegistryError` when there is none."""
        with self.sessions() as s:
            stack = self._stack(s)
        if len(stack) < 2:
            raise RegistryError("nothing to roll back to: no version was promoted before the current one")
        target = self.verify(stack[-2])
        with transaction(self.sessions) as s:
            state = _state(s, self.dialect)
            if self._stack(s) != stack:
                raise RegistryError("the promoted version changed during the rollback; run it again")
            row = s.get(ModelVersionRow, target.version)
            if row is None:
                raise RegistryError(f"the registry has no version {target.version}")
            self._set_promoted(s, state, row, "rollback", who, role, why)
            s.flush()
            return self._version(row)

    def adopt(
        self,
        folder: str | os.PathLike[str],
        *,
        who: str,
        role: str = "admin",
        why: str = "adopted",
        data: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Seed the registry with the model served today: registered (no parent) and promoted, so a first
        round has a parent. Refused once the registry has a promoted version."""
        if self.promoted() is not None:
            raise RegistryError("the registry already has a promoted version; use promote or a loop round")
        v = self.register(folder, parent=None, data=data, who=who, role=role)
        with transaction(self.sessions) as s:
            state = _state(s, self.dialect)
            if state.promoted is not None:
                raise RegistryError(
                    f"another version was promoted meanwhile; version {v.version} stays a candidate"
                )
            row = s.get(ModelVersionRow, v.version)
            assert row is not None
            self._set_promoted(s, state, row, "adopt", who, role, why)
            s.flush()
            return self._version(row)
