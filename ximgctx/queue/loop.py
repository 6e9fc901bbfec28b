"""The human loop's state in the queue's database: every reviewer feedback and every labeler vote is a row,
labels take effect by the operator's rule, every change has an audit row and bumps the generation.

- **Rows** (:class:`~ximgctx.queue.models.LabelRow`): who (an API key's identity or a labeler's digest), role,
  when, the post (governed, with its content digest), labels and note. A row is never overwritten: removing
  it marks it removed (who, when) and it stops counting at once; so does revoking its labeler.
- **The rule** (:class:`LabelRule`, a store setting): a post's effective labels come from its counting rows,
  never from the latest write. By default a reviewer's feedback alone decides (the latest counting reviewer
  row of the post), and without one a task's label needs ``k = 2`` agreeing, non-revoked labelers (and more
  votes for it than for any other answer). Posts are grouped by content digest, so two posts sent with the
  same id never replace each other.
- **The generation** (one row) is bumped by every change that alters the effective labels: feedback, a vote
  that changes a post's effective labels, a removal or revert, a revocation, a new rule. Servers poll it and
  rebuild their label memory (a cache) from :meth:`LoopState.effective`.
- **The audit** (:class:`~ximgctx.queue.models.AuditRow`): who, role, when, what and why, for every change.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session as OrmSession

from ximgctx.data.record import Post, post_from_dict
from ximgctx.errors import ConfigError, InputError
from ximgctx.queue.db import transaction
from ximgctx.queue.models import LABELER, REVIEWER, AuditRow, Generation, Labeler, LabelRow, Setting

if TYPE_CHECKING:
    from ximgctx.queue.store import QueueStore

__all__ = ["Effective", "LabelRule", "LoopState", "post_digest"]

RULE_KEY = "label_rule"
CENTER_KEY = "memory_center"


@dataclass(frozen=True)
class LabelRule:
    """When rows take effect: ``reviewer_alone`` (a reviewer's feedback decides by itself; otherwise reviewer
    rows count as votes like labelers'), and ``k`` agreeing counting rows for a label by vote."""

    reviewer_alone: bool = True
    k: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"label rule: k must be a positive integer, got {self.k!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Effective:
    """A post's effective labels under the rule, and the rows they come from."""

    entry_id: str  # the id the label memory gives the entry
    post_digest: str
    post: Post  # governed, image bytes attached; ``labels`` the effective labels
    labels: dict[str, Any]
    rows: list[int]  # the counting rows' ids


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def post_digest(post: Post) -> str:
    """SHA-256 of a post's content (text, reply texts, image bytes): what makes two rows the same post."""
    h = hashlib.sha256()
    for part in (post.text or "", *(r.text for r in post.replies)):
        h.update(part.encode("utf-8") + b"\0")
    h.update(post.image if isinstance(post.image, bytes) else b"")
    return h.hexdigest()


def bump(s: OrmSession) -> None:
    """One more generation (inside the caller's transaction: atomic with the change it announces)."""
    s.execute(update(Generation).where(Generation.id == 1).values(value=Generation.value + 1))


def audit(s: OrmSession, who: str, role: str, action: str, target: str, detail: Any, why: str = "") -> None:
    s.add(
        AuditRow(
            at=time.time(), who=who, role=role, action=action, target=target, detail=_json(detail), why=why
        )
    )


def read_rule(s: OrmSession) -> LabelRule:
    row = s.get(Setting, RULE_KEY)
    return LabelRule(**json.loads(row.value)) if row is not None else LabelRule()


def _counting(s: OrmSession, digests: Iterable[str] | None = None) -> list[LabelRow]:
    """Rows that count: not removed, and (for labelers) of an active labeler; in id order."""
    query = (
        select(LabelRow)
        .outerjoin(Labeler, Labeler.id == LabelRow.labeler_id)
        .where(LabelRow.removed_at.is_(None))
        .where((LabelRow.labeler_id.is_(None)) | (Labeler.active.is_(True)))
        .order_by(LabelRow.id)
    )
    if digests is not None:
        query = query.where(LabelRow.post_digest.in_(list(digests)))
    return list(s.scalars(query))


def decide(rows: Sequence[LabelRow], rule: LabelRule) -> tuple[dict[str, Any], list[int]]:
    """One post's effective labels from its counting rows (in id order), and the rows they come from."""
    reviewers = [r for r in rows if r.role == REVIEWER]
    if rule.reviewer_alone and reviewers:
        latest = reviewers[-1]
        return json.loads(latest.labels), [latest.id]
    voters = rows if not rule.reviewer_alone else [r for r in rows if r.role == LABELER]
    by_task: dict[str, Counter[str]] = {}
    supporters: dict[tuple[str, str], list[int]] = {}
    for r in voters:
        for task, value in json.loads(r.labels).items():
            key = _json(value)
            by_task.setdefault(task, Counter())[key] += 1
            supporters.setdefault((task, key), []).append(r.id)
    labels: dict[str, Any] = {}
    used: set[int] = set()
    for task, counts in sorted(by_task.items()):
        ranked = counts.most_common()
        value, n = ranked[0]
        if n >= rule.k and (len(ranked) == 1 or ranked[1][1] < n):
            labels[task] = json.loads(value)
            used.update(supporters[(task, value)])
    return labels, sorted(used)


def effective_of(s: OrmSession, digest: str) -> dict[str, Any]:
    """The effective labels of one post (by content digest) now."""
    return decide(_counting(s, [digest]), read_rule(s))[0]


class LoopState:
    """The loop's rows, rule, audit and generation over a :class:`~ximgctx.queue.QueueStore`'s database
    (thread-safe: every call is its own transaction)."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self.sessions = store.sessions

    # ---------------------------------------------------------------------------------- generation
    def generation(self) -> int:
        with self.sessions() as s:
            row = s.get(Generation, 1)
        if row is None:
            raise LookupError("the loop store has no generation row (migration 0002 did not run)")
        return row.value

    # ---------------------------------------------------------------------------------------- rule
    def rule(self) -> LabelRule:
        with self.sessions() as s:
            return read_rule(s)

    def set_rule(self, rule: LabelRule, *, who: str, role: str = "admin", why: str = "") -> None:
        with transaction(self.sessions) as s:
            before = read_rule(s)
            s.merge(Setting(key=RULE_KEY, value=_json(rule.to_dict())))
            audit(s, who, role, "rule", RULE_KEY, {"before": before.to_dict(), "after": rule.to_dict()}, why)
            bump(s)

    # ------------------------------------------------------------------------------------ feedback
    def add_feedback(self, post: Post, *, who: str, note: str = "") -> dict[str, Any]:
        """A reviewer's labels for a governed post, as a row; returns ``{id, post_digest, generation}``."""
        if not post.labels:
            raise InputError("labels: give at least one task's label")
        record = post.to_dict()
        record.pop("image", None)
        labels = record.pop("labels")
        digest = post_digest(post)
        from ximgctx.governance.identity import author_of

        with transaction(self.sessions) as s:
            row = LabelRow(
                post_id=post.id,
                post_digest=digest,
                post=_json(record),
                image=post.image if isinstance(post.image, bytes) else None,
                author=self.store.author_digest(author_of(post.meta)),
                reply_authors=_json([self.store.author_digest(r.author) for r in post.replies]),
                who=who,
                role=REVIEWER,
                labeler_id=None,
                labels=_json(labels),
                note=str(note or "")[:2000],
                created_at=time.time(),
            )
            s.add(row)
            s.flush()
            audit(s, who, REVIEWER, "feedback", str(row.id), {"post_digest": digest, "labels": labels}, note)
            bump(s)
            generation = s.get(Generation, 1)
            return {"id": row.id, "post_digest": digest, "generation": generation.value if generation else 0}

    # ---------------------------------------------------------------------------------------- undo
    def _remove(self, s: OrmSession, rows: list[LabelRow], who: str, role: str, action: str, why: str) -> int:
        now = time.time()
        for row in rows:
            row.removed_at, row.removed_by = now, who
            detail = {"post_digest": row.post_digest, "by": row.who, "role": row.role}
            audit(s, who, role, action, str(row.id), {**detail, "labels": json.loads(row.labels)}, why)
        if rows:
            bump(s)
        return len(rows)

    def remove_row(self, row_id: int, *, who: str, role: str = "admin", why: str = "") -> bool:
        """Stop one row counting (``DELETE /v1/feedback/{id}``); False when there is no such live row."""
        with transaction(self.sessions) as s:
            row = s.get(LabelRow, row_id)
            if row is None or row.removed_at is not None:
                return False
            return self._remove(s, [row], who, role, "remove", why) == 1

    def _rows_of(self, s: OrmSession, post: str) -> list[LabelRow]:
        """Live rows of a post named by its id or its content digest, in id order."""
        query = (
            select(LabelRow)
            .where(LabelRow.removed_at.is_(None))
            .where((LabelRow.post_id == post) | (LabelRow.post_digest == post))
            .order_by(LabelRow.id)
        )
        return list(s.scalars(query))

    def revert(self, post: str, *, who: str, role: str = "admin", why: str = "") -> dict[str, Any] | None:
        """Undo the latest live row of a post (by id or content digest): the post is answered as it was
        before that row. Returns the removed row (``{id, who, role, labels}``) or None when it has none."""
        with transaction(self.sessions) as s:
            rows = self._rows_of(s, post)
            if not rows:
                return None
            last = rows[-1]
            self._remove(s, [last], who, role, "revert", why)
            return {"id": last.id, "who": last.who, "role": last.role, "labels": json.loads(last.labels)}

    def remove_post(self, post: str, *, who: str, role: str = "admin", why: str = "") -> int:
        """Stop every live row of a post counting (its memory entry goes); returns how many."""
        with transaction(self.sessions) as s:
            return self._remove(s, self._rows_of(s, post), who, role, "remove", why)

    def labeler_revoked(self, s: OrmSession, labeler: Labeler, *, who: str, why: str = "") -> None:
        """Inside :meth:`QueueStore.revoke_labeler`'s transaction: audit it, and bump the generation when the
        labeler's rows counted for something."""
        has_rows = s.scalar(select(LabelRow.id).where(LabelRow.labeler_id == labeler.id).limit(1))
        audit(s, who, "admin", "revoke", labeler.digest[:16], {"rows": bool(has_rows)}, why)
        if has_rows:
            bump(s)

    # ------------------------------------------------------------------------------------- reading
    def history(self, post: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Rows (live and removed) and audit rows, of one post (id or digest) or of everything."""
        with self.sessions() as s:
            rows_q = select(LabelRow).order_by(LabelRow.id)
            if post is not None:
                rows_q = rows_q.where((LabelRow.post_id == post) | (LabelRow.post_digest == post))
            rows = list(s.scalars(rows_q))
            audit_q = select(AuditRow).order_by(AuditRow.id)
            if post is not None:
                targets = {str(r.id) for r in rows}
                digests = {r.post_digest for r in rows}
                audits = [
                    a
                    for a in s.scalars(audit_q)
                    if a.target in targets or json.loads(a.detail).get("post_digest") in digests
                ]
            else:
                audits = list(s.scalars(audit_q))
        return {
            "rows": [
                {
                    "id": r.id,
                    "post_id": r.post_id,
                    "post_digest": r.post_digest,
                    "who": r.who,
                    "role": r.role,
                    "time": r.created_at,
                    "labels": json.loads(r.labels),
                    "note": r.note,
                    "removed": None if r.removed_at is None else {"time": r.removed_at, "by": r.removed_by},
                }
                for r in rows
            ],
            "audit": [
                {
                    "id": a.id,
                    "time": a.at,
                    "who": a.who,
                    "role": a.role,
                    "action": a.action,
                    "target": a.target,
                    "detail": json.loads(a.detail),
                    "why": a.why,
                }
                for a in audits
            ],
        }

    def effective(self) -> tuple[int, list[Effective]]:
        """The generation and every post's effective labels, read in one transaction (so the two agree)."""
        with self.sessions() as s:
            generation = s.get(Generation, 1)
            rule = read_rule(s)
            groups: dict[str, list[LabelRow]] = {}
            for row in _counting(s):
                groups.setdefault(row.post_digest, []).append(row)
        out: list[Effective] = []
        seen: set[str] = set()
        for digest, rows in sorted(groups.items(), key=lambda kv: kv[1][0].id):
            labels, used = decide(rows, rule)
            if not labels:
                continue
            latest = rows[-1]
            post = post_from_dict(json.loads(latest.post))
            post.image = latest.image
            post.labels = dict(labels)
            entry_id = post.id if post.id not in seen else f"{post.id}#{digest[:12]}"
            seen.add(entry_id)
            out.append(Effective(entry_id, digest, post, labels, used))
        return (generation.value if generation else 0), out

    # ------------------------------------------------------------------------------- memory centre
    def memory_center(self, model_digest: str | None) -> list[float] | None:
        """The centre the served memory uses for this model, when one was stored (replicas share it). One
        row per model (a registry's versions each keep theirs); a store from before keeps one row for one
        model, still read."""
        with self.sessions() as s:
            rows = [s.get(Setting, _center_key(model_digest)), s.get(Setting, CENTER_KEY)]
        for row in rows:
            if row is not None:
                value = json.loads(row.value)
                if value.get("model") == model_digest:
                    return list(value["center"])
        return None

    def store_memory_center(self, model_digest: str | None, center: Sequence[float]) -> list[float]:
        """Store a centre unless one is stored for this model already; returns the one that holds."""
        held = self.memory_center(model_digest)
        if held is not None:
            return held
        with transaction(self.sessions) as s:
            key = _center_key(model_digest)
            row = s.get(Setting, key)
            if row is not None and json.loads(row.value).get("model") == model_digest:
                return list(json.loads(row.value)["center"])
            s.merge(Setting(key=key, value=_json({"model": model_digest, "center": list(center)})))
        return list(center)


def _center_key(model_digest: str | None) -> str:
    """The settings row of a model's memory centre (the key column holds 64 characters)."""
    return f"{CENTER_KEY}:{(model_digest or 'none')[:48]}"
