"""The queue's tables (SQLAlchemy 2 ORM). The schema itself is created and changed by the Alembic migrations
in ``migrations/versions``; a test checks that they and these models agree.

Times are UTC seconds since the epoch (floats), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Literal

from ximgctx._extras import missing_extra

try:
    from sqlalchemy import Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
except ImportError as e:
    raise missing_extra(e, feature="the labeling queue (ximgctx queue)") from None

__all__ = [
    "Abstention",
    "Assignment",
    "AuditRow",
    "Base",
    "ErasedAuthor",
    "Generation",
    "Item",
    "LabelRow",
    "Labeler",
    "ModelVersionRow",
    "PromotionRow",
    "RegistryState",
    "RoundRow",
    "PurgeRow",
    "Replica",
    "Session",
    "Setting",
    "VoteRow",
]


#: an assignment's state: leased to a labeler until it expires, or answered
AssignmentState = Literal["leased", "done"]
LEASED: AssignmentState = "leased"
DONE: AssignmentState = "done"


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """Queue-wide settings kept with the votes (the tasks being asked)."""

    __tablename__ = "queue_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # JSON


class Labeler(Base):
    """A person who labels. Only keyed digests are stored: of the account name and of the login token."""

    __tablename__ = "labelers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # HMAC(key, normalised account name)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # HMAC(key, login token)
    created_at: Mapped[float] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(default=True)  # revoked labelers cannot log in or lease


class Session(Base):
    """A browser session opened by a token login (the cookie holds the session token, hashed here)."""

    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[float] = mapped_column(Float)


class Item(Base):
    """A governed post waiting for (or done with) labels."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[str] = mapped_column(String(512), unique=True)
    post: Mapped[str] = mapped_column(Text)  # the governed post as JSON (image bytes kept apart)
    image: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    source: Mapped[str] = mapped_column(String(32))  # review | select | file
    priority: Mapped[int] = mapped_column(Integer, index=True)
    overlap: Mapped[int] = mapped_column(Integer)  # distinct labelers wanted
    taken: Mapped[int] = mapped_column(Integer, default=0)  # live leases + finished assignments
    gold: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON {task: label} of a gold item
    scores: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON model scores when enqueued
    author: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # keyed digest
    reply_authors: Mapped[str] = mapped_column(Text, default="[]")  # JSON keyed digest per reply (or null)
    created_at: Mapped[float] = mapped_column(Float)


class Assignment(Base):
    """One labeler's slot on one item: leased until ``expires_at``, then done once they vote."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "labeler_id", name="uq_assignment_item_labeler"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"), index=True)
    state: Mapped[AssignmentState] = mapped_column(String(16))  # leased | done
    leased_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    done_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class VoteRow(Base):
    """One labeler's answer for one item and task, with their note."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("item_id", "labeler_id", "task", name="uq_vote_item_labeler_task"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(Text)  # JSON: a label, or a list for a multilabel task
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


#: why a labeler skipped a post (the page offers these; ``cant_tell`` also marks a task they could not tell),
#: in the order the page lists them
SKIP_REASONS: dict[str, str] = {
    "cant_tell": "can't tell what it means",
    "image_broken": "image broken",
    "language": "language I don't read",
    "distressing": "too distressing",
    "other": "other (say in the note)",
}
CANT_TELL = "cant_tell"


