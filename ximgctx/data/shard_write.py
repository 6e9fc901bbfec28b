"""Writing posts into shards with their image bytes inside (what ``ximgctx shard`` runs).

An image whose bytes the safe decoder identifies as an allowlisted format (``ALLOWED_FORMATS``) is stored
byte for byte; one it decodes under another name (a JPEG with multi-picture data, identified as MPO) is
re-encoded to PNG; one it cannot identify is stored as it is (``.bin``) and counted as a problem, so that
training reports it per post exactly as it would from the file. A missing or oversized file is counted and
the post written without an image.

The folder is an artifact of kind ``"shards"`` (written through :func:`ximgctx._artifacts.write_artifact`:
atomic, locked, with a manifest of every file) holding the shards and a ``shards.json`` index.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ximgctx.data.images import ALLOWED_FORMATS, ImageDecodeError, ImageLimits, from_pil, load_image
from ximgctx.data.post_schema import JSON_FIELDS, posts_arrow_schema
from ximgctx.data.record import Post, _dumps, standard_record
from ximgctx.data.shards import INDEX, INDEX_FORMAT, INDEX_VERSION, SHARD_FORMATS, _sha256
from ximgctx.errors import ConfigError, InputError

__all__ = ["ShardWriteReport", "write_shards"]

_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
_ROW_GROUP_ROWS = 256  # Parquet rows per row group: the granularity of a resume seek


@dataclass
class ShardWriteReport:
    """What :func:`write_shards` wrote."""

    posts: int = 0  # posts written
    shards: list[dict[str, Any]] = field(default_factory=list)  # the index entries
    images_kept: int = 0  # images stored byte for byte
    images_reencoded: int = 0  # images re-encoded to PNG (decodable, but not under an allowlisted name)
    problems: Counter[str] = field(default_factory=Counter)  # "image: missing" -> posts


def _read_bounded(path: str, limits: ImageLimits) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ImageDecodeError("unreadable", "not a regular file", path)
        if st.st_size > limits.max_bytes:
            raise ImageDecodeError("too_many_bytes", f"{st.st_size} bytes > {limits.max_bytes}", path)
        return f.read(limits.max_bytes + 1)


def _sniff(data: bytes, limits: ImageLimits) -> str | None:
    """Pillow's format name for ``data`` (allowlisted parsers only, header only), or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=list(limits.formats)) as im:
            return im.format
    except Exception:  # noqa: BLE001 - any failure to identify means "not an allowed image"
        return None


def embed_image(post: Post, limits: ImageLimits, report: ShardWriteReport) -> tuple[bytes | None, str | None]:
    """``(bytes, extension)`` to store for a post's image (see the module docstring), or ``(None, None)``."""
    if post.image is None:
        return None, None
    if isinstance(post.image, (bytes, bytearray)):
        data = bytes(post.image)
    elif not isinstance(post.image, str):  # a PIL image held in memory: checked like a file, stored as PNG
        try:
            image = from_pil(post.image, limits)
        except ImageDecodeError as e:
            report.problems[f"image: {e.reason}"] += 1
            return None, None
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        report.images_reencoded += 1
        return buf.getvalue(), "png"
    else:
        try:
            data = _read_bounded(post.image, limits)
        except FileNotFoundError:
            report.problems["image: missing"] += 1
            return None, None
        except (OSError, ImageDecodeError) as e:
            report.problems[f"image: {getattr(e, 'reason', 'unreadable')}"] += 1
            return None, None
    fmt = _sniff(data, limits)
    if fmt in ALLOWED_FORMATS:
        report.images_kept += 1
        return data, _EXT[fmt]
    if fmt is not None:  # decodable by an allowlisted parser under another name (MPO): re-encode
        buf = io.BytesIO()
        load_image(data, limits).save(buf, format="PNG")
        report.images_reencoded += 1
        return buf.getvalue(), "png"
    report.problems["image: format_not_allowed"] += 1
    return data, "bin"


def _record(post: Post) -> dict[str, Any]:
    record, _ = standard_record(
        Post(id=post.id, text=post.text, replies=post.replies, labels=post.labels, meta=post.meta)
    )
    return record


