"""Shared pieces of the dataset adapters: the result type, problem records, and tolerant table readers.

Every adapter reads a dataset in the layout its authors published and returns a
:class:`ConversionResult`: the posts it could convert plus one :class:`Problem` per row it could not (or
converted with a caveat). Rows are never dropped silently. A missing required *file* or *column* is not a
row problem: it raises :class:`AdapterError` naming the file or column and the folder, because nothing
sensible can be converted without it.

Conventions shared by all adapters:

- ``Post.image`` is an **absolute path** into the source folder (resolved with ``Path.resolve``), so the
  output manifest can be written anywhere and read back with :func:`ximgctx.data.io.load_posts`
  (absolute paths are left alone by its ``image_root`` logic).
- A row whose image file is missing is a problem for that row and is **skipped** by default
  (``missing_image="skip"``): a post whose image silently vanished is a different, text-only example with
  the same label, which is the wrong thing to train a multimodal model on. ``missing_image="keep"``
  keeps it with ``image=None`` and still reports it.
- ``meta`` carries ``source`` (the adapter name), ``visibility="public"`` (these are published public
  datasets), ``split``, ``author`` where the dataset has one, and ``original``: the raw row as read.
  ``meta["original"]`` may hold personal data (raw tweet text, URLs); ``ximgctx govern`` redacts it
  together with the text.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ximgctx.data.post_write import WriteReport
from ximgctx.data.record import Post
from ximgctx.errors import InputError

MissingImage = Literal["skip", "keep"]

__all__ = [
    "AdapterError",
    "ConversionResult",
    "MissingImage",
    "Problem",
    "RowReader",
    "TaskDef",
    "find_file",
    "read_delimited",
    "write_manifest",
]


class AdapterError(InputError):
    """A dataset folder lacks a required file or column. The message names it and the folder."""


@dataclass(frozen=True)
class TaskDef:
    """One task an adapter produces; mirrored by ``configs/tasks/<dataset>.yaml`` (a test checks)."""

    name: str  # task name, after the dataset's own label (e.g. "hateful", "sarcasm")
    labels: tuple[str, ...]  # label names in the dataset's own order
    kind: Literal["multiclass", "multilabel"] = "multiclass"
    source: Literal["fused", "image"] = "fused"  # what the head reads

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "labels": list(self.labels), "source": self.source}


@dataclass(frozen=True)
class Problem:
    """A row that was skipped (or kept with a caveat), with where it is and why."""

    file: str  # the file the row came from
    line: int | None  # 1-based line in that file (the header is line 1 of a CSV/TSV); None for a file
    field: str | None  # the offending field or column, if one
    reason: str  # what is wrong, for a person
    skipped: bool = True  # False when the row was converted anyway (e.g. kept without its image)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        fld = f" {self.field}:" if self.field else ""
        tail = "" if self.skipped else " (kept)"
        return f"{where}:{fld} {self.reason}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "reason": self.reason,
            "skipped": self.skipped,
        }


@dataclass
class ConversionResult:
    """What an adapter produced: posts, per-row problems, and which files it read."""

    dataset: str  # adapter name
    posts: list[Post] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the annotation files read, in order
    rows: int = 0  # data rows seen in those files
    duplicates: int = 0  # rows identical to a post already converted (same id, same content), merged
    counts: dict[str, int] = field(default_factory=dict)  # reason -> records skipped/altered in bulk

    @property
    def skipped(self) -> int:
        return sum(1 for p in self.problems if p.skipped)

    def summary(self) -> str:
        """A few lines for a person: counts per split, then every problem (file:line: field: reason)."""
        splits: dict[str, int] = {}
        for p in self.posts:
            s = str(p.meta.get("split"))
            splits[s] = splits.get(s, 0) + 1
        per_split = ", ".join(f"{k}: {v}" for k, v in sorted(splits.items()))
        lines = [
            f"{self.dataset}: {len(self.posts)} posts from {self.rows} rows in {len(self.files)} files"
            f" ({per_split}); {self.skipped} rows skipped, {len(self.problems)} problems,"
            f" {self.duplicates} duplicate rows merged",
        ]
        if self.counts:
            lines.append("  also: " + ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items())))
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)

    def count(self, reason: str) -> None:
        """Count a record skipped or altered for a reason too common for a line each (deleted comments)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1


