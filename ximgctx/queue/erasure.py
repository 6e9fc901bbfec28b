"""Erasure in the loop store: the purge's audit records, the erased authors' keyed digests that every replica
drops from what it serves, and the replicas' acknowledgements.

- **Purge records** (:class:`PurgeLog`, table ``purges``): one row per purge, in the shape of
  :class:`ximgctx.purge.PurgeJournal`'s records: written first (``started``), updated per target, completed
  last with the store generation that announces it. Counts and keyed digests only.
- **Erased authors** (table ``erased_authors``): the keyed digests (the operator's governance key, which only
  its public id names here) of the authors a purge erases, recorded and announced (generation bumped) before
  any file is rewritten, so replicas drop them from search and memory at their next poll.
- **Replicas** (table ``replicas``): each serving process's applied generation and when; ``purge`` waits for
  the live ones (:func:`wait_for_replicas`) and reports which acknowledged.

On SQLite every connection deletes securely (``PRAGMA secure_delete``, :mod:`ximgctx.queue.db`), and
:func:`checkpoint` truncates the write-ahead log, so erased rows leave no bytes in the database files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from ximgctx.queue.db import transaction
from ximgctx.queue.loop import bump
from ximgctx.queue.models import ErasedAuthor, Generation, PurgeRow, Replica

if TYPE_CHECKING:
    from ximgctx.queue.store import QueueStore

__all__ = [
    "HEARTBEAT_S",
    "LIVE_S",
    "PurgeLog",
    "acknowledge",
    "checkpoint",
    "erased_since",
    "forget_replica",
    "is_erased",
    "replicas",
    "wait_for_replicas",
]

#: a replica re-marks itself alive at least this often (seconds), even when nothing changes
HEARTBEAT_S = 5.0
#: a replica not seen for this long is taken as gone: ``purge`` does not wait for it (it reports it)
LIVE_S = 30.0


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _to_record(row: PurgeRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": row.state,
        "opt_out": row.opt_out,
        "key_id": row.key_id,
        "opted_out_authors": row.opted_out_authors,
        "started": row.started_at,
        "completed": row.completed_at,
        "attempts": row.attempts,
        "targets": json.loads(row.targets),
        **({"counts": json.loads(row.counts)} if row.counts is not None else {}),
        **({"generation": row.generation} if row.generation is not None else {}),
    }


def _write(s: Any, record: dict[str, Any]) -> None:
    s.merge(
        PurgeRow(
            id=record["id"],
            state=record["state"],
            opt_out=record["opt_out"],
            key_id=record.get("key_id"),
            opted_out_authors=int(record.get("opted_out_authors") or 0),
            started_at=record["started"],
            completed_at=record.get("completed"),
            attempts=int(record.get("attempts") or 1),
            targets=_json(record["targets"]),
            counts=_json(record["counts"]) if "counts" in record else None,
            generation=record.get("generation"),
        )
    )


def _generation(s: Any) -> int:
    row = s.get(Generation, 1)
    return row.value if row is not None else 0


class PurgeLog:
    """The purge records in the store (what :class:`ximgctx.purge.StoreJournal` reads and writes)."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self.sessions = store.sessions

    def records(self, *, state: str | None = None) -> list[dict[str, Any]]:
        """Every purge record (or those in ``state``), oldest first."""
        with self.sessions() as s:
            query = select(PurgeRow).order_by(PurgeRow.started_at, PurgeRow.id)
            if state is not None:
                query = query.where(PurgeRow.state == state)
            return [_to_record(r) for r in s.scalars(query)]

    def save(self, records: Iterable[dict[str, Any]]) -> None:
        """Write ``records`` (inserted or updated by id) in one transaction."""
        with transaction(self.sessions) as s:
            for record in records:
                _write(s, record)

    def announce(self, record: dict[str, Any], key_id: str, digests: Iterable[str]) -> int:
        """Record the erased authors' digests (under the governance key ``key_id``) with ``record`` and bump
        the generation, in one transaction: replicas drop them at their next poll. Returns the generation."""
        now = time.time()
        with transaction(self.sessions) as s:
            _write(s, record)
            have = set(s.scalars(select(ErasedAuthor.digest).where(ErasedAuthor.key_id == key_id)))
            for digest in sorted(set(digests) - have):
                s.add(ErasedAuthor(purge_id=record["id"], key_id=key_id, digest=digest, created_at=now))
            bump(s)
            s.flush()
            return _generation(s)

    def complete(self, record: dict[str, Any]) -> int:
        """Write the completed ``record`` with a new generation (replicas rebuild from the purged store and
        acknowledge it); returns that generation."""
        with transaction(self.sessions) as s:
            bump(s)
            s.flush()
            record["generation"] = _generation(s)
            _write(s, record)
            return int(record["generation"])


