"""Search over posts: a FAISS index of fused post embeddings and CLIP image embeddings.

Two vector spaces, both searched by cosine similarity (vectors are L2-normalised and compared by inner
product):

* ``fused``: the context model's fused vector (image + text + replies), one per post. "More like this"
  (``--post ID``) searches it by default: posts that the model reads the same way.
* ``image``: the CLIP image embedding, one per post *with a usable image* (posts without one are not in
  this space). CLIP embeds text into the same space as images.

Which space a query searches by default:

=====================  ============================================================================
query                  default space, and what ``space="fused"`` / ``"image"`` does instead
=====================  ============================================================================
``--text Q``           ``image``: CLIP's text embedding of Q against image embeddings (text-to-image
                       retrieval, as CLIP was trained). ``fused``: Q as a text-only post through the
                       model, against fused embeddings ("posts whose text reads like Q").
``--image PATH``       ``image``: CLIP image embedding against image embeddings (visually similar).
                       ``fused``: the image as an image-only post through the model.
``--post ID``          ``fused``: the post's stored fused vector. ``image``: its stored image vector.
=====================  ============================================================================

``exact`` mode is ``IndexFlatIP`` (brute force, the reference); ``ivf`` is ``IndexIVFFlat`` with
``nlist`` k-means cells of which ``nprobe`` are visited per query (approximate; ``ximgctx bench search``
measures its recall@10 against exact). ``where`` filters on the labels the model predicted at indexing
time, in one syntax everywhere (Python, ``ximgctx search --where`` and ``POST /v1/search``):
``"intent=threat"``, a list of such strings, or a dict ``{"intent": ["threat", "protest"]}``. The filter
runs inside FAISS (an ID selector), so ``k`` hits are the best ``k`` among the posts that pass, not a
post-filtered remainder. In IVF mode a filtered query visits ``nprobe / share`` cells by default
(``share``: the fraction of posts passing), so it meets about as many matching candidates as an unfiltered
query. Several values for one task match any of them; different tasks must all match.

Every query answers one shape (:class:`SearchResults`, ``to_dict()``), the same as the CLI prints and the
service returns: ``{"object": "list", "model", "query", "space", "where", "mode", "data": [hit, ...]}``,
each hit ``{"rank", "id", "score", "labels", "text", "has_image"}``. Hits name posts by id; no file path
of the machine that built the index is ever stored in it or returned.

Saved as a ``search-index`` artifact (see :mod:`ximgctx.inference._search_io`: a manifest of every file,
atomic write, verified before it is read; no pickle anywhere). Each record keeps the keyed digests of its
post's author and its replies' authors (under the index's own random key), so
:meth:`SearchIndex.remove_authors` can erase an author who opted out; :meth:`SearchIndex.remove_ids`
removes posts by id. A post whose image could not be used has no labels for image-sourced tasks (they
abstain), so an image-task filter (``objects=star``) never matches it.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ximgctx._extras import require
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError, InputError
from ximgctx.governance.identity import erasure
from ximgctx.inference._authors import AuthorKey, digests_of, post_author_digests
from ximgctx.inference._search_io import SPACES, SearchIndexError, read_index_folder, write_index_folder
from ximgctx.inference.predictor import Predictor

__all__ = [
    "MODES",
    "SPACES",
    "SearchHit",
    "SearchIndex",
    "SearchIndexError",
    "SearchResults",
    "UnknownPostError",
    "Where",
    "default_nlist",
    "parse_where",
]

MODES = ("exact", "ivf")
_TEXT_CHARS = 280

#: A label filter: ``"task=label"``, a list of such strings, or ``{task: label | [labels]}``.
Where = str | Iterable[str] | Mapping[str, str | Iterable[str]]


class UnknownPostError(InputError, KeyError):
    """A "more like this" query names a post id that is not in the index."""


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: about 4 sqrt(n), with at least 39 training points per cell."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39))


def parse_where(where: Where | None, tasks: dict[str, list[str]]) -> dict[str, set[str]]:
    """A label filter in any of its forms -> ``{task: {labels}}``.

    ``"intent=threat"``, ``["intent=threat", "intent=protest", "meaning=ironic"]`` and
    ``{"intent": ["threat", "protest"], "meaning": "ironic"}`` are the same filter: several labels of
    one task match any of them, different tasks must all match.

    Raises:
        InputError: a clause that is not ``task=label``, or a task or label the index does not know.
    """
    if where is None:
        return {}
    pairs: list[tuple[str, str]] = []
    if isinstance(where, Mapping):
        for t, labels in where.items():
            values = [labels] if isinstance(labels, str) else labels
            if not isinstance(t, str) or not isinstance(values, Iterable):
                raise InputError(f"where: {{task: label or [labels]}}, got {t!r}: {labels!r}")
            for lab in values:
                if not isinstance(lab, str):
                    raise InputError(f"where.{t}: labels are strings, got {lab!r}")
                pairs.append((t, lab))
    else:
        for clause in [where] if isinstance(where, str) else where:
            if not isinstance(clause, str):
                raise InputError(f"where: a filter is task=label (e.g. intent=threat), got {clause!r}")
            task, sep, label = clause.partition("=")
            if not sep or not task.strip() or not label.strip():
                raise InputError(f"a filter is task=label (e.g. intent=threat), got {clause!r}")
            pairs.append((task.strip(), label.strip()))
    out: dict[str, set[str]] = {}
    for task, label in pairs:
        if task not in tasks:
            raise InputError(f"filter {task}={label}: no task {task!r}; the index has {sorted(tasks)}")
        if label not in tasks[task]:
            raise InputError(
                f"filter {task}={label}: {label!r} is not a label of {task!r}; labels: {tasks[task]}"
            )
        out.setdefault(task, set()).add(label)
    return out


@dataclass
class SearchHit:
    """One result."""

    rank: int  # 1-based
    id: str
    score: float  # cosine similarity
    labels: dict[str, list[str]]  # the labels the model predicted at indexing time
    text: str  # the first 280 characters of the post text
    has_image: bool  # whether the post had a usable image (is in the ``image`` space)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SearchResults:
    """The answer to one query: its hits (``data``) and what was asked. ``to_dict()`` is the JSON that
    ``ximgctx search`` prints and ``POST /v1/search`` returns."""

    data: list[SearchHit]
    query: dict[str, str]  # {"text": q} | {"post_id": id} | {"image": "sha256:<first 16 hex>"}
    space: str
    where: dict[str, list[str]]  # the filter, normalised: {task: sorted labels}
    mode: str
    model: str | None = None

    def __iter__(self) -> Any:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> SearchHit:
        return self.data[i]

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "list",
            "model": self.model,
            "query": dict(self.query),
            "space": self.space,
            "where": {t: list(v) for t, v in self.where.items()},
            "mode": self.mode,
            "data": [h.to_dict() for h in self.data],
        }


def _ids_of(index: Any) -> np.ndarray:
    """The ids (record rows) held by a FAISS index built by :func:`_make_index`."""
    faiss = require("faiss", feature="the search index (SearchIndex)")
    if hasattr(index, "id_map"):  # IndexIDMap2 (exact)
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    lists = index.invlists  # IndexIVFFlat
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(c), lists.list_size(c)).copy()
        for c in range(index.nlist)
        if lists.list_size(c)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _renumbered(index: Any, keep: np.ndarray) -> Any:
    """A copy of a FAISS index holding only the rows ``keep`` (sorted old row numbers), renumbered to their
    positions in ``keep``; an IVF index keeps its trained cells."""
    faiss = require("faiss", feature="the search index (SearchIndex)")
    ids = _ids_of(index)
    kept = np.sort(ids[np.isin(ids, keep)])
    vectors = index.reconstruct_batch(kept) if len(kept) else np.zeros((0, index.d), np.float32)
    new_rows = np.searchsorted(keep, kept).astype(np.int64)
    out: Any  # IndexIDMap2 or IndexIVFFlat
    if hasattr(index, "id_map"):
        out = faiss.IndexIDMap2(faiss.IndexFlatIP(index.d))
    else:
        out = faiss.clone_index(index)
        out.reset()
        out.set_direct_map_type(faiss.DirectMap.Hashtable)
    if len(kept):
        out.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), new_rows)
    return out


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _make_index(vectors: np.ndarray, rows: np.ndarray, mode: str, nlist: int | None) -> Any:
    faiss = require("faiss", feature="the search index (SearchIndex)")
    n, d = vectors.shape
    index: Any  # IndexIDMap2 or IndexIVFFlat
    if mode == "exact":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    else:
        cells = default_nlist(n) if nlist is None else int(nlist)
        if not 1 <= cells <= max(n, 1):
            raise ConfigError(f"nlist must be between 1 and the number of vectors ({n}), got {cells}")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, cells, faiss.METRIC_INNER_PRODUCT)
        if n:
            index.train(vectors)
        # reconstruct(row) for "more like this"
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
    if n:
        index.add_with_ids(vectors, rows.astype(np.int64))
    return index


class SearchIndex:
    """Posts searchable by text, image or post, with label filters (see the module docstring).

    Build with :meth:`build` (from posts, through a :class:`Predictor`) or :meth:`from_vectors`; save with
    :meth:`save`, reopen with :meth:`load`.
    """

    def __init__(
        self,
        records: list[dict[str, Any]],
        indexes: dict[str, Any],
        *,
        mode: str,
        tasks: dict[str, list[str]],
        nprobe: int = 16,
        model: dict[str, Any] | None = None,
        predictor: Predictor | None = None,
        author_key: AuthorKey | bytes | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
        unknown = sorted(set(indexes) - set(SPACES))
        if unknown or not indexes:
            raise InputError(
                f"indexes must be a non-empty mapping over spaces {list(SPACES)}, got {sorted(indexes)}"
            )
        self.records = records
        self.indexes = indexes
        self.mode = mode
        self.tasks = {t: list(labels) for t, labels in tasks.items()}
        self.nprobe = int(nprobe)
        self.model = dict(model or {})
        # the key of the records' author digests: the operator's (never saved; only its id is)
        self.author_key = author_key if isinstance(author_key, AuthorKey) else AuthorKey.operator(author_key)
        self._row_of: dict[str, int] = {}
        for i, r in enumerate(records):
            if r["id"] in self._row_of:
                raise SearchIndexError(
                    f"post ids must be unique in an index; {r['id']!r} appears at rows "
                    f"{self._row_of[r['id']]} and {i}"
                )
            self._row_of[r["id"]] = i
        # task -> (rows, labels) boolean matrix of predicted labels, for filters
        self._label_matrix = {
            task: np.array(
                [[lab in (r["labels"].get(task) or []) for lab in labels] for r in records], dtype=bool
            ).reshape(len(records), len(labels))
            for task, labels in self.tasks.items()
        }
        self.predictor: Predictor | None = None
        if predictor is not None:
            self.attach(predictor)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def spaces(self) -> list[str]:
        return list(self.indexes)

    # --------------------------------------------------------------------------------- building
    @classmethod
    def from_vectors(
        cls,
        records: list[dict[str, Any]],
        vectors: dict[str, tuple[np.ndarray, np.ndarray]],
        *,
        tasks: dict[str, list[str]],
        mode: str = "exact",
        nlist: int | None = None,
        nprobe: int = 16,
        model: dict[str, Any] | None = None,
        author_key: AuthorKey | bytes | None = None,
    ) -> SearchIndex:
        """An index over given vectors.

        Args:
            records: one dict per post (``id``, ``labels`` {task: [labels]}, optional ``has_image`` (or
                ``image``, of which only whether it is set is kept), ``text``, and
                ``authors``: the keyed digests of its authors under ``author_key``, the operator's
                governance key; by default ``$XIMGCTX_GOVERNANCE_KEY``).
            vectors: space -> ``(rows, vectors)``: which records (row numbers) have a vector in that space,
                and the (n, d) vectors (normalised here).
            tasks: task -> labels, for filters.
        """
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
        indexes = {}
        for space, (rows, x) in vectors.items():
            rows = np.asarray(rows, dtype=np.int64)
            if x.ndim != 2 or len(rows) != len(x):
                raise InputError(f"space {space!r}: {len(rows)} rows for vectors of shape {x.shape}")
            indexes[space] = _make_index(_normalize(x), rows, mode, nlist)
        records = [
            {
                "id": str(r["id"]),
                "has_image": bool(r.get("has_image", r.get("image") is not None)),
                "text": (r.get("text") or "")[:_TEXT_CHARS],
                "labels": {t: list(v) for t, v in (r.get("labels") or {}).items()},
                "authors": sorted(r.get("authors") or []),
            }
            for r in records
        ]
        return cls(
            records, indexes, mode=mode, tasks=tasks, nprobe=nprobe, model=model, author_key=author_key
        )

    @classmethod
    def build(
        cls,
        predictor: Predictor,
        posts: Iterable[Post],
        *,
        mode: str = "exact",
        nlist: int | None = None,
        nprobe: int = 16,
        batch_size: int | None = None,
        progress: bool = False,
        author_key: bytes | None = None,
    ) -> SearchIndex:
        """Run the model over ``posts`` and index their fused and image embeddings and predicted labels
        (an abstained task, e.g. an image task on a post without a usable image, indexes no label).

        The posts' authors are kept as digests keyed by ``author_key``, the operator's governance key (by
        default ``$XIMGCTX_GOVERNANCE_KEY``; without one, a random key that no purge can use later)."""
        from tqdm.auto import tqdm

        akey = AuthorKey.operator(author_key)
        key = akey.require("the new search index")
        records: list[dict[str, Any]] = []
        fused: list[np.ndarray] = []
        image: list[np.ndarray] = []
        image_rows: list[np.ndarray] = []
        bar = tqdm(disable=not progress, desc="index", unit="post")
        for result in predictor.iter_batches(posts, batch_size):
            start = len(records)
            for post, pred in zip(result.posts, predictor.results(result), strict=True):
                records.append(
                    {
                        "id": post.id,
                        "has_image": False,  # set below from the image space
                        "text": post.text,
                        "labels": {t: p.labels for t, p in pred.tasks.items()},
                        "authors": post_author_digests(post, key),
                    }
                )
            fused.append(result.output.fused.float().cpu().numpy())
            present = result.output.embeddings.present["image"].cpu().numpy()  # (B,)
            image.append(result.output.embeddings.image.float().cpu().numpy()[present])
            image_rows.append(start + np.flatnonzero(present))
            for row in image_rows[-1]:
                records[int(row)]["has_image"] = True
            bar.update(len(result.posts))
        bar.close()
        model = predictor.model
        h, d = model.config.fusion.hidden_dim, model.encoder.embed_dim
        vectors = {
            "fused": (
                np.arange(len(records)),
                np.concatenate(fused) if fused else np.zeros((0, h), np.float32),
            ),
            "image": (
                np.concatenate(image_rows) if image_rows else np.zeros(0, np.int64),
                np.concatenate(image) if image else np.zeros((0, d), np.float32),
            ),
        }
        tasks = {spec.name: list(spec.labels) for spec in model.config.tasks}
        meta = {
            "path": str(predictor.model_dir) if predictor.model_dir else None,
            "manifest_sha256": predictor.model_digest,
            "arch": model.config.encoder.arch,
        }
        index = cls.from_vectors(
            records, vectors, tasks=tasks, mode=mode, nlist=nlist, nprobe=nprobe, model=meta, author_key=akey
        )
        index.attach(predictor)
        return index

    # ---------------------------------------------------------------------------------- querying
    def attach(self, predictor: Predictor) -> None:
        """Use ``predictor`` to encode text and image queries; it must be the model the index was built
        with."""
        want = self.model.get("manifest_sha256")
        if want and predictor.model_digest and want != predictor.model_digest:
            raise SearchIndexError(
                f"the index was built with model {self.model.get('path')} (manifest SHA-256 {want[:12]}...) "
                "but "
                f"the predictor is {predictor.model_dir} ({predictor.model_digest[:12]}...); embeddings of "
                f"different models are not comparable. Rebuild the index or load the model it was built with."
            )
        dims = {"fused": predictor.model.config.fusion.hidden_dim, "image": predictor.model.encoder.embed_dim}
        for space, index in self.indexes.items():
            if index.d != dims[space]:
                raise SearchIndexError(
                    f"space {space!r} holds {index.d}-d vectors but the predictor's model "
                    f"gives {dims[space]}-d ones; it is not the model the index was built with"
                )
        self.predictor = predictor

    def _need_predictor(self) -> Predictor:
        if self.predictor is None:
            raise SearchIndexError(
                "text and image queries need the model: SearchIndex.load(path, predictor=...) "
                "or index.attach(Predictor.from_pretrained(model_dir))"
            )
        return self.predictor

    def allowed_rows(self, where: Where | None) -> np.ndarray | None:
        """Row numbers passing ``where`` (None when there is no filter)."""
        clauses = parse_where(where, self.tasks)
        if not clauses:
            return None
        keep = np.ones(len(self.records), dtype=bool)
        for task, labels in clauses.items():
            cols = [self.tasks[task].index(lab) for lab in sorted(labels)]
            keep &= self._label_matrix[task][:, cols].any(axis=1)
        return np.flatnonzero(keep)

    def search_vectors(
        self,
        queries: np.ndarray,
        *,
        space: str = "fused",
        k: int = 10,
        where: Where | None = None,
        nprobe: int | None = None,
        exclude: Sequence[int | None] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits for each query vector (normalised here) in ``space``.

        Args:
            nprobe: IVF cells to visit. By default the index's ``nprobe``, divided by the share of posts a
                ``where`` filter keeps (a filter keeping 10% visits 10x the cells, up to all of them), so a
                filtered query meets about as many candidates as an unfiltered one.
            exclude: per query, a row number to leave out of its hits (the query post itself).
        """
        faiss = require("faiss", feature="the search index (SearchIndex)")
        if space not in self.indexes:
            raise SearchIndexError(f"this index has no {space!r} space; it has {self.spaces}")
        if k < 1:
            raise InputError(f"k must be >= 1, got {k!r}")
        index = self.indexes[space]
        q = _normalize(np.atleast_2d(queries))
        if q.shape[1] != index.d:
            raise SearchIndexError(
                f"query vectors are {q.shape[1]}-d but space {space!r} holds {index.d}-d vectors"
            )
        allowed = self.allowed_rows(where)
        if index.ntotal == 0 or (allowed is not None and allowed.size == 0):
            return [[] for _ in range(len(q))]
        sel = None if allowed is None else faiss.IDSelectorBatch(allowed.astype(np.int64))
        fetch = min(k + (1 if exclude is not None else 0), max(index.ntotal, 1))
        params: Any  # faiss's bundled stubs (1.15) lack the keyword constructors of search parameters
        if self.mode == "ivf":
            if nprobe is None:
                nprobe = self.nprobe
                if allowed is not None:  # visit more cells when few posts pass, to meet as many candidates
                    share = allowed.size / max(len(self.records), 1)
                    nprobe = min(int(index.nlist), math.ceil(nprobe / share))
            params = faiss.SearchParametersIVF(sel=sel, nprobe=int(nprobe))
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        scores, rows = index.search(q, fetch, params=params)
        hits = []
        for qi in range(len(q)):
            skip = None if exclude is None else exclude[qi]
            out: list[SearchHit] = []
            for s, r in zip(scores[qi], rows[qi], strict=True):
                if r < 0 or r == skip:
                    continue
                rec = self.records[int(r)]
                out.append(
                    SearchHit(
                        rank=len(out) + 1,
                        id=rec["id"],
                        score=float(s),
                        labels=rec["labels"],
                        text=rec["text"],
                        has_image=bool(rec["has_image"]),
                    )
                )
                if len(out) == k:
                    break
            hits.append(out)
        return hits

    def search_text(
        self,
        text: str,
        *,
        k: int = 10,
        space: str = "image",
        where: Where | None = None,
        nprobe: int | None = None,
    ) -> list[SearchHit]:
        """Posts for a text query: CLIP text-to-image by default, or a text-only post in the fused space."""
        predictor = self._need_predictor()
        if space == "image":
            q = predictor.encode_texts([text])
        else:
            q = predictor.embed([Post(id="<query>", text=text)], space="fused")
        return self.search_vectors(q, space=space, k=k, where=where, nprobe=nprobe)[0]

    def search_image(
        self,
        image: str | os.PathLike[str] | bytes,
        *,
        k: int = 10,
        space: str = "image",
        where: Where | None = None,
        nprobe: int | None = None,
    ) -> list[SearchHit]:
        """Posts for an image query, a file or its bytes (CLIP image space by default, or an image-only post
        in the fused space)."""
        predictor = self._need_predictor()
        query = image if isinstance(image, bytes) else os.fspath(image)
        result = predictor.run_batch([Post(id="<query>", image=query)])
        if not bool(result.output.embeddings.present["image"][0]):
            name = "the query image" if isinstance(query, bytes) else f"query image {query!r}"
            raise SearchIndexError(f"{name} cannot be used: {'; '.join(map(str, result.batch.problems[0]))}")
        x = result.output.embeddings.image if space == "image" else result.output.fused
        return self.search_vectors(x.float().cpu().numpy(), space=space, k=k, where=where, nprobe=nprobe)[0]

    def search_post(
        self,
        post_id: str,
        *,
        k: int = 10,
        space: str = "fused",
        where: Where | None = None,
        nprobe: int | None = None,
    ) -> list[SearchHit]:
        """ "More like this": posts nearest to an indexed post's stored vector, the post itself left out."""
        if post_id not in self._row_of:
            raise UnknownPostError(f"no post {post_id!r} in the index")
        if space not in self.indexes:
            raise SearchIndexError(f"this index has no {space!r} space; it has {self.spaces}")
        row = self._row_of[post_id]
        try:
            vector = self.indexes[space].reconstruct(row)
        except RuntimeError as e:
            raise SearchIndexError(
                f"post {post_id!r} has no vector in the {space!r} space "
                f"(no usable image?); search the 'fused' space instead"
            ) from e
        return self.search_vectors(vector[None], space=space, k=k, where=where, nprobe=nprobe, exclude=[row])[
            0
        ]

    def search(
        self,
        text: str | None = None,
        *,
        image: str | os.PathLike[str] | bytes | None = None,
        post_id: str | None = None,
        k: int = 10,
        where: Where | None = None,
        space: str | None = None,
        nprobe: int | None = None,
    ) -> SearchResults:
        """One query, by exactly one of ``text``, ``image`` (a file or its bytes) or ``post_id`` (more like
        this), with an optional label filter; the same answer as ``ximgctx search`` and ``POST /v1/search``.

        ``space`` defaults to ``image`` for text and image queries and to ``fused`` for ``post_id``.

        Example::

            results = index.search("protest downtown", k=5, where="intent=protest")
            [(hit.id, round(hit.score, 3)) for hit in results.data]
        """
        given = [
            name for name, v in (("text", text), ("image", image), ("post_id", post_id)) if v is not None
        ]
        if len(given) != 1:
            raise InputError(f"give exactly one of text, image or post_id (got {given or 'none'})")
        clauses = parse_where(where, self.tasks)
        query: dict[str, str]
        if text is not None:
            space = space or "image"
            hits = self.search_text(text, k=k, space=space, where=clauses, nprobe=nprobe)
            query = {"text": text}
        elif post_id is not None:
            space = space or "fused"
            hits = self.search_post(post_id, k=k, space=space, where=clauses, nprobe=nprobe)
            query = {"post_id": post_id}
        else:
            assert image is not None  # exactly one was given
            space = space or "image"
            hits = self.search_image(image, k=k, space=space, where=clauses, nprobe=nprobe)
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
            query = {"image": "sha256:" + hashlib.sha256(data).hexdigest()[:16]}
        return SearchResults(
            data=hits,
            query=query,
            space=space,
            where={t: sorted(v) for t, v in clauses.items()},
            mode=self.mode,
            model=self.model_name,
        )

    @property
    def model_name(self) -> str | None:
        """The name of the model folder the index was built with (never its path)."""
        path = self.model.get("path")
        return Path(str(path)).name if path else None

    # ---------------------------------------------------------------------------------- removing
    def _keep_rows(self, keep: np.ndarray) -> int:
        """Keep only records ``keep`` (sorted row numbers), in every space; returns how many were removed."""
        removed = len(self.records) - len(keep)
        if removed:
            self.indexes = {space: _renumbered(index, keep) for space, index in self.indexes.items()}
            self.records = [self.records[int(i)] for i in keep]
            self._row_of = {r["id"]: i for i, r in enumerate(self.records)}
            self._label_matrix = {task: m[keep] for task, m in self._label_matrix.items()}
        return removed

    def remove_ids(self, post_ids: Iterable[str]) -> int:
        """Remove posts by id from the records and every vector space; returns how many were removed
        (ids not in the index are ignored). The caller saves."""
        drop = {str(i) for i in post_ids}
        return self._keep_rows(
            np.array([i for i, r in enumerate(self.records) if r["id"] not in drop], np.int64)
        )

    def remove_authors(self, authors: Iterable[Any]) -> int:
        """Remove every post written by one of ``authors`` or with a reply by one of them (an erasure after
        an opt-out), from the records and every vector space. Authors are compared by the governance
        identity rule (``normalize_author``) through the index's keyed digests. Returns how many posts were
        removed; the caller saves."""
        return self.remove_author_digests(digests_of(authors, self.author_key.require("this search index")))

    def remove_author_digests(self, digests: Iterable[str]) -> int:
        """:meth:`remove_authors` by the authors' keyed digests (under this index's author key, whose id is
        ``author_key.id``): what a server applies from its loop store's erasures. Returns posts removed."""
        drop = set(digests)
        if not drop:
            return 0
        keep = [
            i for i, r in enumerate(self.records) if not erasure(r.get("authors") or (), None, drop).drop_post
        ]
        return self._keep_rows(np.array(keep, np.int64))

    # ------------------------------------------------------------------------------------ saving
    def save(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        inputs: Iterable[str | os.PathLike[str] | None] = (),
    ) -> Path:
        """Write the index as a ``search-index`` artifact (atomically, every file in its manifest).

        A folder that holds anything but a search index is refused unless ``overwrite``, and so is one
        holding an input (``inputs``), the working folder or a folder above it.
        """
        return write_index_folder(self, path, overwrite=overwrite, inputs=inputs)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        predictor: Predictor | None = None,
        expected_sha256: str | None = None,
        author_key: bytes | None = None,
    ) -> SearchIndex:
        """Open an index folder after verifying every file against its manifest (and ``expected_sha256``,
        the artifact digest, when given). ``author_key`` (default ``$XIMGCTX_GOVERNANCE_KEY``) is needed
        only to erase authors: the folder holds the key's id, never the key."""
        return cls(
            **read_index_folder(path, expected_sha256=expected_sha256, author_key=author_key),
            predictor=predictor,
        )
