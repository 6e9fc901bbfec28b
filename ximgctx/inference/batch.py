"""Batch inference over a manifest, sharded across processes, writing JSONL or Parquet.

Run on one process, or under ``torchrun`` / ``accelerate launch`` with any number of processes::

    ximgctx predict --model runs/quickstart/model --data posts.jsonl --out preds.parquet
    torchrun --nproc_per_node 4 -m ximgctx.cli predict --model ... --data ... --out preds.jsonl

How sharding works, and why the output is exactly one result per valid input record:

1. Every process streams the whole manifest (parsing JSON is cheap next to the model) and numbers the
   valid records 0, 1, 2, ... in file order. Invalid records are skipped (or stop the job) the same way on
   every process, so all processes agree on the numbering.
2. Process ``r`` of ``W`` runs the model on records ``i`` with ``i % W == r`` (round robin, so shards stay
   balanced) and writes ``(i, result)`` lines, in increasing ``i``, to ``OUT.parts/rank-r-of-W.jsonl``.
3. After a barrier, process 0 merges the parts by ``i`` (a streaming k-way merge), checks that the indices
   are exactly ``0 .. N-1`` (no duplicate, none missing), writes ``OUT`` atomically (a temporary file
   renamed into place) and removes the parts.

With one process the same path runs with ``W = 1``, so one process and many write the same records.

Records are read with their labels ignored (``load_posts(labels="ignore")``: inference does not use them,
so a post whose only fault is a label value still gets a result). Every record written is standard JSON:
a NaN or infinite number becomes null and the record's ``problems`` names where. An output that is also
the input is refused before any work; file-system failures are one :class:`~ximgctx.errors.OutputError`.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ximgctx._artifacts import atomic_output, output_errors
from ximgctx._json import json_safe
from ximgctx.data.io import load_posts
from ximgctx.data.record import LoadReport, Post
from ximgctx.errors import ConfigError, OutputError

logger = logging.getLogger(__name__)

__all__ = [
    "Shard",
    "count_records",
    "distributed_shard",
    "finite_record",
    "output_format",
    "run_sharded",
    "write_records",
]

#: How many records go into one Parquet row group when writing.
_ROW_GROUP = 4096


@dataclass
class Shard:
    """Which slice of the work this process does, and how it meets the others."""

    rank: int = 0  # this process
    world: int = 1  # number of processes
    device: str = "cpu"  # the device Accelerate assigned to this process
    barrier: Callable[[], None] = lambda: None  # waits for every process (no-op with one)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_shard(device: str | None = None, timeout_s: float = 1800.0) -> Shard:
    """This process's shard from Accelerate's ``PartialState`` (one process when not launched).

    Args:
        device: ``None``/``"auto"`` lets Accelerate assign one (``cuda:LOCAL_RANK`` on GPUs); ``"cpu"``
            forces CPU processes (gloo), which Accelerate only sets up when told.
        timeout_s: how long the final barrier waits for the slowest process. Shards are balanced, so
            processes finish close together; a process that is gone fails the job instead of hanging it.
    """
    from ximgctx._distributed import partial_state, wants_cpu

    cpu = wants_cpu(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # not launched: one process, no process group to set up
        import torch

        auto = "cuda" if torch.cuda.is_available() else "cpu"
        dev = "cpu" if cpu else (auto if device in (None, "auto") else str(device))
        return Shard(rank=0, world=1, device=dev, barrier=lambda: None)
    state = partial_state(cpu=cpu, timeout_s=timeout_s)
    dev = str(state.device) if device in (None, "auto") else device
    if cpu:
        dev = "cpu"
    return Shard(
        rank=state.process_index, world=state.num_processes, device=dev, barrier=state.wait_for_everyone
    )


def output_format(path: str | Path) -> str:
    """``"jsonl"`` or ``"parquet"`` from the output file's extension."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ConfigError(f"{path}: the output must end in .jsonl or .parquet, got {suffix or 'no extension'!r}")