def erased_since(store: QueueStore, after_id: int = 0) -> list[tuple[int, str, str]]:
    """Erased authors recorded after row ``after_id``: ``(row id, key id, digest)``, in id order."""
    with store.sessions() as s:
        rows = s.execute(
            select(ErasedAuthor.id, ErasedAuthor.key_id, ErasedAuthor.digest)
            .where(ErasedAuthor.id > after_id)
            .order_by(ErasedAuthor.id)
        ).all()
    return [(int(i), str(k), str(d)) for i, k, d in rows]


def is_erased(store: QueueStore, key_id: str, digests: Iterable[str]) -> bool:
    """Whether any of ``digests`` (under governance key ``key_id``) is an erased author's."""
    wanted = sorted(set(digests))
    if not wanted:
        return False
    with store.sessions() as s:
        found = s.scalar(
            select(ErasedAuthor.id)
            .where(ErasedAuthor.key_id == key_id, ErasedAuthor.digest.in_(wanted))
            .limit(1)
        )
    return found is not None


def acknowledge(store: QueueStore, replica: str, generation: int | None, problem: str = "") -> None:
    """Replica ``replica`` has applied ``generation`` (None: only alive, nothing new applied)."""
    now = time.time()
    with transaction(store.sessions) as s:
        row = s.get(Replica, replica)
        if row is None:
            s.add(
                Replica(
                    id=replica,
                    generation=int(generation or 0),
                    applied_at=now,
                    seen_at=now,
                    problem=problem[:2000],
                )
            )
            return
        row.seen_at = now
        if generation is not None and generation != row.generation:
            row.generation, row.applied_at = int(generation), now
        row.problem = problem[:2000]


def forget_replica(store: QueueStore, replica: str) -> None:
    """A replica that stops says so: ``purge`` no longer waits for it."""
    with transaction(store.sessions) as s:
        s.execute(delete(Replica).where(Replica.id == replica))


def replicas(store: QueueStore) -> list[dict[str, Any]]:
    """Every replica row: ``id``, ``generation``, ``applied_at``, ``seen_at``, ``problem``."""
    with store.sessions() as s:
        rows = list(s.scalars(select(Replica).order_by(Replica.id)))
    return [
        {
            "id": r.id,
            "generation": r.generation,
            "applied_at": r.applied_at,
            "seen_at": r.seen_at,
            "problem": r.problem,
        }
        for r in rows
    ]


def wait_for_replicas(
    store: QueueStore, generation: int, timeout_s: float, *, poll_s: float = 0.1
) -> dict[str, Any]:
    """Wait up to ``timeout_s`` until every live replica (seen in the last :data:`LIVE_S` seconds) has applied
    ``generation`` without a problem. Returns ``{generation, acknowledged, pending, problems, gone,
    seconds}`` (replica ids; ``gone``: rows not seen lately, not waited for)."""
    start = time.monotonic()
    while True:
        now = time.time()
        rows = replicas(store)
        live = [r for r in rows if now - r["seen_at"] <= LIVE_S]
        acked = sorted(r["id"] for r in live if r["generation"] >= generation and not r["problem"])
        pending = sorted(r["id"] for r in live if r["id"] not in acked)
        elapsed = time.monotonic() - start
        if not pending or elapsed >= timeout_s:
            return {
                "generation": generation,
                "acknowledged": acked,
                "pending": pending,
                "problems": {r["id"]: r["problem"] for r in live if r["problem"]},
                "gone": sorted(r["id"] for r in rows if now - r["seen_at"] > LIVE_S),
                "seconds": round(elapsed, 3),
            }
        time.sleep(poll_s)


def checkpoint(store: QueueStore, *, tries: int = 50) -> bool:
    """On SQLite, move the write-ahead log into the database and truncate it to zero bytes, so pages of
    erased rows written before the erasure survive in no file (the database itself deleted them securely).
    Retries while readers hold old snapshots; returns whether it succeeded (True on other databases)."""
    if store.dialect != "sqlite":
        return True
    for _ in range(tries):
        conn = store.engine.raw_connection()  # autocommit: a checkpoint cannot run inside a transaction
        try:
            cur = conn.cursor()
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            busy = cur.fetchone()
            cur.close()
        finally:
            conn.close()
        if busy is not None and int(busy[0]) == 0:
            return True
        time.sleep(0.05)
    return False
