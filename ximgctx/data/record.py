"""The post record: one social-media post with its image, text, replies, labels and metadata.

The lowest layer of ``ximgctx.data``: formats (:mod:`~ximgctx.data.files`, :mod:`~ximgctx.data.shards`,
:mod:`~ximgctx.data.hf_datasets`, :mod:`~ximgctx.data.post_write`) build on it, and :mod:`ximgctx.data.io`
(``load_posts`` / ``write_posts``) on them.

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

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ximgctx._json import json_safe
from ximgctx.data.post_schema import POST_FIELDS
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
    "post_from_dict",
    "standard_record",
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
    ctx: dict[str, Any] = {"source": source, "line": line, "row": row}
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
    """What :func:`load_posts` skipped when asked to skip bad records instead of raising, and which labels
    were dropped because they do not fit their task (``check_labels(..., invalid_labels="drop")``)."""

    errors: list[PostValidationError] = field(default_factory=list)
    read: int = 0  # records seen, good and bad
    dropped_labels: dict[str, int] = field(default_factory=dict)  # task -> posts whose label was dropped
    label_examples: list[str] = field(default_factory=list)  # the first few: post, task, label

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
        if self.dropped_labels:
            lines.append(
                "labels dropped (not fitting their task; the task is masked for those posts): "
                + ", ".join(f"{t} {n}" for t, n in sorted(self.dropped_labels.items()))
            )
            lines += [f"  {e}" for e in self.label_examples]
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
