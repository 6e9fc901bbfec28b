"""``govern`` over a shard folder, in one process or split by shard across several.

    audit = govern_shards("raw_shards/", "governed_shards/", policy, key=key, processes=8)

The result is the same whatever ``processes`` is: the same posts, byte for byte, in the same order, in the
same shard files with the same index, and the same audit counts. With ``processes > 1`` both passes of
governance are split by shard across a pool of spawned processes (each a fresh interpreter whose Presidio
analyzers, and NER pipeline if any, are built once on first use and kept for every shard it is given):

1. every shard's opted-out authors (:func:`collect_opt_outs` is a union over posts, so per-shard sets merge
   into the one-process set), then the merged set is written to a temporary file each process reads once;
2. every shard governed with that set into a temporary Parquet file beside the output (posts never travel
   through a pipe, so memory stays bounded by a row group), returning only its counts.

The parent reads the temporary files in shard order and writes the governed folder through
:func:`ximgctx.data.shard_write.write_shards` exactly as the one-process run does (same chunking, same
index, a verified ``shards`` artifact), then removes them. A bad record stops the run at the first one in
shard order, the one a single process would meet (``on_error="skip"``: counted instead). The key reaches
the processes through their start-up arguments only; nothing of it is written. The temporary files need
about the governed folder's size on the output's disk while the run lasts.

The processes are spawned (as on macOS and Windows): a script that calls ``govern_shards(...,
processes=N)`` must do so under ``if __name__ == "__main__":``, as with any ``multiprocessing`` pool.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from ximgctx.data.record import LoadReport, Post, PostValidationError, Reply
from ximgctx.data.shards import ShardInfo, list_shards, read_shard
from ximgctx.errors import ConfigError, InputError
from ximgctx.governance.core import AuditReport, collect_opt_outs, iter_govern, new_audit
from ximgctx.governance.keys import load_key
from ximgctx.governance.policy import GovernancePolicy

__all__ = ["WhereOnly", "govern_shards"]

_loader_log = logging.getLogger("ximgctx.data")
_ROWS = 256  # posts per row group of a temporary file: what a process holds before writing


class WhereOnly(logging.Filter):
    """Rewrites the loader's "skipping bad record" warnings to name only file, line and field: its messages
    can quote a record's values, which must not reach governance logs (installed by ``ximgctx govern`` and
    in every governing process)."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if isinstance(err, PostValidationError):
            record.msg = "skipping bad record at %s:%s field %r"
            record.args = (err.source, err.line, err.field)
        return True


# ------------------------------------------------------------------------------------- one shard, anywhere
def _shard_posts(shard: ShardInfo, on_error: str, report: LoadReport) -> Iterator[Post]:
    """One shard's posts as :func:`ximgctx.data.io.load_posts` streams them (``streaming=True``): a record's
    problem becomes the same PostValidationError, raised or skipped."""
    for pos, item in read_shard(shard):
        report.read += 1
        if isinstance(item, Post):
            yield item
            continue
        err = PostValidationError(
            f"{item.kind}: {item.detail}", source=str(shard.path), line=pos + 1, field=item.field
        )
        report.skip(err, on_error, _loader_log)


@dataclass
class _Outcome:
    """What one shard's task sends back: counts and ids, never posts; or the error that stopped it."""

    opted_out: list[str] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    author_digests: list[str] = field(default_factory=list)
    skipped: int = 0
    error: dict[str, Any] | None = None  # a PostValidationError's parts (rebuilt by the parent)

    def raise_error(self) -> None:
        if self.error is not None:
            e = self.error
            raise PostValidationError(e["reason"], source=e["source"], line=e["line"], field=e["field"])


def _error(e: PostValidationError) -> dict[str, Any]:
    return {"reason": e.reason, "source": e.source, "line": e.line, "field": e.field}


_STATE: dict[str, Any] = {}  # the pool process's policy, key and on_error (set by _start)


