"""Saving and loading a :class:`~ximgctx.inference.search.SearchIndex` folder: an artifact of kind
``"search-index"`` written and verified by :mod:`ximgctx._artifacts` (manifest of every file with SHA-256 and
size, atomic rename, refuses to replace a folder that is not a search index unless told, lock while written).

Files (no pickle anywhere)::

    manifest.json     the artifact manifest (checked before anything else is read)
    index.json        mode, spaces (dim, count, file), tasks and labels, the model it was built with (its
                      folder relative to the index folder, or only its name when they share no root, and
                      the SHA-256 of its manifest), and the public id of the governance key that made
                      the author digests (never the key). No absolute path.
    posts.parquet     one row per post: id, whether it had a usable image, text (first 280 characters),
                      predicted labels, and the keyed digests of the post's and its replies' authors
                      (no file path: version 4; older indexes' image paths are read as has_image)
    fused.faiss       faiss.write_index of the fused space (ids = row numbers in posts.parquet)
    image.faiss       the image space

FAISS reads its files with its own C++ reader, only after the manifest has verified them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ximgctx._artifacts import Manifest, pinned_copy, verify_artifact, write_artifact
from ximgctx._extras import require
from ximgctx.errors import ArtifactError
from ximgctx.inference._authors import AuthorKey

if TYPE_CHECKING:
    from ximgctx.inference.search import SearchIndex

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KIND",
    "SPACES",
    "SearchIndexError",
    "read_index_folder",
    "write_index_folder",
]

#: the embedding spaces an index holds: the fused post embedding and the CLIP image embedding
SPACES = ("fused", "image")

KIND = "search-index"
FORMAT = "ximgctx-search-index"
# 2: keyed author digests per post; 3: their key is the operator's, only its id saved; 4: no paths (has_image
# instead of the image path, the model folder relative to the index)
FORMAT_VERSION = 4
_MAX_INDEX_JSON = 1 << 20  # index.json holds tasks and a few numbers; 1 MiB is plenty


class SearchIndexError(ArtifactError):
    """An index folder is incomplete or altered, or a query does not fit the index."""


def write_index_folder(
    index: SearchIndex,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Write ``index`` as a ``search-index`` artifact at ``path``; return the resolved path."""
    faiss = require("faiss", feature="the search index (SearchIndex)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ximgctx.version import __version__

    out = Path(path).resolve()
    with write_artifact(
        out, KIND, version=FORMAT_VERSION, overwrite=overwrite, inputs=inputs, meta={"posts": len(index)}
    ) as tmp:
        labels_type = pa.struct([(t, pa.list_(pa.string())) for t in index.tasks])
        schema = pa.schema(
            [
                ("id", pa.string()),
                ("has_image", pa.bool_()),
                ("text", pa.string()),
                ("labels", labels_type),
                ("authors", pa.list_(pa.string())),
            ]
        )
        pq.write_table(pa.Table.from_pylist(index.records, schema=schema), tmp / "posts.parquet")
        spaces = {}
        for space, faiss_index in index.indexes.items():
            faiss.write_index(faiss_index, str(tmp / f"{space}.faiss"))
            spaces[space] = {
                "file": f"{space}.faiss",
                "dim": int(faiss_index.d),
                "count": int(faiss_index.ntotal),
                "nlist": int(faiss_index.nlist) if index.mode == "ivf" else None,
            }
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "ximgctx_version": __version__,
            "mode": index.mode,
            "nprobe": index.nprobe,
            "posts": len(index.records),
            "spaces": spaces,
            "tasks": index.tasks,
            "model": {**index.model, "path": _relative_model_path(index.model.get("path"), out)},
            **index.author_key.to_json(),
        }
        (tmp / "index.json").write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
    return out


def _relative_model_path(path: Any, index_dir: Path) -> str | None:
    """The model folder as index.json stores it: relative to the index folder (so the two can move together),
    or its name alone when no relative path exists; never absolute."""
    if not path:
        return None
    p = Path(str(path)).resolve()  # a relative path is the working folder's
    try:
        return Path(os.path.relpath(p, index_dir)).as_posix()
    except ValueError:  # another drive (Windows)
        return p.name


def read_index_folder(
    path: str | os.PathLike[str], *, expected_sha256: str | None = None, author_key: bytes | None = None
) -> dict[str, Any]:
    """Verify an index folder, then read it: the keyword arguments of ``SearchIndex(...)``. The author key
    is ``author_key`` (or the operator's from the environment) when it is the one the folder names.

    Raises:
        SearchIndexError: naming the file that is missing, unlisted, altered or malformed.
    """
    require("faiss", feature="the search index (SearchIndex)")
    root = Path(path)
    if not (root / "index.json").is_file():
        raise SearchIndexError(f"{root}: no index.json; not a folder written by SearchIndex.save")
    try:
        if expected_sha256 is not None:  # pinned: read exactly the bytes that were hashed
            with pinned_copy(root, KIND, max_version=FORMAT_VERSION, expected_sha256=expected_sha256) as m:
                return _read_index(m.path, m, author_key)
        manifest = verify_artifact(root, KIND, max_version=FORMAT_VERSION)
    except ArtifactError as e:
        raise SearchIndexError(str(e)) from None
    return _read_index(root, manifest, author_key)


def _read_index(root: Path, manifest: Manifest, author_key: bytes | None) -> dict[str, Any]:
    faiss = require("faiss", feature="the search index (SearchIndex)")

    where = root / "index.json"
    if manifest.files["index.json"]["bytes"] > _MAX_INDEX_JSON:
        raise SearchIndexError(f"{where}: larger than {_MAX_INDEX_JSON} bytes; not an index description")
    try:
        meta = json.loads(where.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("format_version") not in (2, 3, FORMAT_VERSION):
            raise SearchIndexError(f"{where}: not a version-{FORMAT_VERSION} ximgctx search index")
        key = AuthorKey.for_saved(meta, author_key, str(where))
        spaces = {s: str(info["file"]) for s, info in meta["spaces"].items()}
        bad = sorted(s for s, f in spaces.items() if s not in SPACES or f != f"{s}.faiss")
        if bad:
            raise SearchIndexError(f"{where}: unknown spaces or files {bad}")
        settings = {"mode": meta["mode"], "tasks": meta["tasks"], "nprobe": int(meta["nprobe"])}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, ArtifactError):
            raise SearchIndexError(str(e)) from None
        raise SearchIndexError(f"{where}: malformed ({type(e).__name__}: {e})") from None
    from ximgctx.data.data_files import DataFileError, iter_parquet_rows

    try:  # read under the data budgets: a stranger's index may hold a dictionary bomb
        records = [row for _, row in iter_parquet_rows(root / "posts.parquet")]
    except DataFileError as e:
        raise SearchIndexError(str(e)) from None
    for r in records:
        r["labels"] = {t: list(v or []) for t, v in (r["labels"] or {}).items()}
        r["authors"] = list(r.get("authors") or [])
        if "has_image" not in r:  # versions 2 and 3 stored the image path
            r["has_image"] = r.pop("image", None) is not None
        r["has_image"] = bool(r["has_image"])
    indexes = {space: faiss.read_index(str(root / name)) for space, name in spaces.items()}
    model = dict(meta.get("model") or {})
    if meta["format_version"] >= 4 and model.get("path") and not Path(str(model["path"])).is_absolute():
        model["path"] = str((root / str(model["path"])).resolve())  # relative to the index folder
    return {
        "records": records,
        "indexes": indexes,
        "model": model,
        "author_key": key,
        **settings,
    }
