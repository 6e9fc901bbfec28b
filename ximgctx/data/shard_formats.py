"""Raw records from one shard file: WebDataset tars and Parquet files, read under bounds.

Each reader yields ``(position, fields)`` where ``fields`` maps a field name to its value (bytes for images,
text, parsed JSON), or ``(position, ShardProblem)`` for a record that cannot be read. Nothing is extracted to
disk and nothing is decoded: images stay bytes (the processor decodes them through the safe decoder).

Tars are read with the standard library's ``tarfile`` one header at a time, never extracted: a member whose
name is absolute or holds ``..``, that is not a regular file (symlinks, hard links, devices), or that declares
more bytes than the field may have is refused before any of its data is read. A tar that ends early (a cut
member or no end-of-archive blocks) ends with one ``"truncated"`` problem after the records that could be
read.

Parquet files are read with pyarrow one row group at a time, a few rows per batch; a row group whose declared
size exceeds :data:`MAX_ROW_GROUP_BYTES` is refused without being read, and every batch is measured at its
decoded size (dictionary-encoded columns kept as dictionaries, so a dictionary bomb is refused before it
expands) against :class:`~ximgctx.data.data_files.DataLimits`. ``start`` seeks: tar members before it
are skipped by their headers, Parquet row groups before it are not read at all.
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ximgctx.data.images import ImageLimits
from ximgctx.data.problems import Problem

__all__ = [
    "IMAGE_FIELDS",
    "MAX_FIELD_BYTES",
    "MAX_ROW_GROUP_BYTES",
    "ShardProblem",
    "count_records",
    "iter_parquet",
    "iter_tar",
]

#: tar member extensions (and Parquet columns) that hold image bytes, not text
IMAGE_FIELDS: tuple[str, ...] = ("image", "jpg", "jpeg", "png", "webp", "gif", "bmp", "img", "bin")
#: largest non-image field (JSON, text) read from a tar member; larger ones are refused unread
MAX_FIELD_BYTES = 4 * 1024 * 1024
#: largest image member read from a tar: the decoder's own byte limit
MAX_IMAGE_BYTES = ImageLimits().max_bytes
#: largest uncompressed Parquet row group read (pyarrow materialises a row group's column chunks)
MAX_ROW_GROUP_BYTES = 1024 * 1024 * 1024
_TAR_END = 2 * tarfile.BLOCKSIZE  # a complete tar ends with two zero blocks


@dataclass(frozen=True)
class ShardProblem(Problem):
    """A record (or a whole shard) that could not become a post, named by shard and position."""

    shard: str = ""  # the shard's file name relative to its root
    position: int | None = None  # the record's 0-based position in the shard; None for the whole shard

    def __str__(self) -> str:
        where = self.shard if self.position is None else f"{self.shard} record {self.position}"
        return f"{where}: {super().__str__()}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "shard": self.shard, "position": self.position}


# ------------------------------------------------------------------------------------------------ tar
def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the base name; the rest is the field."""
    folder, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    return posixpath.join(folder, stem) if folder else stem, ext.lower() if dot else ""


def _refusal(member: tarfile.TarInfo) -> tuple[str, str] | None:
    """``(kind, detail)`` when a member must not be read, else None."""
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\x00" in name or ".." in parts or ":" in parts[0]:
        return "unsafe_member_name", f"member {name!r} is an absolute path or leaves the archive's folder"
    if not member.isreg():
        what = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "not a file"
        return "not_a_file", f"member {name!r} is {what}; only regular files are read"
    _, field = _split_member(name)
    cap = MAX_IMAGE_BYTES if field in IMAGE_FIELDS else MAX_FIELD_BYTES
    if member.size > cap:
        return "member_too_large", f"member {name!r} declares {member.size} bytes, over the {cap} allowed"
    return None


def _field_value(field: str, data: bytes) -> Any:
    if field in IMAGE_FIELDS:
        return data
    if field == "json":
        return json.loads(data)
    return data.decode("utf-8")


def _group_fields(
    tf: tarfile.TarFile, members: list[tarfile.TarInfo], key: str, name: str, pos: int
) -> dict[str, Any] | ShardProblem:
    """The fields of one key's members (JSON members merged in; members override JSON keys)."""
    fields: dict[str, Any] = {"__key__": posixpath.basename(key)}
    from_members: dict[str, Any] = {}
    for m in members:
        refused = _refusal(m)
        if refused is not None:
            return ShardProblem("record", refused[0], refused[1], shard=name, position=pos)
        _, field = _split_member(m.name)
        f = tf.extractfile(m)
        data = f.read() if f is not None else b""  # a cut member raises tarfile.ReadError here
        try:
            value = _field_value(field, data)
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8; JSON nested past the recursion limit
            return ShardProblem(
                "record", "corrupt_member", f"member {m.name!r} cannot be read as {field} ({e})", name, pos
            )
        if field == "json" and isinstance(value, dict):
            fields.update(value)
        elif field == "json":
            return ShardProblem(
                "record", "corrupt_member", f"member {m.name!r} is not a JSON object", name, pos
            )
        else:
            from_members[field] = value
    fields.update(from_members)
    return fields


