"""Post files read through Hugging Face ``datasets``: JSONL (read as text and parsed here, so every error
names its file, line and field), Parquet, and ``save_to_disk`` folders."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import logging
import lzma
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, cast

from ximgctx.data.data_files import (
    DataFileError,
    check_regular_file,
    check_saved_dataset,
    iter_parquet_rows,
    open_data_file,
)
from ximgctx.data.post_schema import JSON_FIELDS
from ximgctx.data.record import LoadReport, Post, PostValidationError, check_new_id, post_from_dict

logger = logging.getLogger("ximgctx.data")  # one logger for every skipped record

_JSONL_CHUNK_BYTES = 1 << 20


def _parquet_value(key: str, value: Any) -> Any:
    if key in JSON_FIELDS and isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _resolve_files(path: Path) -> tuple[Literal["jsonl", "parquet", "arrow"], list[str]]:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return "arrow", [str(path)]
        jsonl = sorted(str(p) for p in path.glob("*.jsonl"))
        parquet = sorted(str(p) for p in path.glob("*.parquet"))
        if jsonl and parquet:
            raise ValueError(f"{path} holds both .jsonl and .parquet files; point at one kind")
        if jsonl:
            return "jsonl", jsonl
        if parquet:
            return "parquet", parquet
        raise FileNotFoundError(
            f"{path} holds no .jsonl or .parquet shards and is not a saved datasets folder"
        )
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file or folder (a hub dataset id is read as 'hub:ORG/NAME')"
        )
    if path.is_symlink():  # the file named on purpose is read where it lies; files found in folders never are
        path = Path(os.path.realpath(path))
    suffix = "".join(path.suffixes[-2:]) if path.suffix in {".gz", ".zst", ".bz2", ".xz"} else path.suffix
    if suffix.startswith(".parquet"):
        return "parquet", [str(path)]
    if suffix.startswith((".jsonl", ".json", ".ndjson")):
        return "jsonl", [str(path)]
    raise ValueError(f"{path}: unknown manifest format {suffix!r}; use .jsonl, .parquet or a datasets folder")


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide the "Generating train split" bars of ``datasets`` while reading, restoring the caller's
    setting."""
    from datasets import utils as ds_tqdm

    was_disabled = ds_tqdm.are_progress_bars_disabled()
    ds_tqdm.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            ds_tqdm.enable_progress_bars()


@contextlib.contextmanager
def _open_jsonl(path: str) -> Iterator[IO[bytes]]:
    """A JSONL file as bytes (opened as a regular file, never through a symlink or a FIFO), through the
    standard library's decompressor for its suffix."""
    with open_data_file(path) as raw:
        if path.endswith(".gz"):
            with gzip.open(raw, "rb") as gz:
                yield cast(IO[bytes], gz)
        elif path.endswith(".bz2"):
            with bz2.open(raw, "rb") as bz:
                yield cast(IO[bytes], bz)
        elif path.endswith(".xz"):
            with lzma.open(raw, "rb") as xz:
                yield cast(IO[bytes], xz)
        else:
            yield raw


