"""The learning loop's round lock and journal in the store (``loop_rounds``).

A round (:mod:`ximgctx.loop`) is one row: acquired in one transaction (:meth:`Rounds.acquire`), so two rounds
never run at once: while a round is ``running`` with a live lease a second one is refused with an error
naming the round and its owner. The owner renews its lease (:meth:`Rounds.heartbeat`) and records each stage
it finishes (:meth:`Rounds.advance`) with what the stage produced. A round whose owner died (its lease ran
out) or that failed (status ``failed``, the error kept) is taken over by the next :meth:`Rounds.acquire` and
resumed from its recorded stage; a finished round is ``done`` or ``skipped`` with its result. An operator
can abandon an unfinished round that cannot be completed (:meth:`Rounds.abandon`).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from ximgctx.errors import InputError
from ximgctx.queue.db import transaction
from ximgctx.queue.models import RegistryState, RoundRow

if TYPE_CHECKING:
    from ximgctx.queue.store import QueueStore

__all__ = ["Round", "RoundBusyError", "RoundLostError", "Rounds", "default_owner"]

RoundStatus = Literal["running", "done", "skipped", "failed", "abandoned"]
#: the stages of a round, in order; a resumed round starts after the last one recorded
STAGES = ("started", "labels", "trained", "scored", "registered", "done")
#: statuses of a round that is over
FINISHED = ("done", "skipped")


class RoundBusyError(InputError):
    """Another round is running (its lease is live)."""


class RoundLostError(InputError):
    """This process no longer owns the round (its lease ran out and another process took it over)."""


def default_owner() -> str:
    """``user@host:pid``: who runs a round, shown to a second one that is refused."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@dataclass
