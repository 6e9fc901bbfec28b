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
        raise FileNotFoundError(f"no such manifest: {path}")
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


def _open_jsonl(path: str) -> IO[bytes] | None:
    """A JSONL file as bytes, through the standard library's decompressor for its suffix; None for a
    compression only ``datasets`` reads (``.zst``)."""
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.endswith(".bz2"):
        return cast(IO[bytes], bz2.open(path, "rb"))
    if path.endswith(".xz"):
        return cast(IO[bytes], lzma.open(path, "rb"))
    if path.endswith(".zst"):
        return None
    return open(path, "rb")  # noqa: SIM115 (closed by the caller's with-block)


def _jsonl_record(f: str, line: int, raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        return PostValidationError(f"malformed JSON ({e.msg} at column {e.colno})", source=f, line=line)


def _jsonl_records(f: str, streaming: bool) -> Iterator[tuple[str, int, Any]]:
    """``(source, line, record_or_error)`` for every non-blank line. Lines are split at ``\n`` only (a JSON
    string may hold U+2028 or a lone CR), read one at a time, so memory stays flat however long the file."""
    fh = _open_jsonl(f)
    if fh is None:  # .zst: read through datasets' "text" builder, which keeps every line (row i is line i+1)
        import datasets

        with quiet_datasets():
            # 1 MiB read chunks (datasets' default is 10 MiB): flat memory over a 200k-post stream
            ds = datasets.load_dataset(
                "text", data_files=f, split="train", streaming=streaming, chunksize=_JSONL_CHUNK_BYTES
            )
        for i, row in enumerate(ds):
            if row["text"].strip():
                yield f, i + 1, _jsonl_record(f, i + 1, row["text"])
        return
    with fh:
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


def _iter_records(path: Path, streaming: bool) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(source, line, record_or_error)``; a JSON error is yielded as a PostValidationError. JSONL is
    read line by line here (no ``datasets`` import for the most common manifest); Parquet and ``save_to_disk``
    folders through ``datasets``."""
    kind, files = _resolve_files(path)
    if kind == "jsonl":
        for f in files:
            yield from _jsonl_records(f, streaming)
        return
    import datasets

    if kind == "arrow":
        ds = datasets.load_from_disk(files[0])
        for i, row in enumerate(ds):
            yield files[0], i + 1, {k: _parquet_value(k, v) for k, v in row.items()}
        return
    for f in files:
        with quiet_datasets():
            ds = datasets.load_dataset("parquet", data_files=f, split="train", streaming=streaming)
        for i, row in enumerate(ds):
            rec = {k: _parquet_value(k, v) for k, v in row.items() if v is not None or k == "id"}
            yield f, i + 1, rec


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
