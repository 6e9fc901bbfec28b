"""The queue's logic over its database: labelers, items, leases, votes and erasure.

- **Items** are governed posts (:func:`ximgctx.governance.govern`: private, DM and opted-out posts never
  enter; personal data is redacted before a person sees it). Images are decoded under limits and stored
  re-encoded (JPEG, EXIF and any payload dropped), so the page never serves a stranger's bytes.
- **Leases**: :meth:`QueueStore.lease` gives a labeler the most urgent item they have not seen whose
  ``taken`` (live leases + finished assignments) is below its overlap; expired leases are reclaimed first.
  On SQLite every transaction is ``BEGIN IMMEDIATE`` (one writer at a time); on PostgreSQL the item row is
  locked with ``FOR UPDATE SKIP LOCKED`` and ``taken`` lives on that row, so a concurrent lease either skips
  it or re-reads it. A unique constraint on ``(item, labeler)`` backs both.
- **Votes**: one row per ``(item, labeler, task)`` (unique), written with the assignment's ``done`` mark in
  one transaction: a crash loses no committed vote and a retried request duplicates none (it is answered
  as a duplicate). A task the labeler cannot tell is an :class:`~ximgctx.queue.models.Abstention` row in the
  same transaction, not a vote; a post skipped with a reason is one too (and is not offered to them again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ximgctx._extras import missing_extra

try:
    from sqlalchemy import CursorResult, Result, delete, exists, func, select, update
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session as OrmSession
    from sqlalchemy.orm import sessionmaker
except ImportError as e:
    raise missing_extra(e, feature="the labeling queue (ximgctx queue)") from None

from ximgctx.config import TaskSpec
from ximgctx.data.record import Post
from ximgctx.errors import InputError
from ximgctx.queue.config import QueueConfig, database_url
from ximgctx.queue.db import open_engine, transaction
from ximgctx.queue.models import (
    CANT_TELL,
    DONE,
    LABELER,
    LEASED,
    SKIP_REASONS,
    Abstention,
    Assignment,
    AssignmentState,
    Item,
    Labeler,
    LabelRow,
    Session,
    Setting,
    VoteRow,
)

if TYPE_CHECKING:  # ximgctx.hitl's package imports torch: opening a store (purge, serve) must not wait for it
    from ximgctx.hitl.votes import Vote

__all__ = [
    "ConflictError",
    "EnqueueResult",
    "ItemView",
    "Lease",
    "LoginError",
    "NotAssignedError",
    "QueueError",
    "QueueStore",
    "VoteResult",
]


class QueueError(InputError):
    """A request the queue refuses; ``status`` and ``code`` are what the HTTP routes answer."""

    status = 400
    code = "invalid_vote"


class NotAssignedError(QueueError):
    """The item does not exist or is not assigned to this labeler (the two are not told apart)."""

    status = 404
    code = "not_assigned"


class ConflictError(QueueError):
    """The labeler already voted differently on this item, or the lease went to someone else."""

    status = 409
    code = "conflict"


class LoginError(QueueError):
    """An unknown, revoked or expired token or session."""

    status = 401
    code = "invalid_token"


@dataclass
class Lease:
    """An item leased to one labeler until ``expires_at`` (gold items are not marked: labelers can't tell)."""

    item_id: int
    post_id: str
    expires_at: float


@dataclass
class ItemView:
    """What a labeler may see of an item assigned to them."""

    item_id: int
    post: Post  # governed; ``image`` holds the stored JPEG bytes (or None)
    image: bytes | None  # JPEG
    scores: dict[str, dict[str, float]] | None  # model scores stored when the item was enqueued
    state: AssignmentState
    expires_at: float


@dataclass
class VoteResult:
    """A stored vote: ``duplicate`` when the same vote had been stored already (a retried request)."""

    item_id: int
    post_id: str
    votes: int  # rows written (one per task)
    duplicate: bool
    gold: bool  # a gold item: not fed to the label memory
    labels: dict[str, Any] = field(default_factory=dict)
    changed: bool = False  # the vote changed the post's effective labels (the served answers)


@dataclass
class EnqueueResult:
    """What :meth:`QueueStore.enqueue` did."""

    added: int = 0
    existing: int = 0  # already queued (same post id): left as they were
    dropped: dict[str, int] = field(default_factory=dict)  # governance: reason -> posts
    problems: list[str] = field(default_factory=list)  # images that could not be stored, by post id

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "existing": self.existing,
            "dropped": self.dropped,
            "problems": self.problems,
        }


