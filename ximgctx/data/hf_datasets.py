"""Posts from Hugging Face ``datasets``: a ``Dataset``, an ``IterableDataset``, a ``DatasetDict`` split, a
folder written by ``save_to_disk``, or a hub dataset id, with a column mapping.

:func:`ximgctx.data.io.load_posts` hands these sources here. Rows become the README's record format through
a :class:`ColumnMap` (which column is the id, the image, the text, the replies, the labels and the metadata),
then pass the same validation as a JSONL line (:func:`~ximgctx.data.record.post_from_dict`): the same errors,
the same :class:`~ximgctx.data.record.LoadReport` counting, one bad row is one error naming the row index.

Rows are read in **Arrow format**, never through ``datasets``' Python formatting, so no feature is decoded by
``datasets``: an ``Image()`` column arrives as its stored ``{"bytes", "path"}`` struct (what casting it to
``Image(decode=False)`` gives, for nested and unmapped image columns too) and the bytes go through ximgctx's
safe decoder (:func:`ximgctx.data.images.load_image`, with the process's limits) in the processor. A
stranger's image is never opened by Pillow without those limits. A ``ClassLabel`` label column gives its
label names.

Nothing here runs code from a dataset: a hub dataset id goes through ``datasets.load_dataset`` with
``trust_remote_code=False`` where the installed ``datasets`` still knows scripts (4.0 and later refuse them
outright), and a ``save_to_disk`` folder is refused when its ``state.json`` names a file outside the folder.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ximgctx.data.data_files import DataFileError, check_saved_dataset
from ximgctx.data.record import LoadReport, Post, PostValidationError, check_new_id, post_from_dict
from ximgctx.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

__all__ = ["ColumnMap", "HubDatasetError", "is_dataset_source", "load_dataset_posts"]

#: rows converted per Arrow batch (bounds what is held at once when streaming)
_BATCH_ROWS = 32

#: suffixes of manifest files: a missing ``posts.jsonl`` is a missing file, never a hub dataset id
_FILE_SUFFIXES = (
    ".jsonl",
    ".json",
    ".ndjson",
    ".parquet",
    ".gz",
    ".zst",
    ".bz2",
    ".xz",
    ".csv",
    ".tsv",
    ".txt",
)


class HubDatasetError(InputError):
    """A hub dataset id cannot be had (offline and uncached, unknown, gated, a script dataset)."""


@dataclass(frozen=True)
class ColumnMap:
    """Which dataset column holds each part of a post (defaults: the README record's field names).

    A default column the dataset lacks is simply absent from every post (a dataset without ``id`` gets the row
    index as id); a column named explicitly that the dataset lacks is an error listing the columns it has.
    """

    id: str = "id"  # post id (string or integer)
    image: str = "image"  # an Image() column (bytes or path), encoded bytes, or a path string
    text: str = "text"  # the post's own text
    replies: str = "replies"  # a list of strings or of {"text", "author"} objects (or one string: one reply)
    # a column of {task: label} objects, or {task: column} to read each task's label from its own column
    labels: str | Mapping[str, str] = "labels"
    # a column holding the meta object, or a list of columns copied into meta under their own names
    meta: str | Sequence[str] = "meta"

    @classmethod
    def parse(cls, columns: ColumnMap | Mapping[str, Any] | None) -> tuple[ColumnMap, frozenset[str]]:
        """The map and the parts named explicitly (those must exist); unknown keys are refused."""
        if columns is None:
            return cls(), frozenset()
        if isinstance(columns, ColumnMap):
            default = cls()
            changed = (f.name for f in fields(cls) if getattr(columns, f.name) != getattr(default, f.name))
            return columns, frozenset(changed)
        if not isinstance(columns, Mapping):
            raise ConfigError(f"columns must be a mapping such as {{'image': 'img'}}, got {columns!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(columns) - set(known))
        if unknown:
            raise ConfigError(f"columns: unknown parts {unknown}; the parts of a post are {known}")
        for part, value in columns.items():
            ok = isinstance(value, str) or (part == "labels" and isinstance(value, Mapping))
            ok = ok or (part == "meta" and isinstance(value, (list, tuple)))
            if not ok:
                raise ConfigError(f"columns[{part!r}] must name a column, got {value!r}")
        return cls(**dict(columns)), frozenset(columns)

    def source_columns(self) -> list[str]:
        """Every dataset column this map reads."""
        out = [self.id, self.image, self.text, self.replies]
        out += list(self.labels.values()) if isinstance(self.labels, Mapping) else [self.labels]
        out += [self.meta] if isinstance(self.meta, str) else list(self.meta)
        return list(dict.fromkeys(out))


def _is_dataset_object(obj: Any) -> bool:
    import sys

    ds = sys.modules.get("datasets")  # a datasets object implies the module is loaded: no import for paths
    if ds is None:
        return False
    return isinstance(obj, (ds.Dataset, ds.IterableDataset, ds.DatasetDict, ds.IterableDatasetDict))


def _is_saved_folder(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


#: the explicit prefix of a hub dataset id: ``hub:org/name`` is never read as a local path
HUB_PREFIX = "hub:"


def _looks_like_hub_id(source: str) -> bool:
    """Whether ``source`` cannot be a local path and so names a hub dataset: ``org/name`` whose ``org`` is no
    folder here (``data/posts`` beside an existing ``data/`` is a missing local path), not starting with
    ``.``, ``/`` or ``~``, without a manifest suffix. A bare word (``train``) is a missing local path."""
    from ximgctx._hub import looks_like_repo_id

    if source.startswith(HUB_PREFIX):
        return True
    return (
        source.count("/") == 1
        and looks_like_repo_id(source)
        and not os.path.lexists(source.split("/", 1)[0])
        and not source.lower().endswith(_FILE_SUFFIXES)
    )


def is_dataset_source(source: Any) -> bool:
    """True for what this module reads: a ``datasets`` object, a ``save_to_disk`` folder or a hub dataset id
    (``"hub:org/name"``, or ``"org/name"`` when it cannot be a local path: see :func:`_looks_like_hub_id`)."""
    if _is_dataset_object(source):
        return True
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        return True
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if os.path.lexists(path):
            return _is_saved_folder(path)
        return isinstance(source, str) and _looks_like_hub_id(source)
    return False


# ----------------------------------------------------------------------------------------------- sources
def _pick_split(ds: Any, split: str | None, name: str) -> tuple[Any, str]:
    """One split of a ``DatasetDict`` (the only one, or ``split``); a ``Dataset`` as it is."""
    if not isinstance(ds, Mapping):
        return ds, name
    splits = list(ds)
    if split is None:
        if len(splits) != 1:
            raise InputError(f"{name} has the splits {splits}: pass split=... (e.g. split={splits[0]!r})")
        split = splits[0]
    if split not in ds:
        raise InputError(f"{name} has no split {split!r}; its splits are {splits}")
    return ds[split], f"{name}[{split}]"


def _hub_message(repo_id: str, why: str) -> str:
    return (
        f"cannot load dataset {repo_id!r} from the Hugging Face Hub: {why}. With network access "
        "(HF_HUB_OFFLINE "
        f"unset) it is downloaded into the datasets cache; otherwise save it elsewhere with "
        f"datasets.load_dataset({repo_id!r}).save_to_disk('posts_ds'), copy that folder here and pass it: "
        f"load_posts('posts_ds') (or a .jsonl / .parquet file)."
    )


def _load_hub(
    repo_id: str, *, split: str | None, revision: str | None, streaming: bool, cache_dir: str | None
) -> Any:
    """``datasets.load_dataset(repo_id, ...)``; offline or unreachable and uncached: one HubDatasetError."""
    import datasets
    from huggingface_hub import constants

    from ximgctx._hub import hub_reachable
    from ximgctx.data.files import quiet_datasets

    kwargs: dict[str, Any] = {
        "split": split,
        "revision": revision,
        "streaming": streaming,
        "cache_dir": cache_dir,
    }
    if "trust_remote_code" in inspect.signature(datasets.load_dataset).parameters:
        kwargs["trust_remote_code"] = False  # datasets < 4: never run a dataset script
    offline = not hub_reachable()
    was = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    if offline:  # no retry loop against an unreachable hub: read the cache only
        datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        with quiet_datasets():
            return datasets.load_dataset(repo_id, **kwargs)
    except (ConnectionError, FileNotFoundError) as e:
        where = "the hub is unreachable or HF_HUB_OFFLINE is set" if offline else "the hub does not serve it"
        why = f"it is not in the local cache and {where}, and no file or folder {repo_id!r} exists here"
        raise HubDatasetError(_hub_message(repo_id, f"{why} ({e})")) from None
    except (ValueError, RuntimeError) as e:  # an unknown split, a config name, a script dataset (refused)
        script = "; ximgctx never runs a dataset's code" if "script" in str(e).lower() else ""
        raise HubDatasetError(f"dataset {repo_id!r}: {e}{script}") from None
    except OSError as e:  # gated, not found, HTTP errors
        raise HubDatasetError(_hub_message(repo_id, f"download failed ({e})")) from None
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = was


def _open(
    source: Any,
    *,
    split: str | None,
    revision: str | None,
    streaming: bool,
    cache_dir: str | None,
    image_columns: frozenset[str],
) -> tuple[Any, str, Path | None]:
    """``(dataset, name for messages, folder relative image paths resolve against)``."""
    if _is_dataset_object(source):
        ds, name = _pick_split(source, split, type(source).__name__)
        return ds, name, None
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        source = source[len(HUB_PREFIX) :]
    elif os.path.lexists(source):
        import datasets

        path = Path(source)
        check_saved_dataset(path, image_columns=image_columns)
        try:
            ds = datasets.load_from_disk(str(path))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path}: not a readable datasets save_to_disk folder ({e})") from None
        ds, name = _pick_split(ds, split, str(path))
        if streaming:
            ds = ds.to_iterable_dataset()
        return ds, name, Path(os.path.abspath(path))
    ds = _load_hub(str(source), split=split, revision=revision, streaming=streaming, cache_dir=cache_dir)
    base = f"hub dataset {str(source)!r}"
    ds, name = _pick_split(ds, split, base)
    return ds, f"{base}[{split}]" if split is not None and name == base else name, None


# -------------------------------------------------------------------------------------------------- rows
def _arrow_rows(ds: Any, wanted: list[str]) -> Iterator[dict[str, Any]]:
    """Rows as stored (Arrow -> Python, no feature decoded), only the columns in ``wanted`` when known."""
    names = ds.column_names
    if names is not None:
        keep = [c for c in names if c in wanted]
        if keep != list(names):
            ds = ds.select_columns(keep)
    for table in ds.with_format("arrow").iter(batch_size=_BATCH_ROWS):
        yield from table.to_pylist()


def _json_value(value: Any) -> Any:
    """A column stored as a JSON string (a common way to keep mixed shapes in one column) is parsed."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _replies(value: Any) -> Any:
    value = _json_value(value)
    if isinstance(value, str):  # one string is one reply, never a list of characters
        return [value] if value.strip() else []
    return value  # Arrow gives a Sequence/List of structs as a list of dicts, as the record format has them


def _class_names(features: Any, column: str) -> list[str] | None:
    """The names of a ``ClassLabel`` column (or a list of ``ClassLabel``), else None."""
    if features is None or column not in features:
        return None
    feature = features[column]
    inner = getattr(feature, "feature", None)  # List / Sequence
    feature = inner if inner is not None and hasattr(inner, "names") else feature
    names = getattr(feature, "names", None)
    return list(names) if isinstance(names, list) and type(feature).__name__ == "ClassLabel" else None


def _label(value: Any, names: list[str] | None) -> Any:
    """A ClassLabel index becomes its name; ``-1`` (datasets' "no label") becomes unlabeled."""
    if names is None:
        return _json_value(value)
    if isinstance(value, list):
        return [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value < 0 else names[value] if value < len(names) else value
    return value


def _image(value: Any, root: Path | None) -> Any:
    """An ``Image()`` struct, bytes or a path -> what ``Post.image`` holds (bytes, a path, or None)."""
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
        data, path = value.get("bytes"), value.get("path")
        value = data if data is not None else path
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) if len(value) else None
    if isinstance(value, str):
        if not value.strip():
            return None
        if root is not None and not os.path.isabs(value):
            return os.path.normpath(os.path.join(root, value))
        return value
    return value  # None, or a wrong type that post validation names


@dataclass
class _RowReader:
    """Turns one stored row into a :class:`Post` (or raises the PostValidationError naming the row)."""

    cmap: ColumnMap
    explicit: frozenset[str]
    name: str
    root: Path | None
    features: Any
    ignore_labels: bool
    # image paths must stay inside ``root`` (when there is one); ``hub``: a hub dataset's paths are never read
    confine: bool = True
    hub: bool = False

    def _confined(self, path: str, index: int) -> None:
        """Refuse an image path outside the dataset folder (``..``, an absolute path elsewhere, a symlink
        out), naming the column and the row."""
        if not self.confine:
            return
        column = self.cmap.image
        if self.root is None:
            if self.hub:
                raise PostValidationError(
                    f"column {column!r} holds the image path {path!r}; a hub dataset's image paths are not "
                    "read (only embedded image bytes are)",
                    source=self.name,
                    row=index,
                    field="image",
                )
            return
        root = os.path.normpath(self.root)
        inside = os.path.commonpath([root, path]) == root
        real_root = os.path.realpath(root)
        if inside:
            real = os.path.realpath(path)
            inside = os.path.commonpath([real_root, real]) == real_root
        if not inside:
            shown = os.path.relpath(path, root)
            raise PostValidationError(
                f"column {column!r} holds the image path {shown!r}, which leaves the dataset folder; images "
                "are read only from inside it (load_posts(..., confine_images=False) allows others)",
                source=self.name,
                row=index,
                field="image",
            )

    def _get(self, row: Mapping[str, Any], part: str, column: str) -> Any:
        if column not in row:
            if part in self.explicit:
                raise InputError(
                    f"{self.name}: columns[{part!r}] names {column!r}, which is not a column; "
                    f"the columns are {sorted(row)}"
                )
            return None
        return row[column]

    def _labels(self, row: Mapping[str, Any]) -> Any:
        spec = self.cmap.labels
        if isinstance(spec, Mapping):
            out = {}
            for task, column in spec.items():
                value = _label(self._get(row, "labels", column), _class_names(self.features, column))
                if value is not None:
                    out[str(task)] = value
            return out
        return _json_value(self._get(row, "labels", spec))

    def _meta(self, row: Mapping[str, Any]) -> Any:
        spec = self.cmap.meta
        if isinstance(spec, str):
            return _json_value(self._get(row, "meta", spec))
        return {column: self._get(row, "meta", column) for column in spec}

    def post(self, row: Mapping[str, Any], index: int) -> Post:
        c = self.cmap
        pid = self._get(row, "id", c.id)
        record = {
            "id": index if pid is None and c.id not in row else pid,
            "text": self._get(row, "text", c.text),
            "replies": _replies(self._get(row, "replies", c.replies)),
            "labels": None if self.ignore_labels else self._labels(row),
            "meta": self._meta(row),
        }
        image = _image(self._get(row, "image", c.image), self.root)
        if isinstance(image, str) and "\x00" not in image:
            self._confined(os.path.normpath(image), index)
        post = post_from_dict(
            {**record, "image": image if isinstance(image, str) or image is None else None},
            source=self.name,
            row=index,
        )
        if image is not None and not isinstance(image, str):
            if not isinstance(image, bytes):
                raise PostValidationError(
                    f"image must be encoded bytes, an Image() value or a path, got {type(image).__name__}",
                    source=self.name,
                    row=index,
                    field="image",
                )
            post = replace(post, image=image)
        return post


def _warn_unmapped(ds: Any, cmap: ColumnMap, name: str) -> None:
    names = ds.column_names
    if names is None:
        return
    unused = [c for c in names if c not in cmap.source_columns()]
    if unused:
        logger.warning(
            "%s: columns %s are not part of a post and are not read; map them with columns={...} "
            "(e.g. columns={'labels': {'task': 'column'}} or {'meta': [...]})",
            name,
            unused,
        )


def _validated(
    rows: Iterator[dict[str, Any]],
    reader: _RowReader,
    *,
    streaming: bool,
    on_error: str,
    report: LoadReport,
) -> Iterator[Post]:
    """Posts in row order; a bad row raises or is recorded, as ``load_posts`` does for a JSONL line."""
    seen: dict[str, str] = {}  # id -> where it was first read
    for index, row in enumerate(rows):
        report.read += 1
        try:
            post = reader.post(row, index)
            if not streaming:
                check_new_id(post.id, seen, f"row {index}", source=reader.name, row=index)
        except PostValidationError as e:
            report.skip(e, on_error, logger)
            continue
        yield post


def load_dataset_posts(
    source: Any,
    *,
    columns: ColumnMap | Mapping[str, Any] | None = None,
    split: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    image_root: str | Path | None = None,
    streaming: bool = False,
    on_error: str = "raise",
    report: LoadReport | None = None,
    labels: str = "check",
    confine_images: bool = True,
) -> list[Post] | Iterator[Post]:
    """Posts from a ``datasets`` source (see :func:`ximgctx.data.io.load_posts` for the arguments).

    An ``IterableDataset`` (given, or a hub id or folder read with ``streaming=True``) is never
    materialised: the result is an iterator holding one Arrow batch of rows at a time, whatever ``streaming``
    says. Image paths stored in the dataset are resolved against ``image_root``, else a ``save_to_disk``
    folder, else left as they are (the processor's image root or the working folder reads them). With
    ``confine_images`` (the default) a path outside that folder (``../outside.png``, an absolute path
    elsewhere, a symlink out) is a bad row naming the column and the row, and a hub dataset's image paths are
    never read.

    Raises:
        PostValidationError: a bad row (``on_error="raise"``), naming the row index and the field.
        InputError: a split missing or not chosen, a mapped column the dataset lacks, an unsafe folder.
        HubDatasetError: a hub id that cannot be had (offline and uncached: at once, naming the id).
        ConfigError: ``columns`` names an unknown part of a post.
    """
    cmap, explicit = ColumnMap.parse(columns)
    report = report if report is not None else LoadReport()
    try:
        ds, name, folder = _open(
            source,
            split=split,
            revision=revision,
            streaming=streaming,
            cache_dir=None if cache_dir is None else str(cache_dir),
            image_columns=frozenset({cmap.image}),
        )
    except DataFileError as e:  # a file of a save_to_disk folder: corrupt, over budget, a symlink, a FIFO
        report.read += 1
        report.skip(PostValidationError(f"{e.kind}: {e.detail}", source=e.path), on_error, logger)
        return []
    names = ds.column_names
    if names is not None:
        missing = [c for part in explicit for c in _part_columns(cmap, part) if c not in names]
        if missing:
            raise InputError(
                f"{name}: columns {missing} named in columns= are not columns of it; it has {names}"
            )
    _warn_unmapped(ds, cmap, name)
    root = Path(os.path.abspath(image_root)) if image_root is not None else folder
    hub = folder is None and not _is_dataset_object(source)
    reader = _RowReader(
        cmap,
        explicit,
        name,
        root,
        getattr(ds, "features", None),
        labels == "ignore",
        confine=confine_images,
        hub=hub,
    )
    import datasets

    lazy = streaming or isinstance(ds, datasets.IterableDataset)
    posts = _validated(
        _arrow_rows(ds, cmap.source_columns()), reader, streaming=lazy, on_error=on_error, report=report
    )
    return posts if lazy else list(posts)


def _part_columns(cmap: ColumnMap, part: str) -> list[str]:
    value = getattr(cmap, part)
    if isinstance(value, str):
        return [value]
    return list(value.values()) if isinstance(value, Mapping) else list(value)