def _start(policy: GovernancePolicy, key: bytes, on_error: str, want_digests: bool) -> None:
    logging.getLogger("ximgctx.data").addFilter(WhereOnly())
    _STATE.update(policy=policy, key=key, on_error=on_error, want_digests=want_digests)


def _task_opt_outs(shard: ShardInfo) -> _Outcome:
    report = LoadReport()
    try:
        found = collect_opt_outs(_shard_posts(shard, _STATE["on_error"], report), _STATE["policy"])
    except PostValidationError as e:
        return _Outcome(error=_error(e))
    return _Outcome(opted_out=sorted(found), skipped=report.skipped)


@lru_cache(maxsize=2)
def _read_opted_out(path: str) -> frozenset[str]:
    return frozenset(json.loads(Path(path).read_text(encoding="utf-8")))


def _task_govern(shard: ShardInfo, opted_path: str, out_path: str) -> _Outcome:
    policy: GovernancePolicy = _STATE["policy"]
    audit = new_audit(policy)
    report = LoadReport()
    digests: set[str] = set()
    posts = iter_govern(
        _shard_posts(shard, _STATE["on_error"], report),
        policy,
        audit,
        set(_read_opted_out(opted_path)),
        key=_STATE["key"],
        author_digests=digests if _STATE["want_digests"] else None,
    )
    try:
        _write_temp(posts, Path(out_path))
    except PostValidationError as e:
        return _Outcome(error=_error(e))
    return _Outcome(audit=_counts(audit), author_digests=sorted(digests), skipped=report.skipped)


