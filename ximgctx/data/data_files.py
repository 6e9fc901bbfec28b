"""Opening data files and reading Parquet and Arrow under decoded-size budgets.

Every data file (a JSONL manifest, a Parquet shard, an Arrow file of a ``save_to_disk`` folder) is opened with
``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file: a symlink planted in a dataset folder (pointing at
another dataset) and a FIFO (which would block the load forever) are refused, naming the path.

Parquet and Arrow declare sizes that a file of a kilobyte can make lie: a dictionary-encoded column stores one
16 MB value once and 64 rows that each point at it, so reading the column gives 1 GB. Columns stored with a
dictionary are therefore read *as dictionaries* (``read_dictionary``) and every batch is measured at its
decoded size (dictionary values counted once per row that uses them) before a single Python object is made
from it, against :class:`DataLimits`:

* **per value**: one field of one row (an image's bytes, a text, a JSON string, a list of replies);
* **per row**: all fields of one row;
* **per row group** (Parquet) or per file (Arrow): all rows together, and the bytes a dictionary *repeats*
  (a value's second and later uses), so a dictionary bomb is refused at its first batch, holding only the
  dictionary itself.

Arrow record batches are also checked with ``validate(full=True)`` before use: a string offset past its buffer
is a :class:`DataFileError` naming the file, never a read out of bounds (which, on a memory-mapped file, kills
the process with SIGBUS).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from ximgctx.data.images import ImageLimits
from ximgctx.errors import InputError

__all__ = [
    "DEFAULT_DATA_LIMITS",
    "DataFileError",
    "DataLimits",
    "check_arrow_file",
    "check_regular_file",
    "check_saved_dataset",
    "iter_parquet_rows",
    "open_data_file",
]

_MiB = 1 << 20


class DataFileError(InputError):
    """A data file that cannot be read: not a regular file, corrupt, or over a decoded-size budget. The
    message names the file (and the column and row when there is one)."""

    def __init__(self, path: str | os.PathLike[str], kind: str, detail: str) -> None:
        self.path, self.kind, self.detail = str(path), kind, detail
        super().__init__(f"{path}: {detail}")


@dataclass(frozen=True)
class DataLimits:
    """Decoded-size budgets for one data file (bytes)."""

    max_value_bytes: int = 4 * _MiB  # one non-image field of one row (text, JSON, replies, meta)
    max_image_bytes: int = ImageLimits().max_bytes  # one image field of one row: the decoder's own byte limit
    max_row_bytes: int = 96 * _MiB  # all fields of one row
    max_group_bytes: int = 1024 * _MiB  # all rows of one Parquet row group / one Arrow file's batch
    max_repeated_bytes: int = 16 * _MiB  # bytes a dictionary repeats within a row group (value reuse)
    # one Parquet dictionary page, uncompressed (from its page header, before it is read); common writers
    # (pyarrow, parquet-mr, Spark) fall back to plain pages past 1 MiB
    max_dictionary_bytes: int = 8 * _MiB

    def __post_init__(self) -> None:
        for f in (
            "max_value_bytes",
            "max_image_bytes",
            "max_row_bytes",
            "max_group_bytes",
            "max_repeated_bytes",
            "max_dictionary_bytes",
        ):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DataLimits.{f} must be a positive integer, got {value!r}")


DEFAULT_DATA_LIMITS = DataLimits()


# ------------------------------------------------------------------------------------------- opening
def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or special file"


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` unless it is a regular file itself (not a symlink, FIFO, device or folder)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise DataFileError(path, "missing", "no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataFileError(
            path, "not_a_file", f"is {_kind_of(st.st_mode)}; data files are read only as regular files"
        )


def open_data_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """``path`` opened for reading with ``O_NOFOLLOW`` (the last component is not followed), without blocking
    on a FIFO, and refused unless it is a regular file. Raises :class:`DataFileError` naming the path."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise DataFileError(path, "missing", "no such file") from None
    except OSError as e:
        if os.path.islink(path):  # ELOOP from O_NOFOLLOW
            raise DataFileError(
                path, "not_a_file", "is a symbolic link; data files are read only as regular files"
            ) from None
        raise DataFileError(path, "unreadable", f"cannot be opened ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataFileError(
                path, "not_a_file", f"is {_kind_of(st.st_mode)}; data files are read only as regular files"
            )
        os.set_blocking(fd, True)
        return cast(IO[bytes], os.fdopen(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise


# ----------------------------------------------------------------------------------------- measuring
def _validity(arr: Any) -> Any:
    """Which entries of ``arr`` are not null (bool numpy), read from its validity bitmap."""
    import numpy as np

    n, buf = len(arr), arr.buffers()[0]
    if buf is None or arr.null_count == 0:
        return np.ones(n, dtype=bool)
    bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), bitorder="little")
    return bits[arr.offset : arr.offset + n].astype(bool)


