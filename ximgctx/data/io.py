"""Reading and writing posts: :func:`load_posts` takes any source the formats read, :func:`write_posts` writes
JSONL or Parquet."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, overload

from ximgctx.data import hf_datasets
from ximgctx.data.files import iter_file_posts
from ximgctx.data.post_write import WriteReport, write_posts
from ximgctx.data.record import LoadReport, Post
from ximgctx.data.shards import is_shard_source, iter_shard_posts

__all__ = ["LoadReport", "WriteReport", "load_posts", "write_posts"]


@overload
def load_posts(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    streaming: Literal[False] = False,
    on_error: Literal["raise", "skip"] = "raise",
    report: LoadReport | None = None,
    labels: Literal["check", "ignore"] = "check",
    columns: Mapping[str, Any] | None = None,
    split: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    confine_images: bool = True,
) -> list[Post]: ...


@overload
def load_posts(
    path: str | Path | Any,
    *,
    image_root: str | Path | None = None,
    streaming: Literal[True],
    on_error: Literal["raise", "skip"] = "raise",
    report: LoadReport | None = None,
    labels: Literal["check", "ignore"] = "check",
    columns: Mapping[str, Any] | None = None,
    split: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    confine_images: bool = True,
) -> Iterator[Post]: ...


@overload
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
    confine_images: bool = True,
) -> list[Post] | Iterator[Post]: ...


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
    confine_images: bool = True,
) -> list[Post] | Iterator[Post]:
    """Read posts from a manifest or a Hugging Face ``datasets`` source.

    Args:
        path: a ``.jsonl`` file, a ``.parquet`` file, a folder of JSONL or Parquet shards, a folder of shards
            with embedded images (one with a ``shards.json`` index, written by ``ximgctx shard``, or of
            WebDataset ``.tar`` files; see :mod:`ximgctx.data.shards`; images come as bytes), a folder written
            by ``save_to_disk`` (a ``Dataset`` or ``DatasetDict``), a ``datasets.Dataset`` /
            ``IterableDataset`` / ``DatasetDict`` object, or a hub dataset id (``"hub:org/name"``;
            ``"org/name"`` alone only when it cannot be a local path: no folder ``org`` here). An
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
        confine_images: for ``datasets`` sources, image paths must stay inside the ``save_to_disk`` folder (or
            ``image_root``): a path leaving it is a bad row naming the column and row; a hub dataset's image
            paths are never read. ``False`` reads them wherever they point (a dataset you trust).

    Returns:
        A list of posts, or an iterator when ``streaming`` (or for an ``IterableDataset``). For a file or
        folder path the type says which: ``list[Post]`` unless ``streaming=True``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    report = report if report is not None else LoadReport()
    if labels not in ("check", "ignore"):
        raise ValueError(f"labels must be 'check' or 'ignore', got {labels!r}")
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
            confine_images=confine_images,
        )
    if is_shard_source(path):
        it = iter_shard_posts(
            Path(path), streaming=streaming, on_error=on_error, report=report, labels=labels
        )
    else:
        it = iter_file_posts(
            Path(path), None if image_root is None else Path(image_root), streaming, on_error, report, labels
        )
    return it if streaming else list(it)