class _ParquetShard:
    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = posts_arrow_schema(image_bytes=True)
        self.writer = pq.ParquetWriter(path, self.schema)
        self.rows: list[dict[str, Any]] = []

    def add(self, key: str, post: Post, data: bytes | None, ext: str | None) -> None:
        rec = _record(post)
        try:
            rec["text"].encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"post {post.id!r}: its text holds a lone surrogate (a \\ud800-style escape), which a "
                "Parquet "
                f"string cannot; write --format webdataset (JSON keeps it as an escape) or fix the text"
            ) from None
        self.rows.append(
            {
                "id": rec["id"],
                "image": None if data is None else {"bytes": data, "path": f"{key}.{ext}"},
                "text": rec["text"],
                **{
                    c: _dumps(rec[c])  # a lone surrogate (from a "\ud800" escape) stays an escape
                    for c in JSON_FIELDS
                },
            }
        )
        if len(self.rows) >= _ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


class _TarShard:
    def __init__(self, path: Path) -> None:
        self.tar = tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed in close()

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o444, 0  # reproducible: same posts, same bytes
        self.tar.addfile(info, io.BytesIO(data))

    def add(self, key: str, post: Post, data: bytes | None, ext: str | None) -> None:
        if data is not None:
            self._member(f"{key}.{ext}", data)
        self._member(f"{key}.json", _dumps(_record(post)).encode("utf-8"))  # valid UTF-8, as readers expect

    def close(self) -> None:
        self.tar.close()


def _chunks(posts: Iterable[Post], n: int) -> Iterator[Iterator[Post]]:
    it = iter(posts)
    while True:
        try:
            first = next(it)
        except StopIteration:
            return
        yield _take(first, it, n)


def _take(first: Post, it: Iterator[Post], n: int) -> Iterator[Post]:
    yield first
    for _ in range(n - 1):
        try:
            yield next(it)
        except StopIteration:
            return


def write_shards(
    posts: Iterable[Post],
    out: str | Path,
    *,
    format: str = "parquet",  # noqa: A002 - the CLI's --format
    posts_per_shard: int = 10_000,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    limits: ImageLimits | None = None,
    meta: dict[str, Any] | None = None,
) -> ShardWriteReport:
    """Write ``posts`` into a shard folder at ``out`` (an artifact of kind ``"shards"``) with a
    ``shards.json``.

    Args:
        posts: the posts, read once, in order (a stream is fine: one shard's worth is held at most).
        out: the folder to write.
        format: ``"parquet"`` (``shard-00000.parquet``) or ``"webdataset"`` (``shard-00000.tar``).
        posts_per_shard: records per shard.
        overwrite: replace a folder that is not a shard folder.
        inputs: files the posts are read from (never replaced).
        limits: byte limit and allowlist applied when reading image files (default ``ImageLimits()``).
        meta: extra entries for the index (e.g. ``{"governed": True}``).
    """
    from ximgctx._artifacts import write_artifact

    if format not in SHARD_FORMATS:
        raise ConfigError(f"format must be one of {sorted(SHARD_FORMATS)}, got {format!r}")
    if isinstance(posts_per_shard, bool) or not isinstance(posts_per_shard, int) or posts_per_shard < 1:
        raise ConfigError(f"posts_per_shard must be a positive integer, got {posts_per_shard!r}")
    limits = limits if limits is not None else ImageLimits()
    report = ShardWriteReport()
    with write_artifact(out, "shards", overwrite=overwrite, inputs=inputs) as tmp:
        for s, chunk in enumerate(_chunks(posts, posts_per_shard)):
            name = f"shard-{s:05d}{SHARD_FORMATS[format]}"
            shard = (_ParquetShard if format == "parquet" else _TarShard)(tmp / name)
            count = 0
            try:
                for post in chunk:
                    data, ext = embed_image(post, limits, report)
                    shard.add(f"{s:05d}{count:06d}", post, data, ext)
                    count += 1
            finally:
                shard.close()
            size = (tmp / name).stat().st_size
            entry = {
                "name": name,
                "count": count,
                "sha256": _sha256(tmp / name),
                "bytes": size,
                "format": format,
            }
            report.shards.append(entry)
            report.posts += count
        if not report.posts:
            raise InputError(f"{out}: no posts to shard; the input holds none (after governance checks)")
        index = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "shard_format": format,
            "total": report.posts,
            "total_bytes": sum(e["bytes"] for e in report.shards),
            "shards": report.shards,
            "images_kept": report.images_kept,
            "images_reencoded": report.images_reencoded,
            "problems": dict(sorted(report.problems.items())),
            **(meta or {}),
        }
        (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return report