def _buffer_ints(arr: Any, index: int, dtype: Any, count: int) -> Any:
    """``count`` integers of ``arr``'s buffer ``index`` from its offset, as int64 numpy (no copy of data)."""
    import numpy as np

    values = np.frombuffer(arr.buffers()[index], dtype=dtype)[arr.offset : arr.offset + count]
    if len(values) != count:
        raise ValueError("a buffer is shorter than its array")
    return values.astype(np.int64)


def _as_int64(arr: Any) -> Any:
    """An integer array's values as int64 numpy, nulls as 0 (read from its buffers: pyarrow.compute's first
    call alone costs ~40 MB of memory)."""
    import numpy as np

    values = _buffer_ints(arr, 1, np.dtype(arr.type.to_pandas_dtype()), len(arr))
    return np.where(_validity(arr), values, 0)


def _offsets(arr: Any, large: bool) -> Any:
    """The ``len(arr) + 1`` offsets of a binary, string or list array (int64 numpy)."""
    import numpy as np

    return _buffer_ints(arr, 1, np.int64 if large else np.int32, len(arr) + 1)


@dataclass
class _Repeats:
    """Dictionary reuse within one group: a value's first use is new bytes, every further use repeats it."""

    seen: dict[str, Any] = field(default_factory=dict)  # column path -> (dictionary id, used mask)
    repeated: int = 0
    worst: str = ""  # the column that repeated the most

    def add(self, key: str, dictionary: Any, idx: Any, sizes: Any) -> None:
        import numpy as np

        ident = (dictionary.buffers()[-1].address if dictionary.buffers()[-1] is not None else 0, len(sizes))
        prev = self.seen.get(key)
        used_before = prev[1] if prev is not None and prev[0] == ident else np.zeros(len(sizes), dtype=bool)
        if len(idx) == 0 or len(sizes) == 0:
            return
        counts = np.bincount(idx, minlength=len(sizes))
        used = counts > 0
        new = used & ~used_before
        repeated = int((counts * sizes).sum() - sizes[new].sum())
        if repeated > 0 and not self.worst:
            self.worst = key
        self.repeated += repeated
        self.seen[key] = (ident, used_before | used)


