"""Posts in shards with their image bytes inside: the shard index, the reader and the field mapping.

At scale posts live in a few thousand large files instead of millions of small ones. Two formats are read:

* **WebDataset** tars (``00000.tar``): the members of one record share a key (``000000012.jpg``,
  ``000000012.json``, ``000000012.txt``); a JSON member's keys become fields, other members are fields named
  by their extension. This is what img2dataset's ``webdataset`` output and ``ximgctx shard --format
  webdataset`` write.
* **Parquet** (``shard-00000.parquet``): one row per record; the image a binary column or a Hugging Face
  ``Image()`` struct ``{bytes, path}`` (only its bytes are read, never its path). img2dataset's ``parquet``
  output and ``ximgctx shard`` (the default) write these.

A folder written by ``ximgctx shard`` holds a ``shards.json`` index (each shard's name, record count, SHA-256
and format, and the totals) and the artifact ``manifest.json``; without an index, shards are discovered
(``*.tar``, else ``*.parquet``: img2dataset's webdataset output puts a metadata-only ``.parquet`` beside each
tar) and counted from their headers.

Fields become a :class:`~ximgctx.data.record.Post` through a :class:`ShardMapping` whose default reads both
ximgctx's own shards and img2dataset's: ``id`` <- ``id`` | ``key`` | the tar key, ``text`` <- ``text`` |
``txt`` | ``caption``, ``image`` <- ``image`` | ``jpg`` | ``png`` | ..., ``replies``/``labels``/``meta`` by
name (JSON strings are parsed). Other scalar fields (img2dataset's ``url``, ``width``, ``status``) are kept in
``meta["source"]``. Images stay bytes: ``Post.image`` is the encoded image, decoded later by
:func:`ximgctx.data.images.load_image` under the process's limits.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ximgctx.data.post_schema import JSON_FIELDS
from ximgctx.data.record import LoadReport, Post, PostValidationError, check_new_id, post_from_dict
from ximgctx.data.shard_formats import (
    IMAGE_FIELDS,
    MAX_IMAGE_BYTES,
    ShardProblem,
    count_records,
    iter_parquet,
    iter_tar,
)
from ximgctx.errors import ArtifactError, ConfigError, InputError

logger = logging.getLogger(__name__)
_loader_log = logging.getLogger("ximgctx.data")

__all__ = [
    "INDEX",
    "SHARD_FORMATS",
    "ShardInfo",
    "ShardMapping",
    "ShardProblem",
    "is_shard_source",
    "iter_shard_posts",
    "list_shards",
    "read_shard",
    "read_shards",
]

INDEX = "shards.json"
INDEX_FORMAT = "ximgctx-shards"
INDEX_VERSION = 1
#: format name -> file suffix
SHARD_FORMATS: dict[str, str] = {"parquet": ".parquet", "webdataset": ".tar"}
_MAX_INDEX_BYTES = 64 << 20  # an index lists shards; 64 MiB holds ~500k entries
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ShardInfo:
    """One shard file of a shard folder."""

    name: str  # file name relative to the shard root (e.g. "shard-00003.parquet", "00000.tar")
    path: Path  # resolved path, confined to the root
    count: int  # records in the shard (from the index; counted when there is no index)
    sha256: str | None  # from the index; verified when read unless told not to
    format: str  # "parquet" | "webdataset"


def _names(value: Any, attr: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if (attr == "id" and not names) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"ShardMapping.{attr} must name fields (one or more for id), got {value!r}")
    return names


@dataclass(frozen=True)
class ShardMapping:
    """Which shard fields (Parquet columns, tar member extensions, keys of a tar's JSON member) make a post.

    Each attribute lists candidate field names, first present (and not null) wins; an empty tuple reads
    nothing for that attribute (``labels=()``: inference, which does not read labels, keeps a post whose only
    fault is a label).
    """

    id: tuple[str, ...] = ("id", "key", "__key__")  # the post id; img2dataset's key; the tar member key
    image: tuple[str, ...] = IMAGE_FIELDS  # encoded image bytes, or a HF Image() struct {bytes, path}
    text: tuple[str, ...] = ("text", "txt", "caption")  # the post's text; img2dataset's caption
    replies: tuple[str, ...] = ("replies",)  # a list (or its JSON string) of replies
    labels: tuple[str, ...] = ("labels",)  # {task: label} (or its JSON string)
    meta: tuple[str, ...] = ("meta",)  # {visibility, author, ...} (or its JSON string)
    source_meta: bool = True  # keep the other scalar fields (url, width, status, ...) in meta["source"]

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "source_meta":
                object.__setattr__(self, f.name, _names(getattr(self, f.name), f.name))

    @classmethod
    def parse(cls, spec: str) -> ShardMapping:
        """``"id=key,text=caption|txt"``: the named attributes replaced, the others the defaults."""
        known = {f.name for f in fields(cls) if f.name != "source_meta"}
        given: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            attr, eq, cols = part.partition("=")
            attr = attr.strip()
            if not eq or attr not in known:
                raise ConfigError(
                    f"mapping {part!r}: expected ATTR=FIELD[|FIELD...] with ATTR one of {sorted(known)}"
                )
            given[attr] = tuple(c.strip() for c in cols.split("|") if c.strip())
        return cls(**given)

    def names(self) -> set[str]:
        """Every field name the mapping (or the default one) reads: these never go to ``meta["source"]``."""
        attrs = [f.name for f in fields(self) if f.name != "source_meta"]
        return {n for m in (self, _DEFAULT) for a in attrs for n in getattr(m, a)}


_DEFAULT = ShardMapping()


# ---------------------------------------------------------------------------------------------- index
def _confined(root: Path, name: Any, where: str) -> Path:
    """The regular file ``name`` inside ``root``: relative, no ``..``, no symlink, real path inside."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise ArtifactError(f"{where}: shard name {name!r} is not a relative POSIX path")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ArtifactError(f"{where}: shard name {name!r} leaves the shard folder")
    path = root / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: listed in {where} but missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"{path}: not a regular file (a symlink or a folder); shards are regular files")
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root):
        raise ArtifactError(f"{path}: leads outside the shard folder {root}")
    return real