def _tar_groups(tf: tarfile.TarFile) -> Iterator[tuple[str, list[tarfile.TarInfo]]]:
    """Members grouped by key, in stored order (WebDataset keeps a record's members together)."""
    key: str | None = None
    group: list[tarfile.TarInfo] = []
    while True:
        try:
            member = tf.next()
        except tarfile.ReadError:  # e.g. the last header declares more bytes than the file holds
            if key is not None:
                yield key, group  # its members are checked (an oversized one refused) before any is read
            raise
        # tarfile keeps every header it has read; one shard can hold millions (members: not in typeshed)
        tf.members.clear()  # type: ignore[attr-defined]
        if member is None:
            break
        if member.isdir():
            continue
        k, _ = _split_member(member.name)
        if key is not None and k != key:
            yield key, group
            group = []
        key = k
        group.append(member)
    if key is not None:
        yield key, group


def _tar_ended_cleanly(path: Path, offset: int) -> bool:
    """Whether the end-of-archive blocks follow the last member (a tar cut at a member boundary lacks
    them)."""
    from ximgctx.data.data_files import open_data_file

    with open_data_file(path) as f:
        f.seek(offset)
        tail = f.read(_TAR_END)
    return len(tail) == _TAR_END and not tail.strip(b"\0")


def iter_tar(path: Path, name: str, start: int = 0) -> Iterator[tuple[int, dict[str, Any] | ShardProblem]]:
    """Records of a WebDataset tar from position ``start``; see the module docstring for the bounds."""
    from ximgctx.data.data_files import DataFileError, open_data_file

    pos = -1
    try:
        with open_data_file(path) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
            for pos, (key, members) in enumerate(_tar_groups(tf)):
                if pos < start:
                    continue
                yield pos, _group_fields(tf, members, key, name, pos)
            offset = tf.offset
        if not _tar_ended_cleanly(path, offset):
            raise tarfile.ReadError("no end-of-archive marker after the last member")
    except DataFileError as e:
        yield max(pos + 1, start), ShardProblem("shard", e.kind, e.detail, shard=name)
    except (tarfile.TarError, EOFError, OSError) as e:
        at = f" after record {pos}" if pos >= 0 else ""
        yield (
            max(pos + 1, start),
            ShardProblem("shard", "truncated", f"the archive is cut or unreadable{at} ({e})", shard=name),
        )


def _count_tar(path: Path) -> int:
    from ximgctx.data.data_files import open_data_file

    with open_data_file(path) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
        return sum(1 for _ in _tar_groups(tf))


# -------------------------------------------------------------------------------------------- parquet
def iter_parquet(
    path: Path, name: str, start: int = 0
) -> Iterator[tuple[int, dict[str, Any] | ShardProblem]]:
    """Rows of a Parquet file from position ``start``, a few at a time, each batch measured at its decoded
    size (dictionaries counted per use) before its rows are made; see :mod:`ximgctx.data.data_files`."""
    from ximgctx.data.data_files import DataFileError, iter_parquet_rows

    pos = start - 1
    try:
        for pos, row in iter_parquet_rows(
            path,
            start=start,
            image_columns=frozenset(IMAGE_FIELDS),
            declared_row_group_bytes=MAX_ROW_GROUP_BYTES,
        ):
            yield pos, row
    except DataFileError as e:
        at = f" after record {pos}" if pos >= start else ""
        if e.kind == "unreadable":
            problem = ShardProblem(
                "shard", "truncated", f"the Parquet file is cut or unreadable{at} ({e.detail})", shard=name
            )
        else:
            problem = ShardProblem("shard", e.kind, e.detail, shard=name)
        yield pos + 1, problem


def count_records(path: Path, fmt: str) -> int:
    """Records in a shard without reading their data (Parquet: the footer; tar: the headers)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        from ximgctx.data.data_files import open_data_file

        with open_data_file(path) as fh:
            return int(pq.ParquetFile(fh).metadata.num_rows)
    return _count_tar(path)


def file_size(path: Path) -> int:
    return os.stat(path).st_size
