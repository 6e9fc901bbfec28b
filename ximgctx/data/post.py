"""The post record: one social-media post with its image, text, replies, labels and metadata.

The canonical on-disk form is JSONL, one post per line::

    {"id": "p17", "image": "images/p17.png", "text": "see you all saturday",
     "replies": [{"text": "count me in", "author": "u9"}, "lol"],
     "labels": {"intent": ["protest"], "meaning": "literal"},
     "meta": {"visibility": "public", "opt_out": false, "author": "u3"}}

Files are read through Hugging Face ``datasets`` (JSONL, Parquet, or a folder written by
``Dataset.save_to_disk``), streaming when asked. JSONL is read line by line as text and parsed here, so
that mixed shapes (a reply as a string or an object, a label as a string, a list or a distribution)
never trip Arrow's schema inference and every error names its file, line and field. ``datasets`` objects, hub
dataset ids and ``save_to_disk`` folders (with a column mapping) are read by :mod:`ximgctx.data.hf_datasets`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from ximgctx._json import json_safe
from ximgctx.data.post_schema import JSON_FIELDS, POST_FIELDS
from ximgctx.data.problems import Problem
from ximgctx.errors import InputError

if TYPE_CHECKING:
    import PIL.Image

logger = logging.getLogger(__name__)

#: A label value for one task: one label, a set of labels, or a distribution ``{label: probability}``.
LabelValue = Union[str, list[str], dict[str, float]]  # noqa: UP007 (a runtime alias on Python 3.10)

__all__ = [
    "LabelValue",
    "LoadReport",
    "Post",
    "PostValidationError",
    "Reply",
    "WriteReport",
    "load_posts",
    "post_from_dict",
    "standard_record",
    "write_posts",
]


class PostValidationError(InputError):
    """A post record is malformed. The message names the file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        row: int | None = None,
    ) -> None:
        where = ""
        if source is not None:
            where = f"{source}:{line}" if line is not None else str(source)
        if row is not None:  # a datasets row: its 0-based index, as ``dataset[row]`` reads it
            where = f"{where} row {row}" if where else f"row {row}"
        if field is not None:
            where = f"{where} field {field!r}" if where else f"field {field!r}"
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.line = line
        self.field = field
        self.row = row
        self.reason = message


#: keys whose value names the author of the object they sit in (a string, a number or an account object): a
#: reply's author is read under any of them, and the governance identity rule reads the same keys in meta
AUTHOR_KEYS = (
    "author",
    "user",
    "username",
    "screen_name",
    "user_id",
    "author_id",
    "account",
    "acct",
    "handle",
    "did",
    "owner",
    "from",
    "sender",
    "sender_id",
)
#: keys of an account object ({"id": ..., "username": ...}) that name who it is
ACCOUNT_ID_KEYS = ("id", "user_id", "username", "screen_name", "handle", "acct", "did", "name")


@dataclass
class Reply:
    """A reply under a post."""

    text: str  # the reply's text; may be empty
    author: str | None = None  # the replying account's id, used by governance (opt-outs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        if self.author is not None:
            out["author"] = self.author
        return out