def _read_index(root: Path) -> list[ShardInfo]:
    ipath = root / INDEX
    st = os.lstat(ipath)
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_INDEX_BYTES:
        raise ArtifactError(f"{ipath}: not a regular file of at most {_MAX_INDEX_BYTES} bytes")
    data = ipath.read_bytes()
    _check_index_in_manifest(root, data)
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{ipath}: not valid JSON ({e})") from None
    if (
        not isinstance(raw, dict)
        or raw.get("format") != INDEX_FORMAT
        or not isinstance(raw.get("shards"), list)
    ):
        raise ArtifactError(f"{ipath}: not an ximgctx shard index (format {INDEX_FORMAT!r} with 'shards')")
    if not isinstance(raw.get("version"), int) or raw["version"] > INDEX_VERSION:
        raise ArtifactError(f"{ipath}: index version {raw.get('version')!r} is newer than this ximgctx reads")
    out = []
    for i, entry in enumerate(raw["shards"]):
        where = f"{ipath} shards[{i}]"
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where}: an entry is an object")
        count, sha, fmt = entry.get("count"), entry.get("sha256"), entry.get("format")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ArtifactError(f"{where}: count must be a non-negative integer, got {count!r}")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise ArtifactError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha!r}")
        if fmt not in SHARD_FORMATS:
            raise ArtifactError(f"{where}: format must be one of {sorted(SHARD_FORMATS)}, got {fmt!r}")
        path = _confined(root, entry.get("name"), str(ipath))
        out.append(ShardInfo(name=entry["name"], path=path, count=count, sha256=sha, format=fmt))
    return sorted(out, key=lambda s: s.name)


def _check_index_in_manifest(root: Path, data: bytes) -> None:
    """When the folder is an artifact, its manifest pins the index (cheap: the shards are hashed when
    read)."""
    from ximgctx._artifacts import MANIFEST

    mpath = root / MANIFEST
    if not mpath.is_file():
        return
    try:
        entry = json.loads(mpath.read_bytes()).get("files", {}).get(INDEX, {})
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ArtifactError(f"{mpath}: not a readable artifact manifest ({e})") from None
    if entry.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ArtifactError(f"{root / INDEX}: does not match its SHA-256 in {mpath}; the index was altered")