# ------------------------------------------------------------------------------------- temporary files
def _write_temp(posts: Iterator[Post], path: Path) -> None:
    """Governed posts as Parquet rows ``(record JSON without the image, image bytes)``: the record is
    :meth:`Post.to_dict` in its own key order (ASCII escapes, NaN kept), so :func:`_read_temp` gives back
    posts whose records are the ones the governing process made."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("record", pa.string()), ("image", pa.binary())])
    rows: dict[str, list[Any]] = {"record": [], "image": []}
    with pq.ParquetWriter(path, schema) as writer:
        for post in posts:
            record = post.to_dict()
            record.pop("image", None)
            rows["record"].append(json.dumps(record, ensure_ascii=True, allow_nan=True))
            if post.image is not None and not isinstance(post.image, (bytes, bytearray)):
                raise InputError(f"post {post.id!r}: a shard post's image must be bytes")
            rows["image"].append(None if post.image is None else bytes(post.image))
            if len(rows["record"]) >= _ROWS:
                writer.write_table(pa.Table.from_pydict(rows, schema=schema))
                rows = {"record": [], "image": []}
        writer.write_table(pa.Table.from_pydict(rows, schema=schema))


def _read_temp(path: Path) -> Iterator[Post]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=_ROWS):
            for record, image in zip(
                batch.column("record").to_pylist(), batch.column("image").to_pylist(), strict=True
            ):
                d = json.loads(record)
                yield Post(
                    id=d["id"],
                    image=image,
                    text=d["text"],
                    replies=[Reply(text=r["text"], author=r.get("author")) for r in d["replies"]],
                    labels=d["labels"],
                    meta=d["meta"],
                )


# ------------------------------------------------------------------------------------- the audit's counts
_COUNTS = ("input_posts", "kept_posts", "input_replies", "kept_replies", "posts_with_redactions")
_BY_KIND = ("dropped_posts", "removed_replies", "redactions")


def _counts(audit: AuditReport) -> dict[str, Any]:
    return {**{k: getattr(audit, k) for k in _COUNTS}, **{k: dict(getattr(audit, k)) for k in _BY_KIND}}


def _add(audit: AuditReport, counts: dict[str, Any]) -> None:
    for k in _COUNTS:
        setattr(audit, k, getattr(audit, k) + counts[k])
    for k in _BY_KIND:
        mine = getattr(audit, k)
        for kind, n in counts[k].items():
            mine[kind] = mine.get(kind, 0) + n


# ------------------------------------------------------------------------------------- the entry point
def govern_shards(
    data: str | Path,
    out: str | Path,
    policy: GovernancePolicy | None = None,
    *,
    key: bytes | None = None,
    processes: int = 1,
    on_error: Literal["raise", "skip"] = "raise",
    author_digests: set[str] | None = None,
    overwrite: bool = False,
) -> AuditReport:
    """Govern the shard folder ``data`` into the shard folder ``out`` (same shard format, images kept) and
    return the audit. ``processes``: how many processes govern (1: this one); the output does not depend on
    it. ``author_digests`` (when given) receives the keyed digest of every author whose words were kept.

    Raises:
        ConfigError: ``processes`` is not a positive integer.
        PostValidationError: a malformed record with ``on_error="raise"`` (the first in shard order).
    """
    from ximgctx.data.shard_write import write_shards

    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigError(f"processes must be a positive integer, got {processes!r}")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    policy = policy or GovernancePolicy()
    held = True
    if key is None:
        key, held = load_key()
    shards = list_shards(data)
    audit = new_audit(policy)
    audit.key_held = held
    audit.policy_sha256 = policy.digest(key)

    def write(posts: Iterator[Post]) -> None:  # what the one-process run writes, whatever the processes
        write_shards(
            posts, out, format=shards[0].format, inputs=[data], meta={"governed": True}, overwrite=overwrite
        )

    if processes == 1 or len(shards) == 1:
        opted_out = collect_opt_outs(_all_posts(shards, on_error, LoadReport()), policy)
        report = LoadReport()
        posts = _all_posts(shards, on_error, report)
        governed = iter_govern(posts, policy, audit, opted_out, key=key, author_digests=author_digests)
        write(governed)
        audit.skipped_records = report.skipped
        audit.check()
        return audit
    parent = Path(os.path.abspath(out)).parent
    parent.mkdir(parents=True, exist_ok=True)  # as write_shards does; the temporary files go beside out
    tmp = Path(tempfile.mkdtemp(prefix=".govern-", dir=parent))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no fork of this one's threads
    try:
        with ProcessPoolExecutor(
            max_workers=min(processes, len(shards)),
            mp_context=context,
            initializer=_start,
            initargs=(policy, key, on_error, author_digests is not None),
        ) as pool:
            opted_out = set(policy.opt_out_authors)
            for outcome in [f.result() for f in [pool.submit(_task_opt_outs, s) for s in shards]]:
                outcome.raise_error()
                opted_out.update(outcome.opted_out)
            opted_path = tmp / "opted_out.json"
            opted_path.write_text(json.dumps(sorted(opted_out)), encoding="utf-8")
            futures = [
                pool.submit(_task_govern, s, str(opted_path), str(tmp / f"{i:06d}.parquet"))
                for i, s in enumerate(shards)
            ]
            audit.opted_out_authors = len(opted_out)
            skipped = [0]
            try:
                write(_merge(futures, tmp, audit, author_digests, skipped))
            finally:
                for f in futures:
                    f.cancel()
            audit.skipped_records = skipped[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    audit.check()
    return audit


def _all_posts(shards: list[ShardInfo], on_error: str, report: LoadReport) -> Iterator[Post]:
    for shard in shards:
        yield from _shard_posts(shard, on_error, report)


def _merge(
    futures: list[Future[_Outcome]],
    tmp: Path,
    audit: AuditReport,
    author_digests: set[str] | None,
    skipped: list[int],
) -> Iterator[Post]:
    """The governed posts of every shard in shard order, its counts added to ``audit`` once it is read."""
    for i, future in enumerate(futures):
        outcome = future.result()
        outcome.raise_error()
        path = tmp / f"{i:06d}.parquet"
        yield from _read_temp(path)
        path.unlink()
        _add(audit, outcome.audit)
        skipped[0] += outcome.skipped
        if author_digests is not None:
            author_digests.update(outcome.author_digests)