@dataclass
class Post:
    """One post: the unit ximgctx reads, trains on and predicts for."""

    id: str  # unique within a dataset
    # path to the image (absolute once loaded from a manifest), its encoded bytes (a datasets Image() column,
    # a shard), a PIL image (given to the processor in Python), or None
    image: str | bytes | PIL.Image.Image | None = None
    text: str = ""  # the post's own text (caption, tweet, OCR of a meme)
    replies: list[Reply] = field(default_factory=list)  # replies in display order
    labels: dict[str, LabelValue] = field(default_factory=dict)  # per task; a missing task is unlabeled
    meta: dict[str, Any] = field(default_factory=dict)  # visibility, author, opt_out, lang, originals...

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON-able record."""
        out: dict[str, Any] = {"id": self.id}
        if self.image is not None:
            out["image"] = self.image
        out["text"] = self.text
        out["replies"] = [r.to_dict() for r in self.replies]
        out["labels"] = dict(self.labels)
        out["meta"] = dict(self.meta)
        return out

    def to_json(self) -> str:
        """One line of standard JSON: a NaN or infinity anywhere becomes null (see
        :func:`standard_record`)."""
        return _dumps(standard_record(self)[0])


def standard_record(post: Post) -> tuple[dict[str, Any], list[Problem]]:
    """The post's record as standard JSON can hold it, and what had to change.

    Python's ``json`` writes ``NaN`` and ``Infinity``, which standard JSON (and most readers: jq, browsers,
    Arrow, PostgreSQL) refuse. They become null, each with a ``Problem(<field>, "non_finite", ...)``.
    """
    found: list[Problem] = []

    def note(where: str, value: float) -> None:
        top = where.split(".", 1)[0].split("[", 1)[0]
        found.append(Problem(top, "non_finite", f"{where} was {value!r}; written as null"))

    return json_safe(post.to_dict(), on_nonfinite=note), found


def _dumps(record: dict[str, Any]) -> str:
    line = json.dumps(record, ensure_ascii=False, allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (read from a "\ud800" escape): keep it as an escape
        line = json.dumps(record, ensure_ascii=True, allow_nan=False)
    return line


def _check_label_value(value: Any, *, ctx: dict[str, Any], fld: str) -> LabelValue:
    if isinstance(value, str):
        if not value:
            raise PostValidationError("empty label string", field=fld, **ctx)
        return value
    if isinstance(value, list):
        for i, v in enumerate(value):
            if not isinstance(v, str) or not v:
                raise PostValidationError(
                    f"labels in a list must be non-empty strings, got {v!r}", field=f"{fld}[{i}]", **ctx
                )
        return list(value)
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise PostValidationError(
                    f"a label distribution maps labels to finite non-negative numbers, got {v!r}",
                    field=f"{fld}.{k}",
                    **ctx,
                )
            out[str(k)] = float(v)
        if out and sum(out.values()) <= 0:
            raise PostValidationError("a label distribution must not sum to zero", field=fld, **ctx)
        return out
    raise PostValidationError(
        f"a label is a string, a list of strings or a {{label: probability}} mapping, got "
        f"{type(value).__name__}",
        field=fld,
        **ctx,
    )


def _check_replies(raw_replies: Any, ctx: dict[str, Any]) -> list[Reply]:
    raw_replies = [] if raw_replies is None else raw_replies
    if not isinstance(raw_replies, list):
        raise PostValidationError(
            f"replies must be a list, got {type(raw_replies).__name__}", field="replies", **ctx
        )
    replies: list[Reply] = []
    for i, r in enumerate(raw_replies):
        if isinstance(r, str):
            replies.append(Reply(text=r))
        elif isinstance(r, Mapping):
            rt = r.get("text", "")
            if rt is None:
                rt = ""
            if not isinstance(rt, str):
                raise PostValidationError(
                    f"reply text must be a string, got {type(rt).__name__}", field=f"replies[{i}].text", **ctx
                )
            # the author under any common key, or the id of an {id, username} object (governance matches
            # opt-outs against it: a reply must not lose its author to a key name)
            author = next((r[k] for k in AUTHOR_KEYS if r.get(k) is not None), None)
            if isinstance(author, Mapping):
                author = next((author[k] for k in ACCOUNT_ID_KEYS if author.get(k) is not None), None)
            if author is not None and (isinstance(author, bool) or not isinstance(author, (str, int))):
                raise PostValidationError(
                    f"reply author must be a string, got {type(author).__name__}",
                    field=f"replies[{i}].author",
                    **ctx,
                )
            replies.append(Reply(text=rt, author=None if author is None else str(author)))
        else:
            raise PostValidationError(
                f"a reply is a string or an object with 'text', got {type(r).__name__}",
                field=f"replies[{i}]",
                **ctx,
            )
    return replies


def post_from_dict(
    record: Mapping[str, Any],
    *,
    source: str | None = None,
    line: int | None = None,
    image_root: str | Path | None = None,
    row: int | None = None,
) -> Post:
    """Validate one record and build a :class:`Post`.

    Args:
        record: the decoded JSON object.
        source: file the record came from, for error messages.
        line: 1-based line (or row) number in ``source``.
        image_root: relative image paths are resolved against this folder.
        row: 0-based row index in a ``datasets`` source, for error messages.

    Raises:
        PostValidationError: naming ``source``, ``line`` and the offending field.
    """
    ctx = {"source": source, "line": line, "row": row}
    if not isinstance(record, Mapping):
        raise PostValidationError(f"a post is a JSON object, got {type(record).__name__}", **ctx)
    unknown = set(record) - set(POST_FIELDS)
    if unknown:
        raise PostValidationError(f"unknown fields {sorted(unknown)}", **ctx)

    pid = record.get("id")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or (isinstance(pid, str) and not pid.strip()):
        raise PostValidationError(f"id must be a non-empty string, got {pid!r}", field="id", **ctx)
    pid = str(pid)

    image = record.get("image")
    if image is not None:
        if not isinstance(image, str):
            raise PostValidationError(
                f"image must be a path string or absent, got {type(image).__name__}", field="image", **ctx
            )
        if not image.strip():
            image = None
        elif image_root is not None and not os.path.isabs(image):
            # os.path, not pathlib: pathlib interns every path part, which grows without bound when
            # streaming millions of unique image names
            image = os.path.normpath(os.path.join(image_root, image))

    text = record.get("text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise PostValidationError(f"text must be a string, got {type(text).__name__}", field="text", **ctx)

    replies = _check_replies(record.get("replies"), ctx)

    raw_labels = record.get("labels")
    raw_labels = {} if raw_labels is None else raw_labels
    if not isinstance(raw_labels, Mapping):
        raise PostValidationError(
            f"labels must be an object {{task: label}}, got {type(raw_labels).__name__}",
            field="labels",
            **ctx,
        )
    labels: dict[str, LabelValue] = {}
    for task, value in raw_labels.items():
        if value is None:  # an explicit null means "not labeled for this task"
            continue
        labels[str(task)] = _check_label_value(value, ctx=ctx, fld=f"labels.{task}")

    meta = record.get("meta")
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        raise PostValidationError(f"meta must be an object, got {type(meta).__name__}", field="meta", **ctx)

    return Post(id=pid, image=image, text=text, replies=replies, labels=labels, meta=dict(meta))


@dataclass
class LoadReport:
    """What :func:`load_posts` skipped when asked to skip bad records instead of raising."""

    errors: list[PostValidationError] = field(default_factory=list)
    read: int = 0  # records seen, good and bad

    @property
    def skipped(self) -> int:
        return len(self.errors)

    def skip(self, error: PostValidationError, on_error: str, log: logging.Logger) -> None:
        """A bad record: raise it (``on_error="raise"``), or record it, log where it is and go on."""
        if on_error == "raise":
            raise error
        self.errors.append(error)
        log.warning("skipping bad record: %s", error)

    def summary(self) -> str:
        lines = [f"read {self.read} records, skipped {self.skipped}"]
        lines += [f"  {e}" for e in self.errors[:20]]
        if self.skipped > 20:
            lines.append(f"  ... and {self.skipped - 20} more")
        return "\n".join(lines)


def check_new_id(
    post_id: str,
    seen: dict[str, str],
    where: str,
    *,
    source: str | None,
    line: int | None = None,
    row: int | None = None,
) -> None:
    """Refuse a post id already read (``seen``: id -> where it was first read), else remember where it is."""
    if post_id in seen:
        message = f"duplicate id {post_id!r} (first seen at {seen[post_id]})"
        raise PostValidationError(message, source=source, line=line, row=row, field="id")
    seen[post_id] = where


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
def _quiet_datasets() -> Iterator[None]:
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


def _iter_records(path: Path, streaming: bool) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(source, line, record_or_error)``; a JSON error is yielded as a PostValidationError."""
    import datasets

    kind, files = _resolve_files(path)
    if kind == "arrow":
        ds = datasets.load_from_disk(files[0])
        for i, row in enumerate(ds):
            yield files[0], i + 1, {k: _parquet_value(k, v) for k, v in row.items()}
        return
    for f in files:
        if kind == "jsonl":
            # The "text" builder keeps every line (blank ones included), so row i is line i + 1.
            with _quiet_datasets():
                # 1 MiB read chunks (datasets' default is 10 MiB): measured flat memory over a 200k-post
                # stream, where 10 MiB chunks let the allocator's footprint climb by ~100 MiB
                ds = datasets.load_dataset(
                    "text", data_files=f, split="train", streaming=streaming, chunksize=_JSONL_CHUNK_BYTES
                )
            for i, row in enumerate(ds):
                raw = row["text"]
                if not raw.strip():
                    continue
                try:
                    yield f, i + 1, json.loads(raw)
                except json.JSONDecodeError as e:
                    yield (
                        f,
                        i + 1,
                        PostValidationError(
                            f"malformed JSON ({e.msg} at column {e.colno})", source=f, line=i + 1
                        ),
                    )
        else:
            with _quiet_datasets():
                ds = datasets.load_dataset("parquet", data_files=f, split="train", streaming=streaming)
            for i, row in enumerate(ds):
                rec = {k: _parquet_value(k, v) for k, v in row.items() if v is not None or k == "id"}
                yield f, i + 1, rec