def _discover(root: Path) -> list[ShardInfo]:
    for fmt in ("webdataset", "parquet"):  # img2dataset's tars come with metadata-only .parquet files
        names = sorted(p.name for p in root.iterdir() if p.name.endswith(SHARD_FORMATS[fmt]))
        if names:
            out = []
            for n in names:
                path = _confined(root, n, str(root))
                out.append(ShardInfo(name=n, path=path, count=_count(path, fmt, n), sha256=None, format=fmt))
            return out
    return []


def _count(path: Path, fmt: str, name: str) -> int:
    try:
        return count_records(path, fmt)
    except Exception as e:  # noqa: BLE001 - any failure to count is the shard's; reading will report it
        logger.warning("%s: cannot count its records (%s); it is read and reported as it comes", name, e)
        return 0


def list_shards(root: str | Path) -> list[ShardInfo]:
    """The shards of a folder in name order: from its index (``shards.json`` written by ``ximgctx shard``) or,
    without one, discovered (*.parquet / *.tar, img2dataset layouts). Clear InputError naming the folder when
    empty.

    ``root`` may also be the ``shards.json`` path itself.

    Raises:
        InputError: the folder does not exist or holds no shards.
        ArtifactError: the index is malformed, altered (against the manifest) or names a file outside the
            folder, a symlink or a missing file.
    """
    root = Path(root)
    if root.name == INDEX and root.is_file():
        root = root.parent
    if not root.is_dir():
        raise InputError(f"{root}: no such shard folder")
    root = Path(os.path.realpath(root))
    shards = _read_index(root) if os.path.lexists(root / INDEX) else _discover(root)
    if not shards:
        raise InputError(
            f"{root}: holds no shards (no {INDEX} index, no *.tar, no *.parquet); write some with "
            f"`ximgctx shard --data POSTS.jsonl --out {root}`"
        )
    return shards


def is_shard_source(path: str | Path) -> bool:
    """Whether ``path`` is a shard folder or a ``shards.json``: what load_posts streams as shards.

    A shard folder has an index, or tars, or Parquet files whose first one stores images as bytes (a binary
    column or a Hugging Face ``Image()`` struct under an image field name); a folder of Parquet manifests with
    image paths is not one.
    """
    p = Path(path)
    if p.name == INDEX and p.is_file():
        return True
    if not p.is_dir():
        return False
    if os.path.lexists(p / INDEX) or any(p.glob("*.tar")):
        return True
    first = min(p.glob("*.parquet"), default=None)
    return first is not None and _has_image_bytes(first)


def _has_image_bytes(path: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ximgctx.data.data_files import open_data_file

    try:
        with open_data_file(path) as fh:
            schema = pq.read_schema(fh)
    except (OSError, ValueError, pa.ArrowException):
        return False
    for f in schema:
        if f.name not in IMAGE_FIELDS:
            continue
        t = f.type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        if pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields)):
            return True
    return False


# --------------------------------------------------------------------------------------------- reader
def _sha256(path: Path) -> str:
    from ximgctx.data.data_files import open_data_file

    h = hashlib.sha256()
    with open_data_file(path) as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _json_field(attr: str, value: Any) -> Any:
    if attr in JSON_FIELDS and isinstance(value, str):
        return json.loads(value)
    return value


@functools.lru_cache(maxsize=64)
def _used_names(mapping: ShardMapping) -> frozenset[str]:
    return frozenset(mapping.names())


def _to_post(record: dict[str, Any], mapping: ShardMapping, name: str, pos: int) -> Post | ShardProblem:
    """One record's fields as a post, or the problem that keeps it from being one."""
    out: dict[str, Any] = {}
    for attr in ("id", "text", "replies", "labels", "meta"):
        col = next((c for c in getattr(mapping, attr) if record.get(c) is not None), None)
        if col is None:
            continue
        try:
            out[attr] = _json_field(attr, record[col])
        except (ValueError, RecursionError) as e:
            return ShardProblem(attr, "invalid_json", f"field {col!r} is not valid JSON ({e})", name, pos)
    image = next((record[c] for c in mapping.image if record.get(c) is not None), None)
    if isinstance(image, dict):  # a Hugging Face Image() struct: its bytes only, never its path
        image = image.get("bytes")
    if image is not None and not isinstance(image, (bytes, bytearray)):
        return ShardProblem("image", "invalid", f"the image is {type(image).__name__}, not bytes", name, pos)
    if image is not None and len(image) > MAX_IMAGE_BYTES:
        return ShardProblem("image", "too_many_bytes", f"{len(image)} bytes > {MAX_IMAGE_BYTES}", name, pos)
    try:
        post = post_from_dict(out)
    except PostValidationError as e:
        return ShardProblem(e.field or "record", "invalid", e.reason, shard=name, position=pos)
    post.image = bytes(image) if image is not None else None  # b"" stays: a corrupt image, not no image
    if mapping.source_meta:
        used = _used_names(mapping)
        extra = {
            k: v
            for k, v in record.items()
            if k not in used and not k.startswith("__") and isinstance(v, (str, int, float, bool))
        }
        if extra:
            post.meta.setdefault("source", extra)
    return post