class Round:
    """A round's row, as read."""

    id: int
    status: RoundStatus
    stage: str
    owner: str
    lease_until: float
    heartbeat_at: float
    attempts: int
    cursor: dict[str, Any] = field(default_factory=dict)
    candidate: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str = ""
    started_at: float = 0.0
    finished_at: float | None = None
    resumed: bool = False  # acquire took over a round that had started before

    def done_stage(self, stage: str) -> bool:
        """Whether ``stage`` was finished (recorded) by this round."""
        return STAGES.index(self.stage) >= STAGES.index(stage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "stage": self.stage,
            "owner": self.owner,
            "lease_until": self.lease_until,
            "heartbeat_at": self.heartbeat_at,
            "attempts": self.attempts,
            "cursor": self.cursor,
            "candidate": self.candidate,
            "result": self.result,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _obj(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _round(row: RoundRow, resumed: bool = False) -> Round:
    return Round(
        id=row.id,
        status=row.status,  # type: ignore[arg-type]
        stage=row.stage if row.stage in STAGES else "started",
        owner=row.owner,
        lease_until=row.lease_until,
        heartbeat_at=row.heartbeat_at,
        attempts=row.attempts,
        cursor=_obj(row.cursor),
        candidate=row.candidate,
        state=_obj(row.state),
        result=_obj(row.result) if row.result is not None else None,
        error=row.error,
        started_at=row.started_at,
        finished_at=row.finished_at,
        resumed=resumed,
    )


class Rounds:
    """The rounds of the learning loop over a store's database."""

    def __init__(self, store: QueueStore, *, lease_s: float = 600.0) -> None:
        if not lease_s > 0:
            raise InputError(f"the round lease must be positive seconds, got {lease_s!r}")
        self.sessions = store.sessions
        self.dialect = store.dialect
        self.lease_s = float(lease_s)

    def _lock(self, s: Any) -> None:
        """Serialise round acquisition: PostgreSQL locks the registry state row; SQLite's BEGIN IMMEDIATE
        already lets one writer in at a time."""
        if self.dialect == "postgresql":
            s.execute(select(RegistryState.id).where(RegistryState.id == 1).with_for_update())

    def acquire(self, owner: str, *, now: float | None = None) -> Round:
        """Start a round, or take over the unfinished one (failed, or running with an expired lease: its owner
        died) and resume it at its stage. One transaction. Raises :class:`RoundBusyError` naming the running
        round and its owner while its lease is live."""
        now = time.time() if now is None else now
        with transaction(self.sessions) as s:
            self._lock(s)
            open_rows = list(
                s.scalars(
                    select(RoundRow).where(RoundRow.status.in_(("running", "failed"))).order_by(RoundRow.id)
                )
            )
            for row in open_rows:
                if row.status == "running" and row.lease_until > now:
                    raise RoundBusyError(
                        f"loop round {row.id} is running (owner {row.owner}, stage {row.stage}, lease until "
                        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(row.lease_until))}); two rounds "
                        "never run at once"
                    )
            if open_rows:
                row = open_rows[-1]
                for older in open_rows[:-1]:  # not expected: one open round at a time
                    older.status, older.finished_at = "failed", now
                    older.error = (older.error + f"; superseded by round {row.id}").lstrip("; ")
                row.status, row.owner = "running", owner
                row.lease_until, row.heartbeat_at = now + self.lease_s, now
                row.attempts += 1
                s.flush()
                return _round(row, resumed=True)
            row = RoundRow(
                status="running",
                stage="started",
                owner=owner,
                lease_until=now + self.lease_s,
                heartbeat_at=now,
                attempts=1,
                cursor="{}",
                candidate=None,
                state="{}",
                result=None,
                error="",
                started_at=now,
                finished_at=None,
            )
            s.add(row)
            s.flush()
            return _round(row)

    def _owned(self, s: Any, round_id: int, owner: str) -> RoundRow:
        row = s.get(RoundRow, round_id)
        if row is None:
            raise RoundLostError(f"loop round {round_id} is gone")
        if row.owner != owner or row.status != "running":
            raise RoundLostError(
                f"loop round {round_id} is no longer this process's (owner {row.owner}, status {row.status})"
            )
        return row

    def heartbeat(self, round_id: int, owner: str) -> None:
        """Renew the lease (the owner calls this while it works)."""
        now = time.time()
        with transaction(self.sessions) as s:
            row = self._owned(s, round_id, owner)
            row.lease_until, row.heartbeat_at = now + self.lease_s, now

    def advance(
        self,
        round_id: int,
        owner: str,
        stage: str,
        *,
        state: Mapping[str, Any] | None = None,
        cursor: Mapping[str, Any] | None = None,
        candidate: str | None = None,
    ) -> Round:
        """Record that ``stage`` is finished, with what it produced (merged into the round's state); renews
        the lease."""
        if stage not in STAGES:
            raise ValueError(f"unknown round stage {stage!r} (stages: {STAGES})")
        now = time.time()
        with transaction(self.sessions) as s:
            row = self._owned(s, round_id, owner)
            row.stage = stage
            if state:
                row.state = _json({**_obj(row.state), **state})
            if cursor is not None:
                row.cursor = _json(dict(cursor))
            if candidate is not None:
                row.candidate = candidate
            row.lease_until, row.heartbeat_at = now + self.lease_s, now
            s.flush()
            return _round(row)

    def finish(self, round_id: int, owner: str, status: RoundStatus, result: Mapping[str, Any]) -> Round:
        """Close the round: ``done`` or ``skipped`` with its result (the lock is free again)."""
        if status not in FINISHED:
            raise ValueError(f"a round finishes done or skipped, not {status!r}")
        now = time.time()
        with transaction(self.sessions) as s:
            row = self._owned(s, round_id, owner)
            row.status, row.result, row.finished_at = status, _json(dict(result)), now
            if status == "done":
                row.stage = "done"
            row.error = ""
            s.flush()
            return _round(row)

    def fail(self, round_id: int, owner: str, error: str) -> None:
        """Record a failure: the round keeps its stage and is resumed by the next acquire."""
        with transaction(self.sessions) as s:
            row = s.get(RoundRow, round_id)
            if row is None or row.owner != owner or row.status != "running":
                return  # taken over meanwhile: the new owner's record stands
            row.status, row.error, row.lease_until = "failed", str(error)[:4000], 0.0

    def abandon(self, *, who: str, why: str = "", now: float | None = None) -> Round | None:
        """Give up the unfinished round (failed, or running with an expired lease) so that the next round
        starts afresh: status ``abandoned``, the reason kept in its error. A round running with a live lease
        is refused (:class:`RoundBusyError`); returns None when there is nothing to abandon. Its labels are
        not consumed: the next round takes them again."""
        now = time.time() if now is None else now
        with transaction(self.sessions) as s:
            self._lock(s)
            row = s.scalar(
                select(RoundRow)
                .where(RoundRow.status.in_(("running", "failed")))
                .order_by(RoundRow.id.desc())
                .limit(1)
            )
            if row is None:
                return None
            if row.status == "running" and row.lease_until > now:
                raise RoundBusyError(
                    f"loop round {row.id} is running (owner {row.owner}, stage {row.stage}); it cannot be "
                    "abandoned while its lease is live"
                )
            note = f"abandoned by {who}" + (f": {why}" if why else "")
            row.status, row.finished_at, row.lease_until = "abandoned", now, 0.0
            row.error = f"{row.error}; {note}" if row.error else note
            s.flush()
            return _round(row)

    def get(self, round_id: int) -> Round:
        with self.sessions() as s:
            row = s.get(RoundRow, round_id)
            if row is None:
                raise InputError(f"no loop round {round_id}")
            return _round(row)

    def last(self, n: int = 10) -> list[Round]:
        """The latest ``n`` rounds, newest first."""
        with self.sessions() as s:
            rows = s.scalars(select(RoundRow).order_by(RoundRow.id.desc()).limit(max(0, int(n))))
            return [_round(r) for r in rows]

    def last_done(self) -> Round | None:
        """The latest round that finished ``done`` (its cursor is where the next round's labels start)."""
        with self.sessions() as s:
            row = s.scalar(
                select(RoundRow).where(RoundRow.status == "done").order_by(RoundRow.id.desc()).limit(1)
            )
            return _round(row) if row is not None else None
