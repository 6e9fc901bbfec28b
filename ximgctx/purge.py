"""Erase opted-out authors from everything built so far, and say which models used them
(``ximgctx purge``, in :mod:`ximgctx.cli.purge`).

    ximgctx purge --opt-out opt_out.txt [--index DIR]... [--memory DIR]... [--data FILE|DIR]... \
        [--queue DB]... [--model DIR]... [--key-file governance.key] [--report purge.jsonl] \
        [--journal purge-journal.json]

- ``--index``: every post of those authors (own, quoted, reposted, or with a reply of theirs: the embedding
  holds it) leaves the search index (``SearchIndex.remove_authors``), which is saved again in place.
- ``--memory``: the same for a label memory (``LabelMemory.remove_authors``); a centre computed from the
  entries is recomputed without them.
- ``--data``: a manifest is rewritten atomically without their posts (own, quoted or reposted) and without
  their replies; a shard folder (``ximgctx shard``) is written again as a new verified shard artifact,
  swapped in whole (no shard is edited in place). One rule for all:
  :func:`ximgctx.governance.identity.erasure`.
- ``--queue``: the same rule on a labeling queue database.
- ``--model``: nothing is changed (weights cannot forget); the count of opted-out authors whose words
  trained it is reported from the folder's keyed digest set (:mod:`ximgctx.governance.authors`), a retrain
  signal that names nobody. It needs the key that governed the training data. Models are checked first, so a
  model that cannot be checked stops the purge before anything is erased.

A purge is one audited, resumable operation, kept in a JSON journal (:class:`PurgeJournal`, written
atomically): its record is written first (state ``started``, with its targets), updated as each target is
done (with what it removed), and completed last (state ``completed``, totals). A purge that fails or is
killed midway leaves its ``started`` record; the next ``ximgctx purge`` with the same opt-out list and targets
resumes that record, does only what is left, reports what the earlier attempts removed, and completes the
same record. The journal holds counts and a keyed digest of the opt-out list, never an author id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ximgctx.data.io import load_posts, write_posts
from ximgctx.data.record import Post
from ximgctx.errors import ArtifactError, ConfigError, InputError
from ximgctx.governance.identity import erasure, identities, post_authors

logger = logging.getLogger(__name__)


def purge_posts(posts: Iterable[Post], authors: set[str], counts: dict[str, int]) -> Iterator[Post]:
    """``posts`` without those by (or quoting) ``authors`` and without their replies; fills ``counts``."""
    for post in posts:
        counts["posts"] = counts.get("posts", 0) + 1
        rule = erasure(post_authors(post.meta), [identities(r.author) for r in post.replies], authors)
        if rule.drop_post:
            counts["removed_posts"] = counts.get("removed_posts", 0) + 1
            continue
        kept = [r for i, r in enumerate(post.replies) if i not in rule.drop_replies]
        counts["removed_replies"] = counts.get("removed_replies", 0) + len(post.replies) - len(kept)
        if len(kept) != len(post.replies):
            post = Post(
                id=post.id, image=post.image, text=post.text, replies=kept, labels=post.labels, meta=post.meta
            )
        yield post


def purge_manifest(path: str | Path, authors: set[str]) -> dict[str, int]:
    """Rewrite the manifest at ``path`` without ``authors`` (atomically; untouched on any error). A shard
    folder is written again as a new shard artifact (:func:`purge_shards`)."""
    from ximgctx._artifacts import atomic_output
    from ximgctx.data.shards import is_shard_source

    if Path(path).is_dir() or is_shard_source(path):
        return purge_shards(path, authors)
    counts = {"posts": 0, "removed_posts": 0, "removed_replies": 0}
    with atomic_output(path) as tmp:
        write_posts(purge_posts(load_posts(path, streaming=True), authors, counts), tmp)
    return counts


_INDEX_OWN_KEYS = {"format", "version", "shard_format", "total", "total_bytes", "shards", "images_kept",
                   "images_reencoded", "problems"}  # fmt: skip


def purge_shards(path: str | Path, authors: set[str]) -> dict[str, int]:
    """Write the shard folder at ``path`` again without ``authors``, as a new ``shards`` artifact (every shard
    verified while read, the new folder sealed, verified, then swapped in whole for the old one: no shard is
    edited in place, and the old one, with the authors' images, is removed). Returns counts."""
    from ximgctx._artifacts import verify_artifact
    from ximgctx.data.shard_write import write_shards
    from ximgctx.data.shards import INDEX, list_shards

    root = Path(path)
    if root.name == INDEX:
        root = root.parent
    shards = list_shards(root)  # the index checked against the folder's manifest
    if not (root / INDEX).is_file():
        raise InputError(
            f"{root}: a shard folder without {INDEX} (not written by `ximgctx shard`); purge writes shard "
            "artifacts it can verify: shard it first with `ximgctx shard`, then purge the result"
        )
    verify_artifact(root, "shards")
    try:
        old_index = json.loads((root / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{root / INDEX}: unreadable: {e}") from e
    extra = (
        {k: v for k, v in old_index.items() if k not in _INDEX_OWN_KEYS}
        if isinstance(old_index, dict)
        else {}
    )
    counts = {"posts": 0, "removed_posts": 0, "removed_replies": 0}
    posts = purge_posts(load_posts(root, streaming=True), authors, counts)
    try:
        write_shards(
            posts,
            root,
            format=shards[0].format,
            posts_per_shard=max(1, max(s.count or 0 for s in shards)),
            meta=extra,
        )
    except InputError as e:
        if counts["posts"] and counts["posts"] == counts["removed_posts"]:
            raise InputError(
                f"{root}: every one of its {counts['posts']} posts is by an opted-out author; delete the "
                "folder instead (nothing was changed)"
            ) from e
        raise
    verify_artifact(root, "shards")
    if sum(s.count or 0 for s in list_shards(root)) != counts["posts"] - counts["removed_posts"]:
        raise ArtifactError(f"{root}: the purged shard folder does not hold the posts written to it")
    return counts


def _verified_files(folder: Path) -> set[str]:
    """The files of a model folder (or of a ``pretrain`` encoder export), after every one is checked against
    its manifest (the artifact module's, or the model saver's own ``ximgctx-model`` manifest of folders saved
    before it)."""
    from ximgctx._artifacts import artifact_kind, verify_artifact
    from ximgctx.errors import ArtifactError

    kind = "pretrained-encoder" if artifact_kind(folder) == "pretrained-encoder" else "model"  # pretrain's
    try:
        return set(verify_artifact(folder, kind).files)
    except ArtifactError:
        from ximgctx.models._serialization import FORMAT, ModelFolderError, verify_folder

        try:
            legacy = (
                json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("format") == FORMAT
            )
        except (OSError, ValueError, AttributeError):
            legacy = False
        if not legacy:
            raise
        try:
            return set(verify_folder(folder)["files"])
        except ModelFolderError as e:
            raise ArtifactError(str(e)) from e


def model_report(folder: str | Path, authors: set[str], key: bytes, key_held: bool) -> dict[str, Any]:
    """How many of ``authors`` trained the model in ``folder`` (its manifest is verified first)."""
    from ximgctx.errors import ArtifactError
    from ximgctx.governance.authors import MODEL_AUTHORS_FILE, read_author_digests, trained_on_counts
    from ximgctx.governance.keys import key_id

    folder = Path(folder)
    if MODEL_AUTHORS_FILE not in _verified_files(folder):
        raise ArtifactError(
            f"{folder}: has no {MODEL_AUTHORS_FILE} in its manifest, so which authors trained it is unknown; "
            "treat it as trained on them and retrain from governed data"
        )
    digests, kid = read_author_digests(folder / MODEL_AUTHORS_FILE)
    if not key_held or kid != key_id(key):
        raise ArtifactError(
            f"{folder}: its author set was made with governance key {kid}, not the key given "
            f"({'none: pass --key-file or set $XIMGCTX_GOVERNANCE_KEY' if not key_held else key_id(key)})"
        )
    n = trained_on_counts(digests, authors, key)
    return {"trained_on_opted_out_authors": n, "authors_in_model": len(digests), "retrain": n > 0}


# --------------------------------------------------------------------------------------------- journal
JOURNAL_FORMAT = "ximgctx.purge-journal"
JOURNAL_VERSION = 1
TARGETS = (
    "model",
    "data",
    "queue",
    "index",
    "memory",
)  # the order a purge runs them: models (read only) first
_MAX_JOURNAL = 64 << 20  # a bound on what a damaged or foreign journal may make us read


#: result counts a completed record totals (besides every ``removed*``)
_COUNTED = ("items", "votes", "replies", "label_rows", "trained_on_opted_out_authors")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Target:
    """One thing a purge erases from (or, for a model, checks): its kind and its path as given."""

    kind: str  # one of TARGETS
    path: str

    def key(self) -> list[str]:
        """How a journal names it: kind and absolute path (a URL stays as it is)."""
        p = self.path if "://" in self.path else str(Path(self.path).absolute())
        return [self.kind, p]


def opt_out_digest(authors: set[str], key: bytes | None) -> str:
    """Which opt-out list a purge is of, without naming anyone: an HMAC (the operator's governance key) of
    the sorted normalised ids. With no key held, a SHA-256 of them (``sha256:`` prefixed), which lets whoever
    reads the journal confirm a guessed whole list: give the governance key to every purge to avoid it."""
    text = "\n".join(sorted(authors)).encode("utf-8")
    if key is not None:
        return "hmac-sha256:" + hmac.new(key, text, hashlib.sha256).hexdigest()
    return "sha256:" + hashlib.sha256(text).hexdigest()


class PurgeJournal:
    """The audit records of purges, one JSON file written atomically after every change.

    Each record: ``id``, ``state`` (``started`` | ``completed`` | ``abandoned``: it erased nothing and a purge
    of the same list took its place), ``opt_out`` (:func:`opt_out_digest`), ``key_id`` (the governance key's
    public id, or None), ``opted_out_authors`` (a count), ``started`` / ``completed`` times, ``attempts``,
    ``targets`` (each: kind, path, ``state`` pending | running | done | failed, ``result`` counts, ``error``,
    ``attempt``) and, once completed, ``counts`` (totals). No author id is ever written.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = self._read()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            if self.path.stat().st_size > _MAX_JOURNAL:
                raise ArtifactError(f"{self.path}: larger than {_MAX_JOURNAL} bytes; not a purge journal")
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{self.path}: not a readable purge journal: {e}") from e
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            raise ArtifactError(f"{self.path}: not a purge journal (format {JOURNAL_FORMAT!r})")
        if data.get("version") != JOURNAL_VERSION:
            raise ArtifactError(f"{self.path}: purge journal version {data.get('version')!r}, expected 1")
        records = data.get("purges")
        if not isinstance(records, list):
            raise ArtifactError(f"{self.path}: 'purges' must be a list")
        for i, r in enumerate(records):
            ok = (
                isinstance(r, dict)
                and r.get("state") in ("started", "completed", "abandoned")
                and isinstance(r.get("id"), str)
                and isinstance(r.get("opt_out"), str)
                and isinstance(r.get("targets"), list)
                and all(
                    isinstance(t, dict)
                    and t.get("target") in TARGETS
                    and isinstance(t.get("path"), str)
                    and t.get("state") in ("pending", "running", "done", "failed")
                    and isinstance(t.get("result") or {}, dict)
                    for t in r["targets"]
                )
            )
            if not ok:
                raise ArtifactError(f"{self.path}: purges[{i}] is not a purge record")
        return records

    def save(self) -> None:
        """Write every record atomically (a crash leaves the previous journal or this one, never a mix)."""
        from ximgctx._artifacts import atomic_output

        text = json.dumps(
            {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "purges": self.records},
            indent=1,
            sort_keys=True,
        )
        with atomic_output(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())

    def unfinished(self, digest: str) -> dict[str, Any] | None:
        """The latest ``started`` record of the opt-out list with ``digest``, if any."""
        found = [r for r in self.records if r["state"] == "started" and r["opt_out"] == digest]
        return found[-1] if found else None

    def announce(self, record: dict[str, Any], authors: set[str], key: bytes | None) -> None:
        """Before anything is erased: the record written (a file journal has no replicas to tell)."""
        self.save()

    def complete(self, record: dict[str, Any]) -> int | None:
        """The completed record written last; the store generation announcing it (None: no store)."""
        self.save()
        return None


class StoreJournal(PurgeJournal):
    """The purge records kept in the loop store (:class:`ximgctx.queue.erasure.PurgeLog`, table ``purges``)
    instead of a JSON file: the same records and states, plus the erased authors' keyed digests announced
    to every replica before anything is erased, and the generation that completes the purge."""

    def __init__(self, store: Any) -> None:
        from ximgctx.queue.erasure import PurgeLog

        self.store = store
        self.log = PurgeLog(store)
        self.path = Path("the loop store")  # how messages name it (never the URL: it may hold a password)
        self.records = self.log.records(state="started")

    def save(self) -> None:
        self.log.save(self.records)

    def announce(self, record: dict[str, Any], authors: set[str], key: bytes | None) -> None:
        """Write the record and, under the governance key, the erased authors' digests, and bump the
        generation (one transaction): replicas drop these authors from search and memory at their next
        poll. Without the key no digest can be made: the record alone is written."""
        if key is None:
            self.save()
            return
        from ximgctx.governance.identity import author_digest
        from ximgctx.governance.keys import key_id

        self.log.save([r for r in self.records if r is not record])  # e.g. an abandoned earlier try
        digests = {d for a in authors if (d := author_digest(a, key)) is not None}  # as indexes key them
        self.log.announce(record, key_id(key), digests)

    def complete(self, record: dict[str, Any]) -> int | None:
        from ximgctx.queue.erasure import checkpoint

        generation = self.log.complete(record)
        if not checkpoint(self.store):
            logger.warning("purge: the loop store's write-ahead log could not be truncated (readers busy)")
        return generation


@dataclass
class PurgeOutcome:
    """What :func:`run_purge` did: the journal record (completed, or left started on an error) and, when a
    target failed, the error."""

    record: dict[str, Any]
    resumed: bool
    error: Exception | None = None
    replicas: dict[str, Any] | None = None  # with a store: which replicas acknowledged the purge


def _target_keys(record: dict[str, Any]) -> list[list[str]]:
    return [[t["target"], t["path"]] for t in record["targets"]]


def _erased_any(record: dict[str, Any]) -> bool:
    """Whether a record's purge may have erased something (a target done, or running when it was killed)."""
    return any(t["state"] in ("done", "running") and t["target"] != "model" for t in record["targets"])


def _key_id(key: bytes | None) -> str | None:
    from ximgctx.governance.keys import key_id

    return key_id(key) if key is not None else None


def _sorted_keys(keys: list[list[str]]) -> list[list[str]]:
    """Targets in the order a purge runs them: models first (read only), then by kind and path."""
    return sorted(keys, key=lambda k: (TARGETS.index(k[0]), k[1]))


def run_purge(
    authors: set[str],
    targets: Sequence[Target],
    journal: str | Path | None = None,
    *,
    key: bytes | None = None,
    queue_key_file: str | None = None,
    store: Any = None,
    wait_replicas_s: float = 0.0,
) -> PurgeOutcome:
    """Erase ``authors`` from ``targets`` as one audited, resumable purge recorded in ``journal`` (a JSON
    file), or, given the loop ``store`` (a :class:`~ximgctx.queue.QueueStore`), in the store.

    ``key`` is the operator's governance key (None when none is held): the author key of indexes and
    memories and of models' author sets. Raises before anything is written when the journal is unreadable or
    an unfinished purge of the same list that already erased something covers other targets; a target's
    error is returned in the outcome (the record stays ``started``; a rerun resumes it).

    With a store, the erased authors' keyed digests are announced to the replicas before anything is erased
    (they drop them from search and memory at their next poll), the completion bumps the generation, and
    the purge waits up to ``wait_replicas_s`` for every live replica to acknowledge it (``replicas``)."""
    unknown = sorted({t.kind for t in targets} - set(TARGETS))
    if unknown or not targets:
        raise ConfigError(f"purge targets must be some of {list(TARGETS)}, got {unknown or 'none'}")
    if store is None and journal is None:
        raise ConfigError("a purge needs its audit record's place: a journal file or the loop store")
    log = StoreJournal(store) if store is not None else PurgeJournal(journal or "")
    digest = opt_out_digest(authors, key)
    wanted = _sorted_keys([list(k) for k in dict.fromkeys(tuple(t.key()) for t in targets)])
    record = log.unfinished(digest)
    if record is not None and _sorted_keys(_target_keys(record)) != wanted:
        if _erased_any(record):
            have = ", ".join(f"--{k} {p}" for k, p in _target_keys(record))
            raise ConfigError(
                f"{log.path}: purge {record['id']} of this opt-out list (started {record['started']}) erased "
                f"some of its targets and is unfinished; complete it first by running purge again with the "
                f"same targets: {have}"
            )
        record["state"] = "abandoned"  # it erased nothing: a purge with other targets takes its place
        record = None
    if record is None:  # a start under another key that erased nothing is this purge's failed first try
        for other in log.records:
            if (
                other["state"] == "started"
                and other.get("key_id") != _key_id(key)
                and other.get("opted_out_authors") == len(authors)
                and _sorted_keys(_target_keys(other)) == wanted
                and not _erased_any(other)
            ):
                other["state"] = "abandoned"
    resumed = record is not None
    if record is not None:
        record["attempts"] = int(record.get("attempts", 1)) + 1
    else:
        record = {
            "id": secrets.token_hex(8),
            "state": "started",
            "opt_out": digest,
            "key_id": _key_id(key),
            "opted_out_authors": len(authors),
            "started": _now(),
            "completed": None,
            "attempts": 1,
            "targets": [
                {"target": k, "path": p, "state": "pending", "result": None, "error": None, "attempt": None}
                for k, p in wanted
            ],
        }
        log.records.append(record)
    log.announce(record, authors, key)  # first: the record says what is about to be erased before anything is
    attempt = record["attempts"]
    by_key = {tuple(t.key()): t for t in targets}
    for entry in record["targets"]:
        if entry["state"] == "done":
            continue
        interrupted = entry["state"] == "running"  # a killed attempt may have erased some of it already
        entry.update(state="running", error=None, attempt=attempt)
        log.save()
        try:
            result = _purge_target(by_key[(entry["target"], entry["path"])], authors, key, queue_key_file)
        except Exception as e:
            from ximgctx.errors import XimgctxError

            if not isinstance(e, (XimgctxError, OSError)):
                raise  # a bug keeps its traceback; the record stays started with this target running
            entry.update(state="failed", error=f"{type(e).__name__}: {e}")
            log.save()
            return PurgeOutcome(record, resumed, e)
        if interrupted:
            result["interrupted_attempt_before"] = True  # its counts miss what the killed attempt erased
        entry.update(state="done", result=result)
        log.save()
    totals: dict[str, int] = {}
    for entry in record["targets"]:
        for k, v in (entry["result"] or {}).items():
            if k.startswith("removed") or k in _COUNTED:
                totals[f"{entry['target']}.{k}"] = totals.get(f"{entry['target']}.{k}", 0) + int(v)
    record.update(state="completed", completed=_now(), counts=totals)
    generation = log.complete(record)  # last
    replicas = None
    if store is not None and generation is not None:
        from ximgctx.queue.erasure import wait_for_replicas

        replicas = wait_for_replicas(store, generation, wait_replicas_s)
    return PurgeOutcome(record, resumed, replicas=replicas)


def _purge_target(target: Target, authors: set[str], key: bytes | None, queue_key_file: str | None) -> dict:
    """Erase ``authors`` from one target (or check one model); its counts."""
    path = target.path
    if target.kind == "data":
        return purge_manifest(path, authors)
    if target.kind == "index":
        from ximgctx.inference.search import SearchIndex

        index = SearchIndex.load(path, author_key=key)
        removed = index.remove_authors(authors)
        index.save(path)
        return {"removed": int(removed), "remaining": len(index)}
    if target.kind == "memory":
        from ximgctx.inference.memory import LabelMemory

        memory = LabelMemory.load(path, author_key=key)
        removed = memory.remove_authors(authors)
        memory.save(path)
        return {"removed": int(removed), "remaining": len(memory)}
    if target.kind == "queue":
        from ximgctx.queue import QueueConfig, QueueStore, read_queue_key

        store = QueueStore(QueueConfig(db=path, key=read_queue_key(queue_key_file)))
        try:
            return dict(store.purge_authors(authors))
        finally:
            store.close()
    from ximgctx.governance.keys import load_key

    held_key, held = (key, True) if key is not None else load_key(env=False)
    return model_report(path, authors, held_key, held)