def finite_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every NaN or infinite float replaced by None (standard JSON has neither), and a
    problem naming each replaced field appended to its ``problems`` (when it has that list)."""
    found: list[str] = []
    out = json_safe(record, on_nonfinite=lambda where, _value: found.append(where))
    if found and isinstance(out.get("problems"), list):
        out["problems"] = [
            *out["problems"],
            *(f"output: {w}: not a finite number; written as null" for w in found),
        ]
    return out


def count_records(path: str | Path) -> int | None:
    """Records in a manifest without parsing them (non-blank JSONL lines, Parquet row counts), or None."""
    from ximgctx.data.shards import is_shard_source, list_shards

    if is_shard_source(path):  # the index's counts (or the tar headers)
        return sum(s.count for s in list_shards(path))
    path = Path(path)
    files: list[Path]
    if path.is_dir():
        files = sorted(path.glob("*.jsonl")) + sorted(path.glob("*.parquet"))
    else:
        files = [path]
    if not files:
        return None  # e.g. a saved datasets folder
    from ximgctx.data.data_files import DataFileError, open_data_file

    total = 0
    for f in files:
        try:  # a symlink or a FIFO is never opened (the loader reports it, naming it)
            if f.suffix == ".parquet":
                import pyarrow.parquet as pq

                with open_data_file(f) as fh:
                    total += pq.ParquetFile(fh).metadata.num_rows
            elif f.suffix in (".jsonl", ".json", ".ndjson"):
                with open_data_file(f) as fh:
                    total += sum(1 for line in fh if line.strip())
            else:
                return None
        except DataFileError:
            return None
    return total


def _progress(total: int | None, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="post", dynamic_ncols=True, file=sys.stderr)


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _part_path(out: Path, rank: int, world: int) -> Path:
    return _parts_dir(out) / f"rank-{rank:05d}-of-{world:05d}.jsonl"


def _read_part(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            yield rec["i"], rec["r"]


def write_records(
    records: Iterable[dict[str, Any]],
    out: str | Path,
    *,
    schema: Any = None,
    inputs: Iterable[str | Path | None] = (),
) -> int:
    """Write dict records to ``out`` (JSONL or Parquet by extension) atomically; returns the count.

    Args:
        schema: a ``pyarrow.Schema`` for Parquet output (inferred from the records when None).
        inputs: files the run reads; ``out`` may not be one of them.
    """
    out = Path(out)
    fmt = output_format(out)
    with atomic_output(out, inputs=inputs) as tmp, output_errors(out):
        if fmt == "jsonl":
            n = 0
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(finite_record(rec), ensure_ascii=False, allow_nan=False))
                    f.write("\n")
                    n += 1
            return n
        return _write_parquet(records, tmp, schema)


def _write_parquet(records: Iterable[dict[str, Any]], path: Path, schema: Any) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    chunk: list[dict[str, Any]] = []
    n = 0

    def flush() -> None:
        nonlocal writer
        table = pa.Table.from_pylist(chunk, schema=schema)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        chunk.clear()

    for rec in records:
        chunk.append(finite_record(rec))
        n += 1
        if len(chunk) >= _ROW_GROUP:
            flush()
    if chunk or writer is None:
        if not chunk and schema is None:
            schema = pa.schema([("id", pa.string())])
        flush()
    assert writer is not None
    writer.close()
    return n


def _merge_parts(
    out: Path, world: int, expected: int, schema: Any, inputs: Iterable[str | Path | None] = ()
) -> tuple[int, int]:
    """k-way merge of the part files by record index, verifying exactly ``0 .. expected-1``.

    Returns the records written and how many of them name a problem.
    """
    parts = [_part_path(out, r, world) for r in range(world)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise RuntimeError(
            f"sharded prediction: part files missing after the barrier: {missing}; "
            f"every process must write to the same (shared) file system"
        )

    with_problems = 0

    def checked() -> Iterator[dict[str, Any]]:
        nonlocal with_problems
        want = 0
        for i, rec in heapq.merge(*(_read_part(p) for p in parts), key=lambda x: x[0]):
            if i != want:
                what = "a duplicate of" if i < want else "missing"
                raise RuntimeError(
                    f"sharded prediction: record index {want} is {what} "
                    f"(got index {i}); the processes did not agree on the input"
                )
            want += 1
            with_problems += bool(rec.get("problems"))
            yield rec
        if want != expected:
            raise RuntimeError(
                f"sharded prediction: merged {want} results but the manifest has {expected} valid records"
            )

    return write_records(checked(), out, schema=schema, inputs=inputs), with_problems


def _write_part(
    posts: Iterable[Post],
    job: Callable[[list[Post]], list[dict[str, Any]]],
    shard: Shard,
    batch_size: int,
    out: Path,
    bar: Any,
) -> tuple[int, int]:
    """Run ``job`` on this process's records (``i % world == rank``) and write ``(i, result)`` lines to its
    part file; returns (valid records in the manifest, records this process predicted)."""
    part = _part_path(out, shard.rank, shard.world)
    with output_errors(out):
        part.parent.mkdir(parents=True, exist_ok=True)
        f = open(part, "w", encoding="utf-8")  # noqa: SIM115 - closed by the with block below
    seen = 0  # valid records in the manifest (every process counts all of them)
    done = 0  # records this process predicted
    with f:
        pending: list[tuple[int, Post]] = []

        def flush() -> None:
            nonlocal done
            records = job([p for _, p in pending])
            if len(records) != len(pending):
                raise RuntimeError(f"job returned {len(records)} records for {len(pending)} posts")
            lines = [
                json.dumps({"i": i, "r": finite_record(rec)}, ensure_ascii=False, allow_nan=False) + "\n"
                for (i, _), rec in zip(pending, records, strict=True)
            ]
            with output_errors(out):
                f.writelines(lines)
            done += len(pending)
            bar.update(len(pending))
            pending.clear()

        for post in posts:
            if seen % shard.world == shard.rank:
                pending.append((seen, post))
                if len(pending) >= batch_size:
                    flush()
            seen += 1
        if pending:
            flush()
    return seen, done


@contextlib.contextmanager
def _stdout_target(out: str | Path, shard: Shard) -> Iterator[Path]:
    """``--out -``: results are merged into a temporary JSONL file, then copied to stdout (one process only:
    under torchrun the parts of every process meet in the output's folder)."""
    if str(out) != "-":
        yield Path(out)
        return
    if shard.world > 1:
        raise ConfigError("--out - (stdout) runs in one process; under torchrun give --out FILE")
    tmp = Path(tempfile.mkdtemp(prefix="ximgctx-stdout-"))
    try:
        yield tmp / "out.jsonl"
        with open(tmp / "out.jsonl", encoding="utf-8") as f:
            shutil.copyfileobj(f, sys.stdout)
        sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_sharded(
    *,
    data: str | Path,
    out: str | Path,
    job: Callable[[list[Post]], list[dict[str, Any]]],
    shard: Shard,
    batch_size: int,
    schema: Any = None,
    image_root: str | Path | None = None,
    confine_images: bool = True,
    on_error: Literal["raise", "skip"] = "skip",
    progress: bool = True,
    desc: str = "predict",
) -> dict[str, Any]:
    """Run ``job`` over this process's shard of ``data`` and (on process 0) write the merged ``out``.

    Args:
        data: the manifest (JSONL, Parquet, or a folder of shards), read streaming.
        out: the output file, ``.jsonl`` or ``.parquet``, or ``-`` for JSONL on stdout (one process).
        job: posts -> one JSON-able record per post, in order (a batch of at most ``batch_size``).
        shard: which process this is (:func:`distributed_shard`).
        schema: pyarrow schema of the records for Parquet output.
        on_error: ``"skip"`` bad manifest records (counted and named in the summary) or ``"raise"``.
        confine_images: a datasets folder's image paths must stay inside it (see ``load_posts``).

    Returns:
        A summary (process 0's is complete: records, skipped, seconds, posts/second, processes).
    """
    with _stdout_target(out, shard) as target:
        summary = _run_sharded(
            data, target, job, shard, batch_size, schema, image_root, on_error, progress, desc, confine_images
        )
    if str(out) == "-":
        summary["out"] = "-"
    return summary


def _run_sharded(
    data: str | Path,
    out: Path,
    job: Callable[[list[Post]], list[dict[str, Any]]],
    shard: Shard,
    batch_size: int,
    schema: Any,
    image_root: str | Path | None,
    on_error: Literal["raise", "skip"],
    progress: bool,
    desc: str,
    confine_images: bool = True,
) -> dict[str, Any]:
    output_format(out)  # fail before any work on a bad extension
    if Path(data).resolve() == out.resolve() or out.resolve().is_relative_to(Path(data).resolve()):
        raise OutputError(f"{out}: is also the input (--data {data}); writing there would destroy it")
    if not shard.is_main:  # every process reads every record: let process 0 alone log the bad ones
        logging.getLogger("ximgctx.data").setLevel(logging.ERROR)
    report = LoadReport()
    start = time.perf_counter()
    total = count_records(data) if shard.is_main and progress else None
    mine_total = None if total is None else math.ceil(total / shard.world)
    bar = _progress(
        mine_total,
        progress and shard.is_main,
        f"{desc} (process 0 of {shard.world})" if shard.world > 1 else desc,
    )
    posts = load_posts(
        data,
        streaming=True,
        on_error=on_error,
        image_root=image_root,
        report=report,
        labels="ignore",
        confine_images=confine_images,
    )
    try:
        seen, done = _write_part(posts, job, shard, batch_size, out, bar)
    finally:
        bar.close()
    shard.barrier()
    summary: dict[str, Any] = {
        "processes": shard.world,
        "rank": shard.rank,
        "records": seen,
        "predicted_here": done,
        "skipped_records": report.skipped,
    }
    if shard.is_main:
        written, with_problems = _merge_parts(out, shard.world, seen, schema, inputs=[data])
        shutil.rmtree(_parts_dir(out), ignore_errors=True)
        seconds = time.perf_counter() - start
        summary.update(
            {
                "out": str(out),
                "written": written,
                "seconds": round(seconds, 3),
                "posts_per_second": round(written / seconds, 2) if seconds > 0 else None,
                "with_problems": with_problems,
            }
        )
        if report.errors:
            summary["skipped_examples"] = [str(e) for e in report.errors[:10]]
    return summary