_BUSY = "busy"  # _lease_one: free items exist, all locked by concurrent leases


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class QueueStore:
    """The queue over one database (thread-safe: every call is its own transaction)."""

    def __init__(
        self, config: QueueConfig, *, tasks: Sequence[TaskSpec] | None = None, governance: Any = None
    ):
        if not config.key:
            raise InputError("the queue needs its key (QueueConfig.key; see read_queue_key)")
        self.config = config
        self.governance = governance
        self.url = database_url(config.db)
        self.engine = open_engine(self.url)
        self.dialect = self.engine.dialect.name
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._rng = random.Random(config.seed)
        if tasks is not None:
            self.set_tasks(tasks)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------------- digests
    def digest(self, value: str) -> str:
        """HMAC-SHA256 of ``value`` under the queue key (hex)."""
        return hmac.new(self.config.key, value.encode("utf-8"), hashlib.sha256).hexdigest()

    def author_digest(self, author: Any) -> str | None:
        from ximgctx.governance.identity import author_digest

        return author_digest(author, self.config.key)

    # --------------------------------------------------------------------------------------- tasks
    def set_tasks(self, tasks: Sequence[TaskSpec]) -> None:
        """The tasks labelers are asked (a model's tasks); stored with the votes. A task whose ``source`` is
        ``image`` is not asked about posts without an image."""
        value = _json(
            [{"name": t.name, "labels": list(t.labels), "kind": t.kind, "source": t.source} for t in tasks]
        )
        with transaction(self.sessions) as s:
            s.merge(Setting(key="tasks", value=value))

    @property
    def tasks(self) -> list[TaskSpec]:
        with self.sessions() as s:
            row = s.get(Setting, "tasks")
        if row is None:
            raise InputError("the queue has no tasks yet: give the model (--model) the first time")
        return [
            TaskSpec(name=t["name"], labels=t["labels"], kind=t["kind"], source=t.get("source", "fused"))
            for t in json.loads(row.value)
        ]

    def set_definitions(self, definitions: Mapping[str, Any]) -> None:
        """The operator's label definitions (:mod:`ximgctx.queue.guide`), kept with the tasks; definitions of
        tasks or labels the queue does not have are refused by name."""
        from ximgctx.queue.guide import TaskGuide

        specs = {t.name: t for t in self.tasks}
        stored = {}
        for task, guide in definitions.items():
            if task not in specs:
                raise InputError(f"definitions.{task}: not a task of this queue (tasks: {sorted(specs)})")
            if not isinstance(guide, TaskGuide):
                raise InputError(f"definitions.{task}: expected a TaskGuide, got {type(guide).__name__}")
            unknown = sorted(set(guide.labels) - set(specs[task].labels))
            if unknown:
                raise InputError(
                    f"definitions.{task}: unknown labels {unknown} (labels: {specs[task].labels})"
                )
            stored[task] = guide.to_dict()
        with transaction(self.sessions) as s:
            s.merge(Setting(key="definitions", value=_json(stored)))

    def guides(self) -> dict[str, Any]:
        """Per task the page's question and label definitions: the operator's, else the built-in ones."""
        from ximgctx.queue.guide import guides_for, parse_definitions

        with self.sessions() as s:
            row = s.get(Setting, "definitions")
        given = parse_definitions(json.loads(row.value), "stored definitions") if row is not None else None
        return guides_for(self.tasks, given)

    # ------------------------------------------------------------------------------------ labelers
    def add_labeler(self, name: str) -> str:
        """Register ``name`` (or give them a new token) and return their login token (shown once)."""
        from ximgctx.governance.identity import normalize_author

        norm = normalize_author(name)
        if norm is None:
            raise InputError("labeler: the name is empty")
        token = "xq_" + secrets.token_urlsafe(24)
        digest, token_hash = self.digest("labeler:" + norm), self.digest("token:" + token)
        with transaction(self.sessions) as s:
            row = s.scalar(select(Labeler).where(Labeler.digest == digest))
            if row is None:
                s.add(Labeler(digest=digest, token_hash=token_hash, created_at=time.time(), active=True))
            else:
                row.token_hash, row.active = token_hash, True
                s.execute(delete(Session).where(Session.labeler_id == row.id))
        return token

    def revoke_labeler(self, name: str, *, by: str = "operator", why: str = "") -> bool:
        """Revoke a labeler's token and sessions. Their votes stay stored but stop counting toward the
        served labels at once (audited; the generation moves when they counted). False when nobody has that
        name."""
        from ximgctx.governance.identity import normalize_author
        from ximgctx.queue.loop import LoopState

        digest = self.digest("labeler:" + (normalize_author(name) or ""))
        with transaction(self.sessions) as s:
            row = s.scalar(select(Labeler).where(Labeler.digest == digest))
            if row is None:
                return False
            row.active = False
            LoopState(self).labeler_revoked(s, row, who=by, why=why)
            s.execute(delete(Session).where(Session.labeler_id == row.id))
            s.execute(delete(Assignment).where(Assignment.labeler_id == row.id, Assignment.state == LEASED))
        return True

    def labeler_for_token(self, token: str) -> int:
        """The labeler a login token belongs to (LoginError when none or revoked)."""
        with self.sessions() as s:
            row = s.scalar(select(Labeler).where(Labeler.token_hash == self.digest("token:" + token)))
        if row is None or not row.active:
            raise LoginError("unknown or revoked labeler token")
        return row.id

    def login(self, token: str) -> str:
        """A session token for a labeler token (what the page keeps in its cookie)."""
        labeler = self.labeler_for_token(token)
        session = secrets.token_urlsafe(32)
        with transaction(self.sessions) as s:
            s.execute(delete(Session).where(Session.expires_at < time.time()))
            s.add(
                Session(
                    token_hash=self.digest("session:" + session),
                    labeler_id=labeler,
                    expires_at=time.time() + self.config.session_s,
                )
            )
        return session

    def logout(self, session: str) -> bool:
        """End a browser session: its row is deleted, so the cookie no longer works anywhere. False when
        there was no such session."""
        with transaction(self.sessions) as s:
            gone = _rowcount(
                s.execute(delete(Session).where(Session.token_hash == self.digest("session:" + session)))
            )
        return bool(gone)

    def labeler_for_session(self, session: str) -> int:
        with self.sessions() as s:
            row = s.scalar(select(Session).where(Session.token_hash == self.digest("session:" + session)))
            labeler = s.get(Labeler, row.labeler_id) if row is not None else None
        if row is None or row.expires_at < time.time() or labeler is None or not labeler.active:
            raise LoginError("the session has expired; log in again with your token")
        return row.labeler_id

    def labeler_names(self, names: Iterable[str]) -> dict[str, str]:
        """The operator's map from the digest prefixes that votes and statistics show to labeler names:
        ``{digest[:16]: name}`` for each name given (the key turns a name into its digest; the database
        alone cannot go back). Names nobody registered are left out."""
        from ximgctx.governance.identity import normalize_author

        wanted = {}
        for name in names:
            norm = normalize_author(name)
            if norm:
                wanted[self.digest("labeler:" + norm)] = name.strip()
        with self.sessions() as s:
            known = set(s.scalars(select(Labeler.digest).where(Labeler.digest.in_(list(wanted)))))
        return {d[:16]: wanted[d] for d in wanted if d in known}

    def labelers(self) -> list[dict[str, Any]]:
        """Every labeler (digest prefix, active, answers given, posts skipped), oldest first."""
        with self.sessions() as s:
            answers = dict(
                s.execute(
                    select(Assignment.labeler_id, func.count())
                    .where(Assignment.state == DONE)
                    .group_by(Assignment.labeler_id)
                ).all()
            )
            skips = dict(
                s.execute(
                    select(Abstention.labeler_id, func.count())
                    .where(Abstention.task.is_(None))
                    .group_by(Abstention.labeler_id)
                ).all()
            )
            return [
                {
                    "labeler": row.digest[:16],
                    "active": row.active,
                    "answers": answers.get(row.id, 0),
                    "skips": skips.get(row.id, 0),
                }
                for row in s.scalars(select(Labeler).order_by(Labeler.id))
            ]

    def labeler_digest(self, labeler_id: int) -> str:
        with self.sessions() as s:
            row = s.get(Labeler, labeler_id)
        if row is None:
            raise LoginError("unknown labeler")
        return row.digest

    # --------------------------------------------------------------------------------------- items
    def enqueue(
        self,
        posts: Iterable[Post],
        *,
        source: str = "file",
        scores: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
        gold: Mapping[str, Mapping[str, Any]] | None = None,
        priority: int | None = None,
        overlap: int | None = None,
    ) -> EnqueueResult:
        """Govern ``posts`` and queue what may be shown. ``scores``: ``{post_id: {task: {label: p}}}`` at
        enqueue time; ``gold``: ``{post_id: {task: label}}`` marks gold items (known answers)."""
        from ximgctx.queue.ingest import governed_items

        if source not in self.config.priorities:
            raise InputError(f"source must be one of {sorted(self.config.priorities)}, got {source!r}")
        rank = self.config.priorities[source] if priority is None else int(priority)
        result = EnqueueResult()
        rows, result.dropped, result.problems = governed_items(self, list(posts), self.governance)
        now = time.time()
        for row in rows:
            gold_labels = gold.get(row["post_id"]) if gold is not None else None
            is_gold = gold_labels is not None
            item = Item(
                **row,
                source=source,
                priority=rank,
                overlap=self.config.gold_overlap if is_gold else (overlap or self.config.overlap),
                taken=0,
                gold=_json(dict(gold_labels)) if gold_labels is not None else None,
                scores=_json(scores[row["post_id"]]) if scores and row["post_id"] in scores else None,
                created_at=now,
            )
            try:
                with transaction(self.sessions) as s:
                    s.add(item)
                result.added += 1
            except IntegrityError:
                result.existing += 1
        return result

    def count(self) -> dict[str, int]:
        """Items, open items (fewer finished assignments than their overlap), votes, labelers."""
        with self.sessions() as s:
            done = (
                select(func.count())
                .where(Assignment.item_id == Item.id, Assignment.state == DONE)
                .scalar_subquery()
            )
            return {
                "items": s.scalar(select(func.count(Item.id))) or 0,
                "open": s.scalar(select(func.count(Item.id)).where(Item.gold.is_(None), done < Item.overlap))
                or 0,
                "gold": s.scalar(select(func.count(Item.id)).where(Item.gold.is_not(None))) or 0,
                "votes": s.scalar(select(func.count(VoteRow.id))) or 0,
                "labelers": s.scalar(select(func.count(Labeler.id))) or 0,
            }

    def progress(self, labeler_id: int, *, now: float | None = None) -> dict[str, int]:
        """A labeler's progress: ``done`` (posts they answered), ``skipped`` (with a reason), ``leased`` (held
        now, 0 or 1) and ``left`` (posts they have not seen that still want a labeler: an estimate, as
        others take slots at the same time)."""
        now = time.time() if now is None else now
        with self.sessions() as s:
            mine = select(Assignment).where(Assignment.labeler_id == labeler_id)
            done = s.scalar(select(func.count()).select_from(mine.where(Assignment.state == DONE).subquery()))
            leased = s.scalar(
                select(func.count()).select_from(
                    mine.where(Assignment.state == LEASED, Assignment.expires_at > now).subquery()
                )
            )
            skipped = s.scalar(
                select(func.count(Abstention.id)).where(
                    Abstention.labeler_id == labeler_id, Abstention.task.is_(None)
                )
            )
            left = s.scalar(select(func.count()).select_from(self._free(labeler_id, gold=None).subquery()))
        return {"done": done or 0, "skipped": skipped or 0, "leased": leased or 0, "left": left or 0}

    def _free(self, labeler_id: int, *, gold: bool | None) -> Any:
        """The items a labeler may lease: not seen (or skipped) by them, below their overlap; ``gold``: only
        gold items (True), none (False), or both (None)."""
        seen = exists().where(Assignment.item_id == Item.id, Assignment.labeler_id == labeler_id)
        skipped = exists().where(
            Abstention.item_id == Item.id, Abstention.labeler_id == labeler_id, Abstention.task.is_(None)
        )
        query = select(Item).where(~seen, ~skipped, Item.taken < Item.overlap)
        if gold is not None:
            query = query.where(Item.gold.is_not(None) if gold else Item.gold.is_(None))
        return query

    # -------------------------------------------------------------------------------------- leases
    def _reclaim(self, now: float) -> int:
        """Expired leases go back to their items (items in id order: no two reclaimers deadlock)."""
        with transaction(self.sessions) as s:
            expired = s.scalars(
                select(Assignment.item_id)
                .where(Assignment.state == LEASED, Assignment.expires_at <= now)
                .order_by(Assignment.item_id)
            ).all()
            if not expired:
                return 0
            gone = s.execute(
                delete(Assignment)
                .where(Assignment.state == LEASED, Assignment.expires_at <= now)
                .returning(Assignment.item_id)
            ).all()
            for (item_id,) in sorted(gone):
                s.execute(update(Item).where(Item.id == item_id).values(taken=Item.taken - 1))
            return len(gone)

    def lease(self, labeler_id: int, *, now: float | None = None) -> Lease | None:
        """The labeler's current lease, or a new one on the most urgent item they have not seen; None when
        nothing is left for them."""
        now = time.time() if now is None else now
        with self.sessions() as s:
            held = s.scalar(
                select(Assignment)
                .where(
                    Assignment.labeler_id == labeler_id,
                    Assignment.state == LEASED,
                    Assignment.expires_at > now,
                )
                .order_by(Assignment.id)
                .limit(1)
            )
            if held is not None:
                return Lease(held.item_id, _item(s, held.item_id).post_id, held.expires_at)
        self._reclaim(now)
        want_gold = self._rng.random() < self.config.gold_rate
        for attempt in range(200):
            busy = False
            for gold_first in (want_gold, not want_gold):
                lease = self._lease_one(labeler_id, now, gold=gold_first)
                if isinstance(lease, Lease):
                    return lease
                busy |= lease == _BUSY
            if not busy:
                return None
            time.sleep(0.005 * min(attempt + 1, 10))  # every free item was locked by a concurrent lease
        return None

    def _lease_one(self, labeler_id: int, now: float, *, gold: bool) -> Lease | str | None:
        """A new lease, None when no item is free for the labeler, or ``_BUSY`` when free items exist but
        concurrent leases hold every one of them locked (PostgreSQL's SKIP LOCKED skipped them all)."""
        free = self._free(labeler_id, gold=gold)
        query = free.order_by(Item.priority.desc(), Item.id).limit(1)
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Item)
        try:
            with transaction(self.sessions) as s:
                labeler = s.get(Labeler, labeler_id)
                if labeler is None or not labeler.active:
                    raise LoginError("unknown or revoked labeler")
                item = s.scalar(query)
                if item is None:
                    if self.dialect == "postgresql" and s.scalar(select(exists(free.subquery()))):
                        return _BUSY
                    return None
                expires = now + self.config.lease_s
                s.add(
                    Assignment(
                        item_id=item.id,
                        labeler_id=labeler_id,
                        state=LEASED,
                        leased_at=now,
                        expires_at=expires,
                    )
                )
                item.taken = item.taken + 1
                return Lease(item.id, item.post_id, expires)
        except IntegrityError:  # the same labeler leasing twice at once: the other request won
            return self.lease(labeler_id, now=now)

    def release(self, labeler_id: int, item_id: int, *, reason: str | None = None, note: str = "") -> bool:
        """Give a leased item back; False when they held no lease on it. With a ``reason`` (a key of
        :data:`~ximgctx.queue.models.SKIP_REASONS`) the skip is stored (who, when, why) and the item is not
        offered to this labeler again; without one it may come back to them."""
        if reason is not None and reason not in SKIP_REASONS:
            raise QueueError(f"reason: expected one of {list(SKIP_REASONS)}, got {reason!r}")
        with transaction(self.sessions) as s:
            gone = s.execute(
                delete(Assignment)
                .where(
                    Assignment.item_id == item_id,
                    Assignment.labeler_id == labeler_id,
                    Assignment.state == LEASED,
                )
                .returning(Assignment.id)
            ).all()
            if gone:
                s.execute(update(Item).where(Item.id == item_id).values(taken=Item.taken - 1))
                if reason is not None:
                    s.add(
                        Abstention(
                            item_id=item_id,
                            labeler_id=labeler_id,
                            task=None,
                            reason=reason,
                            note=str(note or "")[:2000],
                            created_at=time.time(),
                        )
                    )
        return bool(gone)

    def item_for(self, labeler_id: int, item_id: int) -> ItemView:
        """An item as its labeler sees it; NotAssignedError for anyone it is not assigned to."""
        from ximgctx.queue.ingest import item_post

        with self.sessions() as s:
            a = s.scalar(
                select(Assignment).where(Assignment.item_id == item_id, Assignment.labeler_id == labeler_id)
            )
            item = s.get(Item, item_id) if a is not None else None
        if a is None or item is None:
            raise NotAssignedError(f"item {item_id} is not assigned to you")
        scores = json.loads(item.scores) if item.scores else None
        return ItemView(item.id, item_post(item), item.image, scores, a.state, a.expires_at)

    # --------------------------------------------------------------------------------------- votes
    def check_labels(
        self, labels: Mapping[str, Any], cant_tell: Sequence[str] = ()
    ) -> dict[str, str | list[str]]:
        """A labeler's answer checked against the tasks: one known label (multiclass) or a list of known
        labels, possibly empty (multilabel). Unknown tasks or labels are refused with their name; so is a
        task both answered and marked can't-tell. ``labels`` may be empty when ``cant_tell`` is not."""
        specs = {t.name: t for t in self.tasks}
        if not isinstance(labels, Mapping):
            raise QueueError("labels: expected a mapping {task: label}")
        for task in cant_tell:
            if task not in specs:
                raise QueueError(f"cant_tell: {task!r} is not a task of this queue (tasks: {sorted(specs)})")
            if task in labels:
                raise QueueError(f"cant_tell: {task!r} is answered too; give a label or can't tell, not both")
        if not labels and not cant_tell:
            raise QueueError("labels: give at least one task's answer ({task: label}) or cant_tell")
        out: dict[str, str | list[str]] = {}
        for task, value in labels.items():
            spec = specs.get(task)
            if spec is None:
                raise QueueError(f"labels.{task}: not a task of this queue (tasks: {sorted(specs)})")
            if spec.kind == "multiclass":
                if not isinstance(value, str) or value not in spec.labels:
                    raise QueueError(f"labels.{task}: expected one of {list(spec.labels)}, got {value!r}")
                out[task] = value
            else:
                if isinstance(value, str) or not isinstance(value, (list, tuple)):
                    raise QueueError(f"labels.{task}: expected a list of labels, got {value!r}")
                bad = [v for v in value if v not in spec.labels]
                if bad:
                    raise QueueError(f"labels.{task}: unknown labels {bad} (labels: {list(spec.labels)})")
                out[task] = sorted(set(value), key=list(spec.labels).index)
        return out

    def vote(
        self,
        labeler_id: int,
        item_id: int,
        labels: Mapping[str, Any],
        note: str = "",
        *,
        cant_tell: Sequence[str] = (),
    ) -> VoteResult:
        """Store a labeler's answer on an item assigned to them, in one transaction with the assignment's
        ``done`` mark: a vote row per answered task, an abstention row per task in ``cant_tell`` (tasks they
        could not tell; these reach neither the served labels nor the aggregation). The same answer again is
        a duplicate (nothing written); another answer is a conflict."""
        cant_tell = sorted(set(cant_tell))
        labels = self.check_labels(labels, cant_tell)
        note = str(note or "")[:2000]
        now = time.time()
        with transaction(self.sessions) as s:
            query = select(Assignment).where(
                Assignment.item_id == item_id, Assignment.labeler_id == labeler_id
            )
            if self.dialect == "postgresql":
                query = query.with_for_update()
            a = s.scalar(query)
            if a is None:
                raise NotAssignedError(f"item {item_id} is not assigned to you (the lease may have expired)")
            if self.dialect == "postgresql":  # votes on one item in turn: each sees the others' label rows
                s.execute(select(Item.id).where(Item.id == item_id).with_for_update())
            item = _item(s, item_id)
            if a.state == DONE:
                stored = {
                    v.task: json.loads(v.label)
                    for v in s.scalars(
                        select(VoteRow).where(VoteRow.item_id == item_id, VoteRow.labeler_id == labeler_id)
                    )
                }
                abstained = sorted(
                    t or ""
                    for t in s.scalars(
                        select(Abstention.task).where(
                            Abstention.item_id == item_id,
                            Abstention.labeler_id == labeler_id,
                            Abstention.task.is_not(None),
                        )
                    )
                )
                if stored == labels and abstained == cant_tell:
                    return VoteResult(item_id, item.post_id, 0, True, item.gold is not None, labels)
                raise ConflictError(f"item {item_id}: you already voted on it, with other labels")
            changed = False
            if item.gold is None and labels:  # gold items check labelers; they never reach the served answers
                changed = _label_row_for_vote(s, item, a.labeler_id, labels, note, now)
            for task, value in labels.items():
                s.add(
                    VoteRow(
                        item_id=item_id,
                        labeler_id=labeler_id,
                        task=task,
                        label=_json(value),
                        note=note,
                        created_at=now,
                    )
                )
            for task in cant_tell:
                s.add(
                    Abstention(
                        item_id=item_id,
                        labeler_id=labeler_id,
                        task=task,
                        reason=CANT_TELL,
                        note=note,
                        created_at=now,
                    )
                )
            a.state, a.done_at = DONE, now
        result = VoteResult(item_id, item.post_id, len(labels), False, item.gold is not None, labels)
        result.changed = changed
        return result

    def gold_posts(self) -> list[Post]:
        """The gold items (known answers) as governed posts whose ``labels`` are the gold labels, in the order
        they were queued (what the learning loop scores both models on)."""
        from ximgctx.queue.ingest import item_post

        with self.sessions() as s:
            items = list(s.scalars(select(Item).where(Item.gold.is_not(None)).order_by(Item.id)))
        out = []
        for item in items:
            post = item_post(item)
            post.labels = json.loads(item.gold or "{}")
            out.append(post)
        return out

    def vote_rows(self, *, gold: bool | None = None) -> list[dict[str, Any]]:
        """Every stored vote: ``{post_id, labeler (digest), task, label, note, time, gold}``; ``gold`` filters
        gold items in (True) or out (False)."""
        query = (
            select(VoteRow, Item.post_id, Item.gold, Labeler.digest)
            .join(Item, Item.id == VoteRow.item_id)
            .join(Labeler, Labeler.id == VoteRow.labeler_id)
            .order_by(VoteRow.id)
        )
        if gold is not None:
            query = query.where(Item.gold.is_not(None) if gold else Item.gold.is_(None))
        with self.sessions() as s:
            return [
                {
                    "post_id": post_id,
                    "labeler": digest[:16],
                    "task": v.task,
                    "label": json.loads(v.label),
                    "note": v.note,
                    "time": v.created_at,
                    "gold": json.loads(g) if g else None,
                }
                for v, post_id, g, digest in s.execute(query)
            ]

    def abstention_rows(self) -> list[dict[str, Any]]:
        """Every can't-tell and skip: ``{post_id, labeler (digest), task (None: the post skipped), reason,
        note, time, gold}``."""
        query = (
            select(Abstention, Item.post_id, Item.gold, Labeler.digest)
            .join(Item, Item.id == Abstention.item_id)
            .join(Labeler, Labeler.id == Abstention.labeler_id)
            .order_by(Abstention.id)
        )
        with self.sessions() as s:
            return [
                {
                    "post_id": post_id,
                    "labeler": digest[:16],
                    "task": a.task,
                    "reason": a.reason,
                    "note": a.note,
                    "time": a.created_at,
                    "gold": g is not None,
                }
                for a, post_id, g, digest in s.execute(query)
            ]

    def votes(self, *, gold: bool | None = False) -> list[Vote]:
        """The stored votes as :class:`~ximgctx.hitl.votes.Vote` rows (for :func:`aggregate_votes`)."""
        from ximgctx.hitl.votes import Vote

        out = []
        for i, r in enumerate(self.vote_rows(gold=gold), start=1):
            label = tuple(r["label"]) if isinstance(r["label"], list) else r["label"]
            out.append(Vote(r["post_id"], r["labeler"], r["task"], label, source="<queue>", row=i))
        return out

    # -------------------------------------------------------------------------------------- erasure
    def purge_authors(self, authors: Iterable[Any]) -> dict[str, int]:
        """Erase what an opt-out covers, by the one erasure rule (:func:`ximgctx.governance.identity.erasure`,
        as the search index, the label memory and manifests apply it): queued items of posts these authors
        wrote, quoted or reposted, with their assignments and votes, and their replies under other posts.
        Authors are matched by the governance identity rule (through keyed digests). The loop's label rows of
        their posts go too, and their replies are cut from other posts' rows; the generation moves when any
        did, so servers drop them from their memory. Returns counts only:
        ``{"items", "votes", "replies", "label_rows"}``."""
        from ximgctx.governance.identity import erasure, post_authors

        digests = {d for d in (self.author_digest(a) for a in authors) if d}
        counts = {"items": 0, "votes": 0, "replies": 0, "label_rows": 0}
        if not digests:
            return counts
        with transaction(self.sessions) as s:
            counts["label_rows"] = _purge_label_rows(s, digests)
            ids = []
            for item in s.scalars(select(Item)):
                post = json.loads(item.post)
                named = [item.author, *(self.author_digest(a) for a in post_authors(post.get("meta")))]
                own = {d for d in named if d}
                reply_authors = json.loads(item.reply_authors or "[]")
                rule = erasure(own, [[d] if d else [] for d in reply_authors], digests)
                if rule.drop_post:
                    ids.append(item.id)
                elif rule.drop_replies:
                    keep = [i for i in range(len(reply_authors)) if i not in rule.drop_replies]
                    post["replies"] = [post["replies"][i] for i in keep]
                    item.post = _json(post)
                    item.reply_authors = _json([reply_authors[i] for i in keep])
                    counts["replies"] += len(rule.drop_replies)
            if ids:
                counts["votes"] = _rowcount(s.execute(delete(VoteRow).where(VoteRow.item_id.in_(ids))))
                s.execute(delete(Abstention).where(Abstention.item_id.in_(ids)))
                s.execute(delete(Assignment).where(Assignment.item_id.in_(ids)))
                counts["items"] = _rowcount(s.execute(delete(Item).where(Item.id.in_(ids))))
        return counts