def find_file(src: Path, names: Sequence[str], *, subdirs: Sequence[str] = ("",)) -> Path | None:
    """First existing ``src/<subdir>/<name>``; names are tried in order within each subdir."""
    for sub in subdirs:
        for name in names:
            p = src / sub / name if sub else src / name
            if p.is_file():
                return p
    return None


def _decode(raw: bytes, path: Path) -> str:
    # Published CSVs come as UTF-8 (often with a BOM, from Excel) and sometimes as Windows-1252.
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")  # never fails; every byte maps to a character


def _is_index_column(name: str) -> bool:
    # pandas' to_csv writes an unnamed index column: "" in the header, read back as "Unnamed: 0".
    n = name.strip()
    return n == "" or n.lower().startswith("unnamed:")


#: key under which :func:`read_delimited` notes a row whose field count differs from the header's
SHAPE_KEY = "__shape_error__"


@dataclass
class RowReader:
    """Rows of one CSV/TSV as dicts, with their 1-based line numbers in the file."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]]

    def require(self, *names: str) -> None:
        """Raise :class:`AdapterError` naming the first required column that is absent."""
        for n in names:
            if n not in self.columns:
                raise AdapterError(
                    f"{self.path}: required column {n!r} is missing (columns: {self.columns}); "
                    f"is this the published layout of the dataset in {self.path.parent}?"
                )

    def pick(self, *candidates: str) -> str | None:
        """The first of several published spellings of a column that this file has."""
        for c in candidates:
            if c in self.columns:
                return c
        return None

    def shape_problem(self, result: ConversionResult, line: int, row: dict[str, Any]) -> bool:
        """Report a row with the wrong number of fields (a stray delimiter in the text, a cut line).
        Returns True when the row must be skipped."""
        err = row.pop(SHAPE_KEY, None)
        if err is None:
            return False
        result.add(Problem(str(self.path), line, None, f"malformed row: {err}"))
        return True


def read_delimited(path: Path, *, delimiter: str, quoting: bool = True) -> RowReader:
    """Read a CSV/TSV leniently: BOM and encoding tolerant, unnamed index columns dropped, header names
    stripped. With ``quoting``, quoted fields may span lines (pandas' default); without, every line is one
    row split on the delimiter (how CrisisMMD's own loader reads its TSVs). The line number recorded is
    where the row starts."""
    text = _decode(path.read_bytes(), path)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
    )
    try:
        header = next(reader)
    except StopIteration as e:
        raise AdapterError(f"{path}: the file is empty (no header row)") from e
    names = [h.strip() for h in header]
    keep = [i for i, n in enumerate(names) if not _is_index_column(n)]
    columns = [names[i] for i in keep]
    rows: list[tuple[int, dict[str, Any]]] = []
    line = 2
    for rec in reader:
        start = line
        line = reader.line_num + 1
        if not rec or all(not c.strip() for c in rec):
            continue
        row: dict[str, Any] = {names[i]: (rec[i] if i < len(rec) else None) for i in keep}
        if len(rec) != len(names):
            row[SHAPE_KEY] = f"{len(rec)} fields where the header has {len(names)}"
        rows.append((start, row))
    return RowReader(path=path, columns=columns, rows=rows)


def iter_delimited(
    path: Path, *, delimiter: str, quoting: bool = True
) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """Like :func:`read_delimited`, but streams rows (for files too large to hold, such as Fakeddit's
    comments). Returns the column names and an iterator of ``(line, row)``; rows with a field count
    different from the header carry :data:`SHAPE_KEY`."""
    f = open(path, encoding="utf-8-sig", errors="replace", newline="")  # noqa: SIM115 (closed by _rows)
    reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        header = next(reader)
    except StopIteration as e:
        f.close()
        raise AdapterError(f"{path}: the file is empty (no header row)") from e
    names = [h.strip() for h in header]
    keep = [i for i, n in enumerate(names) if not _is_index_column(n)]

    def _rows() -> Iterator[tuple[int, dict[str, Any]]]:
        with f:
            line = 2
            for rec in reader:
                start = line
                line = reader.line_num + 1
                if not rec or all(not c.strip() for c in rec):
                    continue
                row: dict[str, Any] = {names[i]: (rec[i] if i < len(rec) else None) for i in keep}
                if len(rec) != len(names):
                    row[SHAPE_KEY] = f"{len(rec)} fields where the header has {len(names)}"
                yield start, row

    return [names[i] for i in keep], _rows()


def parse_int_label(value: Any) -> int | None:
    """An integer label from JSON/CSV (``1``, ``"1"``, ``"1.0"``, ``1.0``); None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        s = value.strip()
        try:
            f = float(s)
        except ValueError:
            return None
        return int(f) if math.isfinite(f) and f.is_integer() else None
    return None


def norm_label(value: Any) -> str:
    """Normalise a string label: trimmed, lower case, spaces and dashes as underscores."""
    return str(value).strip().lower().replace(" ", "_").replace("-", "_")


def public_meta(dataset: str, split: str, original: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``meta`` every adapter writes (see the module docstring)."""
    meta: dict[str, Any] = {"source": dataset, "visibility": "public", "split": split}
    meta.update({k: v for k, v in extra.items() if v is not None})
    meta["original"] = original
    return meta


def resolve_image(
    result: ConversionResult,
    candidates: Iterable[Path],
    *,
    file: Path,
    line: int | None,
    fld: str,
    shown: str,
    missing_image: MissingImage,
) -> tuple[bool, str | None]:
    """Find the row's image among ``candidates``; report it when none exists.

    Returns ``(keep_row, absolute_path_or_None)``.
    """
    for c in candidates:
        if c.is_file():
            return True, str(c.resolve())
    keep = missing_image == "keep"
    result.add(Problem(str(file), line, fld, f"image file {shown!r} not found", skipped=not keep))
    return keep, None


def add_post(
    result: ConversionResult,
    post: Post,
    seen: dict[str, tuple[str, int | None, Post]],
    *,
    file: Path,
    line: int | None,
) -> None:
    """Append ``post`` unless its id was converted before: an identical row is merged silently (counted
    in ``duplicates``); a conflicting one is reported and skipped (first occurrence wins)."""
    prev = seen.get(post.id)
    if prev is None:
        seen[post.id] = (str(file), line, post)
        result.posts.append(post)
        return
    pfile, pline, ppost = prev
    if (ppost.text, ppost.image, ppost.labels) == (post.text, post.image, post.labels):
        result.duplicates += 1
        return
    result.add(
        Problem(
            str(file),
            line,
            "id",
            f"duplicate id {post.id!r} with different content (first converted from "
            f"{pfile}:{pline}); the first one is kept",
        )
    )


def write_manifest(
    posts: Iterable[Post],
    path: str | Path,
    *,
    inputs: Iterable[str | Path | None] = (),
    report: WriteReport | None = None,
) -> int:
    """Write posts as JSONL (any extension but ``.parquet``) or Parquet, atomically. Returns the count.

    Both are standard JSON where JSON is written (NaN/infinity become null, counted in ``report``), both go
    through a unique temporary file renamed into place, and an output equal to one of ``inputs`` is
    refused. Parquet stores ``replies``, ``labels`` and ``meta`` as JSON strings (their shapes vary from post
    to post), which :func:`ximgctx.data.io.load_posts` decodes. Caveat of that loader: it decodes *every*
    string column that parses as a JSON array/object, so a post whose whole text is e.g. ``"[1, 2]"``
    does not read back from Parquet; JSONL has no such limit.
    """
    from ximgctx._artifacts import atomic_output, output_errors
    from ximgctx.data.io import write_posts
    from ximgctx.data.post_schema import JSON_FIELDS, posts_arrow_schema
    from ximgctx.data.record import standard_record

    path = Path(path)
    if path.suffix != ".parquet":
        return write_posts(posts, path, inputs=inputs, report=report)
    import pyarrow as pa
    import pyarrow.parquet as pq

    report = report if report is not None else WriteReport()
    schema = posts_arrow_schema(image_bytes=False)
    n = 0
    with atomic_output(path, inputs=inputs) as tmp:
        with output_errors(path):
            writer = pq.ParquetWriter(tmp, schema)
        try:
            for batch in _batched(posts, 4096):
                cols: dict[str, list[Any]] = {k: [] for k in schema.names}
                for post in batch:
                    d, changed = standard_record(post)
                    if changed:
                        report.problems.setdefault(post.id, []).extend(changed)
                    cols["id"].append(d["id"])
                    cols["image"].append(d.get("image"))
                    cols["text"].append(d["text"])
                    for k in JSON_FIELDS:
                        cols[k].append(json.dumps(d[k], ensure_ascii=False, allow_nan=False))
                with output_errors(path):
                    writer.write_table(pa.table(cols, schema=schema))
                n += len(batch)
        finally:
            with output_errors(path):
                writer.close()
    report.written += n
    return n


def _batched(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