def _jsonl_record(f: str, line: int, raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        return PostValidationError(f"malformed JSON ({e.msg} at column {e.colno})", source=f, line=line)


def _jsonl_records(f: str, streaming: bool) -> Iterator[tuple[str, int, Any]]:
    """``(source, line, record_or_error)`` for every non-blank line. Lines are split at ``\n`` only (a JSON
    string may hold U+2028 or a lone CR), read one at a time, so memory stays flat however long the file."""
    if f.endswith(
        ".zst"
    ):  # read through datasets' "text" builder, which keeps every line (row i is line i+1)
        import datasets

        check_regular_file(f)
        with quiet_datasets():
            # 1 MiB read chunks (datasets' default is 10 MiB): flat memory over a 200k-post stream
            ds = datasets.load_dataset(
                "text", data_files=f, split="train", streaming=streaming, chunksize=_JSONL_CHUNK_BYTES
            )
        for i, row in enumerate(ds):
            if row["text"].strip():
                yield f, i + 1, _jsonl_record(f, i + 1, row["text"])
        return
    with _open_jsonl(f) as fh:
        for i, raw in enumerate(fh):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield (
                    f,
                    i + 1,
                    PostValidationError(
                        f"not UTF-8 text ({e.reason} at byte {e.start})", source=f, line=i + 1
                    ),
                )
                continue
            if text.strip():
                yield f, i + 1, _jsonl_record(f, i + 1, text)


def _file_problem(e: DataFileError, line: int) -> tuple[str, int, PostValidationError]:
    """A whole file that cannot be read (or read on): one problem naming it, after the rows it gave."""
    return e.path, line, PostValidationError(f"{e.kind}: {e.detail}", source=e.path)


def _parquet_records(f: str) -> Iterator[tuple[str, int, Any]]:
    """Rows of a Parquet manifest read by pyarrow under the decoded-size budgets of
    :mod:`ximgctx.data.data_files` (a dictionary bomb is refused before it expands)."""
    line = 0
    try:
        for pos, row in iter_parquet_rows(f, image_columns=frozenset({"image"})):
            line = pos + 1
            yield f, line, {k: _parquet_value(k, v) for k, v in row.items() if v is not None or k == "id"}
    except DataFileError as e:
        yield _file_problem(e, line + 1)


def _arrow_records(folder: str) -> Iterator[tuple[str, int, Any]]:
    """Rows of a ``save_to_disk`` folder, each Arrow file validated and measured before it is used."""
    try:
        check_saved_dataset(Path(folder))
    except DataFileError as e:
        yield _file_problem(e, 1)
        return
    import datasets

    ds = datasets.load_from_disk(folder)
    for i, row in enumerate(ds.with_format("arrow").iter(batch_size=32)):
        for j, rec in enumerate(row.to_pylist()):
            yield folder, i * 32 + j + 1, {k: _parquet_value(k, v) for k, v in rec.items()}


def _iter_records(path: Path, streaming: bool) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(source, line, record_or_error)``; a JSON error is yielded as a PostValidationError, and so
    is a file that cannot be read (a symlink, a FIFO, a corrupt or over-budget file) after the rows it gave.
    JSONL is read line by line and Parquet through pyarrow here (no ``datasets`` import for a manifest)."""
    kind, files = _resolve_files(path)
    for f in files:
        if kind == "jsonl":
            try:
                yield from _jsonl_records(f, streaming)
            except DataFileError as e:
                yield _file_problem(e, 1)
        elif kind == "parquet":
            yield from _parquet_records(f)
        else:
            yield from _arrow_records(f)


def iter_file_posts(
    path: Path,
    image_root: Path | None,
    streaming: bool,
    on_error: str,
    report: LoadReport,
    labels: str = "check",
) -> Iterator[Post]:
    seen: dict[str, str] = {}  # id -> where it was first read
    # relative image paths become absolute, so posts stay valid whatever the working folder and wherever
    # write_posts puts them next
    fixed_root = None if image_root is None else Path(os.path.abspath(image_root))
    roots: dict[str, Path] = {}
    for source, line, rec in _iter_records(path, streaming):
        report.read += 1
        try:
            if isinstance(rec, PostValidationError):
                raise rec
            if labels == "ignore" and isinstance(rec, Mapping):  # inference: labels are not read
                rec = {k: v for k, v in rec.items() if k != "labels"}
            root = fixed_root
            if root is None:
                root = roots.get(source)
                if root is None:
                    root = roots[source] = Path(os.path.abspath(Path(source).parent))
            post = post_from_dict(rec, source=source, line=line, image_root=root)
            if not streaming:
                check_new_id(post.id, seen, f"{source}:{line}", source=source, line=line)
        except PostValidationError as e:
            report.skip(e, on_error, logger)
            continue
        yield post