def _iter_posts(
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


def load_posts(
    path: str | Path | Any,
    *,
    image_root: str | Path | None = None,
    streaming: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
    report: LoadReport | None = None,
    labels: Literal["check", "ignore"] = "check",
    columns: Mapping[str, Any] | None = None,
    split: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> list[Post] | Iterator[Post]:
    """Read posts from a manifest or a Hugging Face ``datasets`` source.

    Args:
        path: a ``.jsonl`` file, a ``.parquet`` file, a folder of JSONL or Parquet shards, a folder of shards
            with embedded images (one with a ``shards.json`` index, written by ``ximgctx shard``, or of
            WebDataset ``.tar`` files; see :mod:`ximgctx.data.shards`; images come as bytes), a folder written
            by ``save_to_disk`` (a ``Dataset`` or ``DatasetDict``), a ``datasets.Dataset`` /
            ``IterableDataset`` / ``DatasetDict`` object, or a hub dataset id (``"org/name"``). An
            ``IterableDataset`` is streamed, never materialised (an iterator is returned). See
            :mod:`ximgctx.data.hf_datasets`.
        image_root: folder that relative image paths are resolved against; defaults to the folder of
            the file each record came from.
        streaming: return a lazy iterator that reads through ``datasets`` streaming, holding one
            record at a time, for manifests larger than memory. Duplicate ids are not checked.
        on_error: ``"raise"`` stops at the first bad record with a :class:`PostValidationError`
            naming file, line and field; ``"skip"`` logs it, records it in ``report`` and goes on.
        report: filled with what was skipped when ``on_error="skip"``.
        labels: ``"ignore"`` drops every record's labels unread (inference does not use them, so a post whose
            only fault is a label value is kept); ``"check"`` validates them.
        columns: for ``datasets`` sources, which column holds each part of a post, e.g.
            ``{"id": "post_id", "image": "img", "text": "caption", "replies": "comments",
            "labels": {"intent": "label"}, "meta": ["lang"]}`` (defaults: the record's own field names; see
            :class:`~ximgctx.data.hf_datasets.ColumnMap`).
        split: the split of a ``DatasetDict``, a saved one or a hub dataset (required when it has several).
        revision: the hub dataset's revision (branch, tag or commit).
        cache_dir: the ``datasets`` cache a hub dataset is read from.

    Returns:
        A list of posts, or an iterator when ``streaming`` (or for an ``IterableDataset``).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    report = report if report is not None else LoadReport()
    if labels not in ("check", "ignore"):
        raise ValueError(f"labels must be 'check' or 'ignore', got {labels!r}")
    from ximgctx.data import hf_datasets
    from ximgctx.data.shards import is_shard_source, iter_shard_posts

    if hf_datasets.is_dataset_source(path):
        return hf_datasets.load_dataset_posts(
            path,
            columns=columns,
            split=split,
            revision=revision,
            cache_dir=cache_dir,
            image_root=image_root,
            streaming=streaming,
            on_error=on_error,
            report=report,
            labels=labels,
        )
    if is_shard_source(path):
        it = iter_shard_posts(
            Path(path), streaming=streaming, on_error=on_error, report=report, labels=labels
        )
    else:
        it = _iter_posts(
            Path(path), None if image_root is None else Path(image_root), streaming, on_error, report, labels
        )
    return it if streaming else list(it)


# The writer lives in ximgctx.data.post_write (it needs Post, defined above); its names stay importable here.
from ximgctx.data.post_write import WriteReport, write_posts  # noqa: E402