def read_shard(
    shard: ShardInfo, *, start: int = 0, mapping: ShardMapping | None = None, verify: bool = True
) -> Generator[tuple[int, Post | ShardProblem], None, None]:
    """Records of one shard in stored order as (position, post); a record that cannot become a post yields a
    ximgctx.data.problems.Problem naming shard + position instead (never raises for one bad record); a
    truncated / unreadable shard yields one Problem naming the shard after what could be read. ``start`` skips
    the first positions without decoding their images (Parquet: row-group seek; tar: skip members).

    With ``verify`` (the default) a shard whose index gives a SHA-256 is hashed first; a mismatch yields one
    ``"checksum_mismatch"`` problem and no records (the file is not the one the index describes).
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative position, got {start!r}")
    if shard.format not in SHARD_FORMATS:
        raise ValueError(f"shard format must be one of {sorted(SHARD_FORMATS)}, got {shard.format!r}")
    mapping = mapping if mapping is not None else ShardMapping()
    if verify and shard.sha256 is not None:
        try:
            digest = _sha256(shard.path)
        except (OSError, ValueError) as e:  # ValueError: DataFileError, a symlink or FIFO swapped in
            why = getattr(e, "detail", None) or getattr(e, "strerror", None) or str(e)
            yield start, ShardProblem("shard", "unreadable", f"cannot read it ({why})", shard.name)
            return
        if digest != shard.sha256:
            detail = (
                f"SHA-256 {digest[:16]}... is not the index's {shard.sha256[:16]}...; altered or corrupted"
            )
            yield start, ShardProblem("shard", "checksum_mismatch", detail, shard=shard.name)
            return
    raw = iter_parquet if shard.format == "parquet" else iter_tar
    for pos, rec in raw(shard.path, shard.name, start):
        yield pos, rec if isinstance(rec, ShardProblem) else _to_post(rec, mapping, shard.name, pos)


def read_shards(
    shards: str | Path | Iterable[ShardInfo], *, mapping: ShardMapping | None = None, verify: bool = True
) -> Iterator[tuple[ShardInfo, int, Post | ShardProblem]]:
    """Every record of a shard folder (or of the given shards) in order, as ``(shard, position, item)``."""
    infos = list_shards(shards) if isinstance(shards, (str, Path)) else list(shards)
    for info in infos:
        for pos, item in read_shard(info, mapping=mapping, verify=verify):
            yield info, pos, item


def iter_shard_posts(
    path: Path, *, streaming: bool, on_error: str, report: LoadReport, labels: str
) -> Iterator[Post]:
    """What :func:`ximgctx.data.io.load_posts` yields for a shard folder: a record's problem becomes a
    PostValidationError naming the shard file and the record (1-based, as a line), raised or skipped (and
    logged by the loader's logger, whose filters, e.g. governance's, apply)."""
    mapping = ShardMapping(labels=()) if labels == "ignore" else None
    seen: dict[str, str] = {}  # id -> where it was first read
    for shard, pos, item in read_shards(path, mapping=mapping):
        report.read += 1
        source, line = str(shard.path), pos + 1
        try:
            if not isinstance(item, Post):
                raise PostValidationError(
                    f"{item.kind}: {item.detail}", source=source, line=line, field=item.field
                )
            if not streaming:
                check_new_id(item.id, seen, f"{source}:{line}", source=source, line=line)
        except PostValidationError as e:
            report.skip(e, on_error, _loader_log)
            continue
        yield item