def _sizes(arr: Any, repeats: _Repeats, key: str) -> Any:
    """Decoded bytes of each row of ``arr`` (int64 numpy): what ``to_pylist`` would hold, dictionaries
    expanded, without expanding them."""
    import numpy as np
    import pyarrow as pa

    t, n = arr.type, len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if pa.types.is_dictionary(t):
        dict_sizes = _sizes(arr.dictionary, repeats, key)
        idx = arr.indices
        valid = _validity(idx)
        ix = _as_int64(idx)
        used = ix[valid]
        if len(used) and (used.min() < 0 or used.max() >= len(dict_sizes)):
            raise ValueError(f"column {key!r}: a dictionary index is out of range")
        out = np.zeros(n, dtype=np.int64)
        out[valid] = dict_sizes[used]
        repeats.add(key, arr.dictionary, used, dict_sizes)
        return out
    if pa.types.is_binary(t) or pa.types.is_string(t):
        return np.diff(_offsets(arr, large=False))
    if pa.types.is_large_binary(t) or pa.types.is_large_string(t):
        return np.diff(_offsets(arr, large=True))
    if pa.types.is_fixed_size_binary(t):
        return np.full(n, t.byte_width, dtype=np.int64)
    if pa.types.is_struct(t):
        total = np.zeros(n, dtype=np.int64)
        for i in range(t.num_fields):  # field(i) is the child under this slice (null parents counted too)
            total += _sizes(arr.field(i), repeats, f"{key}.{t.field(i).name}")
        return total
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        offsets = _offsets(arr, large=pa.types.is_large_list(t))
        child = _sizes(arr.values, repeats, f"{key}[]")
        cum = np.concatenate([[0], np.cumsum(child)])
        if len(offsets) and (offsets.min() < 0 or offsets.max() >= len(cum)):
            raise ValueError(f"column {key!r}: a list offset is out of range")
        return (cum[offsets[1:]] - cum[offsets[:-1]]).astype(np.int64)
    if pa.types.is_fixed_size_list(t):
        child = _sizes(arr.flatten(), repeats, f"{key}[]")
        return child.reshape(n, t.list_size).sum(axis=1) if t.list_size else np.zeros(n, dtype=np.int64)
    if pa.types.is_null(t):
        return np.zeros(n, dtype=np.int64)
    try:
        width = max(t.bit_width // 8, 1)
    except ValueError:  # unions and other layouts: their buffers spread over the rows
        return np.full(n, -(-arr.nbytes // n), dtype=np.int64)
    return np.full(n, width, dtype=np.int64)


def _fmt(n: int) -> str:
    return f"{n / _MiB:.1f} MiB" if n >= _MiB else f"{n} bytes"


@dataclass
class _GroupBudget:
    """The running decoded size of one group (a Parquet row group, an Arrow file) against the limits."""

    path: str
    limits: DataLimits
    image_columns: frozenset[str]
    where: str  # "row group 3", ""
    total: int = 0
    repeats: _Repeats = field(default_factory=_Repeats)

    def check(self, batch: Any, first_row: int) -> None:
        """Measure ``batch`` (rows ``first_row``...) and raise DataFileError when it goes over a budget."""
        import numpy as np

        lim = self.limits
        at = f"{self.where}, " if self.where else ""
        rows = np.zeros(batch.num_rows, dtype=np.int64)
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            try:
                sizes = _sizes(col, self.repeats, name)
            except ValueError as e:
                raise DataFileError(self.path, "corrupt", f"{at}{e}") from None
            cap = lim.max_image_bytes if name in self.image_columns else lim.max_value_bytes
            over = np.flatnonzero(sizes > cap)
            if len(over):
                r = int(over[0])
                raise DataFileError(
                    self.path,
                    "value_too_large",
                    f"{at}row {first_row + r}, column {name!r}: {_fmt(int(sizes[r]))} decoded, over the "
                    f"{_fmt(cap)} one value may have",
                )
            rows += sizes
        over = np.flatnonzero(rows > lim.max_row_bytes)
        if len(over):
            r = int(over[0])
            raise DataFileError(
                self.path,
                "row_too_large",
                f"{at}row {first_row + r}: {_fmt(int(rows[r]))} decoded, over the {_fmt(lim.max_row_bytes)} "
                "one row may have",
            )
        if self.repeats.repeated > lim.max_repeated_bytes:
            raise DataFileError(
                self.path,
                "dictionary_bomb",
                f"{at}column {self.repeats.worst!r}: dictionary values are repeated to "
                f"{_fmt(self.repeats.repeated)} more decoded bytes by rows up to "
                f"{first_row + batch.num_rows - 1}, over the {_fmt(lim.max_repeated_bytes)} allowed (a few "
                "stored bytes that expand on reading)",
            )
        self.total += int(rows.sum())
        if self.total > lim.max_group_bytes:
            raise DataFileError(
                self.path,
                "group_too_large",
                f"{at}rows up to {first_row + batch.num_rows - 1} decode to {_fmt(self.total)}, over the "
                f"{_fmt(lim.max_group_bytes)} allowed",
            )


# ------------------------------------------------------------------------------------------- parquet
_PARQUET_BATCH_ROWS = 64  # rows per pyarrow batch: bounds the bytes held at once


class _Cut(ValueError):
    """The bytes read end inside a page header (read more)."""


def _byte(data: bytes, i: int) -> int:
    if i >= len(data):
        raise _Cut("a page header is cut")
    return data[i]


def _uvarint(data: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = _byte(data, i)
        out |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return out, i
        if shift > 70:
            raise ValueError("not a Parquet page header (a varint runs on)")


def _skip(data: bytes, i: int, ftype: int, depth: int) -> int:
    """Past one Thrift compact-protocol value of type ``ftype`` starting at ``i``."""
    if depth > 16:
        raise ValueError("not a Parquet page header (nested too deep)")
    if ftype in (1, 2):  # a boolean field: its value is in the type
        return i
    if ftype == 3:
        return i + 1
    if ftype in (4, 5, 6):
        return _uvarint(data, i)[1]
    if ftype == 7:
        return i + 8
    if ftype == 8:
        n, i = _uvarint(data, i)
        return i + n
    if ftype in (9, 10):  # list / set: size and element type in one byte (size 15: a varint follows)
        head = _byte(data, i)
        size, etype, i = head >> 4, head & 0x0F, i + 1
        if size == 15:
            size, i = _uvarint(data, i)
        for _ in range(size):
            i = i + 1 if etype in (1, 2) else _skip(data, i, etype, depth + 1)
        return i
    if ftype == 11:  # map
        size, i = _uvarint(data, i)
        if size:
            types = _byte(data, i)
            i += 1
            for _ in range(size):
                i = _skip(data, i, types >> 4, depth + 1)
                i = _skip(data, i, types & 0x0F, depth + 1)
        return i
    if ftype == 12:
        return _struct(data, i, depth + 1, {})[1]
    raise ValueError(f"not a Parquet page header (Thrift type {ftype})")


def _struct(data: bytes, i: int, depth: int, want: dict[int, int]) -> tuple[dict[int, int], int]:
    """Read a compact-protocol struct from ``i``: its own i32 fields (by id) and where it ends."""
    fid = 0
    while True:
        byte = _byte(data, i)
        i += 1
        if byte == 0:
            return want, i
        delta, ftype = byte >> 4, byte & 0x0F
        if delta:
            fid += delta
        else:
            raw, i = _uvarint(data, i)
            fid = (raw >> 1) ^ -(raw & 1)
        if ftype == 5 and depth == 0:
            raw, i = _uvarint(data, i)
            want[fid] = (raw >> 1) ^ -(raw & 1)
        else:
            i = _skip(data, i, ftype, depth)


def _page_header(data: bytes) -> tuple[int, int, int, int]:
    """``(page type, uncompressed size, compressed size, header length)`` of the Parquet page header at the
    start of ``data`` (``1: type``, ``2: uncompressed_page_size``, ``3: compressed_page_size``)."""
    fields, end = _struct(data, 0, 0, {})
    if not {1, 2, 3} <= set(fields) or fields[2] < 0 or fields[3] < 0:
        raise ValueError("not a Parquet page header")
    return fields[1], fields[2], fields[3], end


_DICTIONARY_PAGE = 2
_MAX_HEADER_BYTES = 1 << 20  # a page header with its statistics
_BOMB_RATIO = 64  # a page that decompresses past 8 MiB at more than this ratio expands from nothing


def _read_header(fh: IO[bytes], pos: int) -> tuple[int, int, int, int]:
    size = 4096
    while True:
        fh.seek(pos)
        data = fh.read(size)
        try:
            return _page_header(data)
        except _Cut:
            if len(data) < size or size >= _MAX_HEADER_BYTES:
                raise ValueError("a page header is cut or too long") from None
            size *= 16


def _check_pages(fh: IO[bytes], md: Any, name: str, limits: DataLimits) -> None:
    """Walk every page header of every column chunk before pyarrow reads a page: what pyarrow allocates is
    each header's uncompressed size, whatever the footer declares. Refused unread, naming the row group and
    column: a dictionary page over ``limits.max_dictionary_bytes``, a page expanding past 8 MiB at more than
    64x its stored size (a compression bomb), a row group whose pages decompress past
    ``limits.max_group_bytes``."""
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        group_total = 0
        for j in range(rg.num_columns):
            c = rg.column(j)
            at = f"row group {g}, column {c.path_in_schema!r}"
            first = int(c.data_page_offset)
            if c.has_dictionary_page and c.dictionary_page_offset:
                first = min(first, int(c.dictionary_page_offset))
            pos, end = first, first + int(c.total_compressed_size)
            while pos < end:
                try:
                    kind, size, stored, length = _read_header(fh, pos)
                except ValueError as e:
                    raise DataFileError(name, "unreadable", f"{at}: {e}") from None
                if kind == _DICTIONARY_PAGE and size > limits.max_dictionary_bytes:
                    raise DataFileError(
                        name,
                        "dictionary_too_large",
                        f"{at}: its dictionary page declares {_fmt(size)} uncompressed, over the "
                        f"{_fmt(limits.max_dictionary_bytes)} allowed (refused unread)",
                    )
                if size > 8 * _MiB and size > _BOMB_RATIO * max(stored, 1):
                    raise DataFileError(
                        name,
                        "compression_bomb",
                        f"{at}: a page of {_fmt(stored)} declares {_fmt(size)} uncompressed (over "
                        f"{_BOMB_RATIO}x; refused unread)",
                    )
                group_total += size
                if group_total > limits.max_group_bytes:
                    raise DataFileError(
                        name,
                        "group_too_large",
                        f"{at}: the row group's pages decompress to over {_fmt(limits.max_group_bytes)} "
                        "(refused unread)",
                    )
                pos += length + stored
    fh.seek(0)


def _dictionary_columns(md: Any) -> list[str]:
    """Byte-array columns stored with a dictionary page in some row group: read as dictionaries so that their
    decoded size is measured before it is allocated."""
    out: dict[str, None] = {}
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in range(rg.num_columns):
            c = rg.column(j)
            if c.physical_type == "BYTE_ARRAY" and c.has_dictionary_page:
                out[c.path_in_schema] = None
    return list(out)


def iter_parquet_rows(
    path: str | os.PathLike[str],
    *,
    start: int = 0,
    image_columns: frozenset[str] = frozenset(),
    limits: DataLimits = DEFAULT_DATA_LIMITS,
    declared_row_group_bytes: int | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(position, row)`` of a Parquet file from ``start``, each batch measured before its rows are made.

    Row groups before ``start`` are not read. Raises :class:`DataFileError` (naming the file, the row group,
    the row and the column) for a file that is not a regular file, over a budget, or unreadable; the rows
    before it have been yielded.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = str(path)
    with open_data_file(path) as fh:
        try:
            md = pq.ParquetFile(fh).metadata
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataFileError(name, "unreadable", f"not a readable Parquet file ({e})") from None
        _check_pages(fh, md, name, limits)
        try:
            pf = pq.ParquetFile(fh, read_dictionary=_dictionary_columns(md) or None)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataFileError(name, "unreadable", f"not a readable Parquet file ({e})") from None
        first = 0
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            group_start, first = first, first + rg.num_rows
            if declared_row_group_bytes is not None and rg.total_byte_size > declared_row_group_bytes:
                raise DataFileError(
                    name,
                    "row_group_too_large",
                    f"row group {g} declares {rg.total_byte_size} bytes, over the {declared_row_group_bytes} "
                    "allowed",
                )
            if first <= start:
                continue
            budget = _GroupBudget(name, limits, image_columns, f"row group {g}")
            pos = group_start
            try:
                batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=[g], use_threads=False)
                for batch in batches:
                    budget.check(batch, pos)
                    for row in batch.to_pylist():
                        if pos >= start:
                            yield pos, row
                        pos += 1
            except (OSError, ValueError, ArithmeticError, pa.ArrowException) as e:
                if isinstance(e, DataFileError):
                    raise
                raise DataFileError(
                    name, "unreadable", f"row group {g} is cut or unreadable after row {pos - 1} ({e})"
                ) from None


# --------------------------------------------------------------------------------------------- arrow
def check_arrow_file(
    path: str | os.PathLike[str],
    *,
    image_columns: frozenset[str] = frozenset(),
    limits: DataLimits = DEFAULT_DATA_LIMITS,
) -> int:
    """Read an Arrow IPC file (stream or file format, as ``datasets`` writes) through bounds-checked reads,
    each record batch validated in full and measured; return its row count.

    Raises :class:`DataFileError` naming the file (and the batch, row and column) for a file that is not a
    regular file, corrupt (an offset past its buffer, a cut message) or over a budget.
    """
    import pyarrow as pa

    name = str(path)
    rows = 0
    with open_data_file(path) as fh:
        try:
            head = fh.read(6)
            fh.seek(0)
            src = pa.PythonFile(fh, mode="r")
            reader: Any = pa.ipc.open_file(src) if head == b"ARROW1" else pa.ipc.open_stream(src)
            batches: Any = (
                (reader.get_batch(i) for i in range(reader.num_record_batches))
                if head == b"ARROW1"
                else reader
            )
            budget = _GroupBudget(name, limits, image_columns, "")
            for b, batch in enumerate(batches):
                try:
                    batch.validate(full=True)
                except (pa.ArrowException, ValueError) as e:
                    raise DataFileError(
                        name, "corrupt", f"record batch {b} (rows {rows}...) is corrupt: {e}"
                    ) from None
                budget.check(batch, rows)
                rows += batch.num_rows
        except DataFileError:
            raise
        except (OSError, ValueError, ArithmeticError, pa.ArrowException) as e:
            raise DataFileError(
                name, "corrupt", f"not a readable Arrow file after row {rows} ({e})"
            ) from None
    return rows


_MAX_STATE_BYTES = 16 * _MiB  # state.json / dataset_dict.json: a list of file names


def _saved_json(path: Path) -> Any:
    import json

    try:
        return json.loads(read_small_file(path, _MAX_STATE_BYTES))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataFileError(path, "corrupt", f"not valid JSON ({e})") from None


def _plain_name(n: Any) -> bool:
    return (
        isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and "\\" not in n and "\x00" not in n
    )


def check_saved_dataset(
    path: Path, *, image_columns: frozenset[str] = frozenset(), limits: DataLimits = DEFAULT_DATA_LIMITS
) -> None:
    """Check a ``save_to_disk`` folder before ``datasets`` memory-maps it: every split folder and Arrow file
    named by ``dataset_dict.json`` / ``state.json`` is a plain name inside the folder, a regular file (no
    symlink to another dataset, no FIFO), and reads as valid Arrow within ``limits``
    (:func:`check_arrow_file`). Raises :class:`DataFileError` naming the file."""
    states = [path / "state.json"]
    dict_file = path / "dataset_dict.json"
    if os.path.lexists(dict_file):
        raw = _saved_json(dict_file)
        splits = raw.get("splits", []) if isinstance(raw, dict) else None
        if not isinstance(splits, list):
            raise DataFileError(dict_file, "corrupt", "not a datasets dataset_dict.json (no 'splits' list)")
        for s in splits:
            if not _plain_name(s):
                raise DataFileError(dict_file, "outside", f"split {s!r} is not a plain folder name; refused")
        states = [path / s / "state.json" for s in splits]
    for state in states:
        if not os.path.lexists(state):
            continue
        raw = _saved_json(state)
        try:
            names = [f["filename"] for f in raw.get("_data_files", [])]
        except (AttributeError, KeyError, TypeError) as e:
            raise DataFileError(state, "corrupt", f"not a datasets state.json ({e})") from None
        for n in names:
            if not _plain_name(n):
                raise DataFileError(state, "outside", f"data file {n!r} lies outside the folder; refused")
        for other in ("dataset_info.json",):
            if os.path.lexists(state.parent / other):
                check_regular_file(state.parent / other)
        for n in names:
            check_arrow_file(state.parent / n, image_columns=image_columns, limits=limits)


def read_small_file(path: Path, max_bytes: int) -> bytes:
    """A small metadata file (``state.json``, ``dataset_info.json``) through :func:`open_data_file`, refused
    past ``max_bytes``."""
    with open_data_file(path) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DataFileError(path, "too_large", f"is over the {max_bytes} bytes such a file may have")
    return data