class Abstention(Base):
    """An answer that is not a label: one task the labeler could not tell (``task`` set, reason
    ``cant_tell``), or the whole post skipped (``task`` null) with a reason of :data:`SKIP_REASONS`.
    Who and when are kept; these rows never reach the served labels or the aggregation."""

    __tablename__ = "abstentions"
    __table_args__ = (
        UniqueConstraint("item_id", "labeler_id", "task", name="uq_abstention_item_labeler_task"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"), index=True)
    task: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None: the whole post skipped
    reason: Mapped[str] = mapped_column(String(32))  # a key of SKIP_REASONS
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


#: who wrote a label row: a reviewer (an API key with the ``review`` scope) or a labeler (a queue vote)
REVIEWER, LABELER = "reviewer", "labeler"


class LabelRow(Base):
    """One person's labels for one post: a reviewer's feedback or a labeler's queue vote. Rows are never
    overwritten; removing one marks it (who, when, why) and it stops counting at once."""

    __tablename__ = "label_rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[str] = mapped_column(String(512), index=True)  # the id the post came with
    post_digest: Mapped[str] = mapped_column(String(64), index=True)  # SHA-256 of the post's content
    post: Mapped[str] = mapped_column(Text)  # the governed post as JSON, without labels (image kept apart)
    image: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    author: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # keyed digest
    reply_authors: Mapped[str] = mapped_column(Text, default="[]")  # JSON keyed digest per reply (or null)
    who: Mapped[str] = mapped_column(String(128))  # an API key's identity, or a labeler's digest
    role: Mapped[str] = mapped_column(String(16))  # reviewer | labeler
    labeler_id: Mapped[int | None] = mapped_column(
        ForeignKey("labelers.id", ondelete="CASCADE"), nullable=True, index=True
    )
    labels: Mapped[str] = mapped_column(Text)  # JSON {task: label}
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    removed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    removed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class AuditRow(Base):
    """Every change to what the loop serves: who, in which role, when, what and why."""

    __tablename__ = "loop_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    who: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # reviewer | labeler | admin
    action: Mapped[str] = mapped_column(String(32))  # feedback | vote | remove | revert | revoke | rule
    target: Mapped[str] = mapped_column(String(512))  # a row id, post digest or labeler digest
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    why: Mapped[str] = mapped_column(Text, default="")


class Generation(Base):
    """One row: bumped by every change that alters served answers; replicas poll it."""

    __tablename__ = "loop_generation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class PurgeRow(Base):
    """One purge's audit record (``ximgctx purge --loop-db``): written first (``started``, with its targets),
    updated as each target is done, completed last. Counts and keyed digests only, never an author id."""

    __tablename__ = "purges"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # started | completed | abandoned
    opt_out: Mapped[str] = mapped_column(String(128), index=True)  # keyed digest of the opt-out list
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the governance key's public id
    opted_out_authors: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[str] = mapped_column(String(40))
    completed_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    targets: Mapped[str] = mapped_column(Text)  # JSON: kind, path, state, result, error, attempt
    counts: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON totals once completed
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the store's, once completed


class ErasedAuthor(Base):
    """An erased author's digest under the operator's governance key (the key index records and memory
    entries are made with; only its public id is here): what replicas drop from what they serve."""

    __tablename__ = "erased_authors"
    __table_args__ = (UniqueConstraint("key_id", "digest", name="uq_erased_author_key_digest"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purge_id: Mapped[str] = mapped_column(String(32), index=True)
    key_id: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class Replica(Base):
    """A serving process on the store: the generation it has applied (and when), its last poll, and what it
    could not apply (an erasure under another governance key than its index's or memory's)."""

    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    applied_at: Mapped[float] = mapped_column(Float)
    seen_at: Mapped[float] = mapped_column(Float, index=True)
    problem: Mapped[str] = mapped_column(Text, default="")


class ModelVersionRow(Base):
    """One model version in the registry (:mod:`ximgctx.queue.registry`): its verified folder under the
    registry root, where it came from (parent, data digests and label counts), how it scored and what the
    promotion gate said. Rows are never deleted; ``status`` moves (candidate -> promoted/refused, promoted ->
    retired)."""

    __tablename__ = "model_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(256))
    digest: Mapped[str] = mapped_column(String(64), index=True)  # the folder's artifact SHA-256
    path: Mapped[str] = mapped_column(String(1024))  # relative to the registry root (checked on every read)
    parent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # candidate | promoted | refused | retired
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON: data digests, label counts, the round
    metrics: Mapped[str] = mapped_column(Text, default="{}")  # JSON: serving and candidate scorecards
    verdict: Mapped[str] = mapped_column(Text, default="{}")  # JSON: the gate's verdict
    who: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)


class PromotionRow(Base):
    """One change of the promoted version: who, in which role, when, from which version to which, why."""

    __tablename__ = "model_promotions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    who: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))  # adopt | promote | rollback
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int] = mapped_column(Integer)
    why: Mapped[str] = mapped_column(Text, default="")


class RegistryState(Base):
    """One row: the promoted version and the model generation, bumped by every promotion and rollback
    (servers poll it; it is not the label generation, so neither rebuilds the other's caches)."""

    __tablename__ = "model_registry_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    promoted: Mapped[int | None] = mapped_column(Integer, nullable=True)


class RoundRow(Base):
    """One round of the learning loop (``ximgctx loop run``): the lock (a running row with a live lease) and
    the journal (the stage reached, the label cursor consumed, the candidate folder, the result)."""

    __tablename__ = "loop_rounds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running|done|skipped|failed|abandoned
    stage: Mapped[str] = mapped_column(String(16))  # started | labels | trained | scored | registered | done
    owner: Mapped[str] = mapped_column(String(256))  # who runs it: user@host:pid
    lease_until: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    cursor: Mapped[str] = mapped_column(Text, default="{}")  # JSON: the label state the round consumed
    candidate: Mapped[str | None] = mapped_column(
        String(1024), nullable=True
    )  # relative to the registry root
    state: Mapped[str] = mapped_column(Text, default="{}")  # JSON: what each finished stage produced
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the round's result once finished
    error: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