def _purge_label_rows(s: OrmSession, digests: set[str]) -> int:
    """Delete the label rows of posts by these authors and cut their replies from other rows (the post's
    content digest changes with them); bump the generation when anything changed. Returns rows deleted."""
    from ximgctx.data.record import post_from_dict
    from ximgctx.queue.loop import bump, post_digest

    gone = s.execute(select(LabelRow.id, LabelRow.post_digest).where(LabelRow.author.in_(digests))).all()
    deleted = _rowcount(s.execute(delete(LabelRow).where(LabelRow.author.in_(digests))))
    changed = deleted > 0
    renamed: dict[str, str | None] = {digest: None for _, digest in gone}  # old content digest -> new
    for row in s.scalars(select(LabelRow).where(LabelRow.reply_authors.contains('"'))):
        reply_authors = json.loads(row.reply_authors)
        keep = [i for i, d in enumerate(reply_authors) if d not in digests]
        if len(keep) == len(reply_authors):
            continue
        record = json.loads(row.post)
        record["replies"] = [record["replies"][i] for i in keep]
        row.post = _json(record)
        row.reply_authors = _json([reply_authors[i] for i in keep])
        post = post_from_dict(record)
        post.image = row.image
        old = row.post_digest
        row.post_digest = post_digest(post)
        renamed.setdefault(old, row.post_digest)
        changed = True
    _scrub_audit(s, {str(i) for i, _ in gone}, renamed)
    if changed:
        bump(s)
    return deleted


def _scrub_audit(s: OrmSession, rows: set[str], renamed: dict[str, str | None]) -> None:
    """The audit keeps that rows existed and what was done, but not what identifies an erased author's posts:
    the content digest of a deleted row's post goes (a cut post's becomes its new one), and so does the note
    of a deleted row (a reviewer's note may quote the post)."""
    from ximgctx.queue.models import AuditRow

    if not rows and not renamed:
        return
    for audit in s.scalars(select(AuditRow)):
        detail = json.loads(audit.detail or "{}")
        digest = detail.get("post_digest") if isinstance(detail, dict) else None
        row_gone = audit.target in rows and audit.action in ("feedback", "vote", "remove", "revert")
        if digest in renamed:
            detail["post_digest"] = renamed[digest]
            if renamed[digest] is None:
                detail["erased"] = True
            audit.detail = _json(detail)
        if row_gone or (digest in renamed and renamed[digest] is None):
            audit.why = ""


def _label_row_for_vote(
    s: OrmSession, item: Item, labeler_id: int, labels: Mapping[str, Any], note: str, now: float
) -> bool:
    """A labeler's vote as a label row (inside the vote's transaction); True (and the generation bumped,
    with an audit row) when it changed the post's effective labels under the rule."""
    from ximgctx.queue.ingest import item_post
    from ximgctx.queue.loop import audit, bump, effective_of, post_digest

    labeler = s.get(Labeler, labeler_id)
    if labeler is None:
        raise LoginError("unknown labeler")
    digest = post_digest(item_post(item))
    before = effective_of(s, digest)
    row = LabelRow(
        post_id=item.post_id,
        post_digest=digest,
        post=item.post,
        image=item.image,
        author=item.author,
        reply_authors=item.reply_authors,
        who="labeler:" + labeler.digest[:16],
        role=LABELER,
        labeler_id=labeler_id,
        labels=_json(dict(labels)),
        note=note,
        created_at=now,
    )
    s.add(row)
    s.flush()
    after = effective_of(s, digest)
    if after == before:
        return False
    audit(s, row.who, LABELER, "vote", str(row.id), {"post_digest": digest, "before": before, "after": after})
    bump(s)
    return True


def _item(s: OrmSession, item_id: int) -> Item:
    """The item an assignment points at (a foreign key, so it exists while the assignment does)."""
    item = s.get(Item, item_id)
    if item is None:
        raise LookupError(f"item {item_id} is missing, though an assignment refers to it")
    return item


def _rowcount(result: Result[Any]) -> int:
    """The rows a DELETE removed: a DML statement's result is a CursorResult."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"expected the CursorResult of a DML statement, got {type(result).__name__}")
    return result.rowcount
