"""A label memory: labeled examples that change predictions at once, before the next retraining.

People correct the model; retraining comes later. :class:`LabelMemory` keeps each labeled post's fused
embedding and label, and :meth:`LabelMemory.blend` moves the heads' scores of a new post toward the labels
of its nearest labeled neighbours (FAISS inner product on centred, normalised embeddings = cosine)::

    kernel_j = exp((s_j - 1) / temperature)   if s_j >= threshold   else 0      (s_j: cosine similarity)
    alpha    = weight * max_j kernel_j                                        (how far to move)
    memory   = sum_j kernel_j * y_j / sum_j kernel_j                           (neighbours' labels)
    scores'  = (1 - alpha) * scores + alpha * memory

So an exact duplicate of a corrected post moves by ``weight``, a near-duplicate a little less, and a post
with no labeled neighbour above ``threshold`` keeps its scores bit for bit.

One entry cannot steer posts that are not near-exact copies of it. An entry at similarity ``s_j >=
near_duplicate`` (0.95 by default) is a near-exact copy; when a post has one, only its near-exact copies move
it (as above). A post with none is moved by the entries between ``threshold`` and ``near_duplicate`` at most
``max_shift`` (0.05 by default) on any label's score: ``alpha`` is lowered to ``max_shift / max_c |memory_c -
scores_c|`` where it would move a score further. A ``max``-reduced moderation category therefore moves by at
most ``max_shift``, so only a post whose score lies within ``max_shift`` of a policy threshold can change its
decision because of an entry it does not copy. :meth:`LabelMemory.blend_explained` reports, per post, the
entry that moved it most (``{"entry", "similarity", "weight"}``, ``weight`` being the ``alpha`` applied),
which moderation explanations carry as ``memory``.

Fused embeddings are anisotropic: with the tiny models, any two ContextBench posts have a median cosine of
0.92 (attention fusion) to 0.99 (concat), so a raw-cosine threshold cannot tell a near-duplicate from a
stranger. The memory therefore subtracts a *centre*, the mean fused embedding of reference posts, before
normalising. The reference is governed data the operator chooses when the memory is created (a sample of the
training data or of the pool: ``LabelMemory.for_predictor(predictor, reference=posts)``, ``ximgctx memory add
--reference FILE``), never the requests a server has seen: whoever sends requests could otherwise move the
centre so that every post looks like a labeled one. A memory without a centre refuses to add entries.
Centred, the median pair sits near 0, 99.9%
of pairs below 0.78-0.90, and a post with one more reply or one more character of text at a median of
0.93-0.99 from its original — hence the default threshold of 0.9. ``y_j`` is the label as the loss
reads it (one-hot, multi-hot, or a soft distribution from aggregated votes); multiclass scores stay
distributions.

A :class:`~ximgctx.Predictor` reads a memory when it is given one (``Predictor(model, memory=memory)``):
its ``scores`` are blended, so prediction, moderation, search and selection all see the corrected scores.

On disk a memory is an artifact of kind ``"label-memory"`` (written and verified by :mod:`ximgctx._artifacts`,
no pickle)::

    manifest.json           SHA-256 and size of every other file (checked before anything is read)
    memory.json             config, tasks, the model it was built with, ids, labels and keyed author digests
                            of the entries, and the public id of the governance key of those digests
    embeddings.safetensors  (N, H) float32 fused embeddings as the model gave them, and the (H,) centre
    posts.jsonl             the labeled posts, so :meth:`LabelMemory.refresh` can re-embed them after
    retraining

Each entry keeps the keyed digests (:func:`ximgctx.governance.identity.author_digest`, under the operator's
governance key: ``$XIMGCTX_GOVERNANCE_KEY`` or the ``author_key`` given; the folder holds only its id) of its
post's author and its replies' authors, so :meth:`LabelMemory.remove_authors` can erase an author who opted
out without the memory holding author ids, or a key that would let anyone test who is in it.

Its default place is beside the model folder (``<model>.memory``), not inside it: a saved model refuses to
load with unlisted weight files in its folder. The embeddings belong to the model that computed them;
loading a memory with another model is refused until it is refreshed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ximgctx._artifacts import pinned_copy, verify_artifact, write_artifact
from ximgctx._extras import require
from ximgctx.config import TaskSpec
from ximgctx.data.io import load_posts
from ximgctx.data.processor import LabelError, encode_label
from ximgctx.data.record import LabelValue, Post, post_from_dict
from ximgctx.errors import ArtifactError, ConfigError, InputError
from ximgctx.governance.identity import erasure
from ximgctx.inference._authors import AuthorKey, digests_of, post_author_digests

if TYPE_CHECKING:
    from ximgctx.inference.predictor import Predictor

logger = logging.getLogger(__name__)

__all__ = ["KIND", "LabelMemory", "MemoryConfig", "LabelMemoryError", "default_memory_dir"]

KIND = "label-memory"


class LabelMemoryError(ArtifactError):
    """A label-memory folder is incomplete, altered or of another format, or does not fit the model."""


FORMAT = "ximgctx-label-memory"
FORMAT_VERSION = 3  # 2: keyed author digests per entry; 3: their key is the operator's, only its id saved
_MIN_REFERENCE = 32  # fewer reference posts than this give a noisy centre (a warning says so)
_NO_REFERENCE = (
    "this label memory has no reference statistics yet: give governed reference posts when it is created "
    "(LabelMemory.for_predictor(predictor, reference=posts), memory.add(..., reference=posts), or "
    "'ximgctx memory add --reference FILE'), a sample of the training data or of the posts it will be asked "
    "about; the memory never centres on labeled posts or on requests"
)


def default_memory_dir(model_dir: str | Path) -> Path:
    """Where a model's memory lives by default: ``<model_dir>.memory`` beside the model folder."""
    p = Path(model_dir)
    return p.parent / (p.name + ".memory")


@dataclass
class MemoryConfig:
    """How much and how far labeled examples move predictions."""

    weight: float = 0.8  # the most the memory can move a score (an exact duplicate moves this far), in [0, 1]
    k: int = 8  # labeled neighbours read per post and task
    threshold: float = 0.9  # cosine similarity below which a labeled example has no effect
    temperature: float = 0.05  # kernel exp((s - 1) / T): influence fades as similarity drops below 1
    near_duplicate: float = 0.95  # cosine from which an entry is a near-exact copy (max_shift not applied)
    max_shift: float = 0.05  # the most entries below near_duplicate can move any label's score, in [0, 1]

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"memory weight must be in [0, 1], got {self.weight!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"memory k must be a positive integer, got {self.k!r}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ConfigError(f"memory threshold is a cosine similarity in [-1, 1], got {self.threshold!r}")
        if not self.temperature > 0:
            raise ConfigError(f"memory temperature must be positive, got {self.temperature!r}")
        if not -1.0 <= self.near_duplicate <= 1.0:
            raise ConfigError(
                f"memory near_duplicate is a cosine similarity in [-1, 1], got {self.near_duplicate!r}"
            )
        if not 0.0 <= self.max_shift <= 1.0:
            raise ConfigError(f"memory max_shift must be in [0, 1], got {self.max_shift!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LabelMemory:
    """Labeled posts' fused embeddings and labels, read by nearest neighbours.

    Args:
        tasks: the model's task specs (labels are encoded against them).
        dim: the fused embedding size (the model's ``fusion.hidden_dim``).
        config: weight, neighbours, threshold and temperature.
        model_digest: SHA-256 of the model folder's manifest the embeddings came from, when known.
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        dim: int,
        config: MemoryConfig | None = None,
        model_digest: str | None = None,
    ) -> None:
        self.tasks = {t.name: t for t in tasks}
        self.dim = int(dim)
        self.config = config or MemoryConfig()
        self.model_digest = model_digest
        self.ids: list[str] = []
        self.labels: list[dict[str, LabelValue]] = []
        self.posts: list[dict[str, Any] | None] = []  # the post records, for refresh()
        self.authors: list[list[str]] = []  # per entry: keyed digests of the post's and its replies' authors
        self.author_key = AuthorKey.operator()  # the operator's key of those digests (only its id is saved)
        self.embeddings = np.zeros((0, self.dim), dtype=np.float32)  # (N, H) raw fused embeddings
        self.center: np.ndarray | None = None  # (H,) subtracted before normalising; None: not set yet
        self.reference_size: int | None = None  # how many reference posts the centre is the mean of
        # task -> (faiss index, rows, targets)
        self._index: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}

    @classmethod
    def for_predictor(
        cls,
        predictor: Predictor,
        config: MemoryConfig | None = None,
        *,
        reference: Iterable[Post] | None = None,
        batch_size: int | None = None,
    ) -> LabelMemory:
        """An empty memory matching a predictor's model, centred on ``reference`` posts when given (a governed
        sample of the training data or of the pool; see the module docstring). Without a reference the memory
        has no centre yet: :meth:`add` then needs ``reference``."""
        model = predictor.model
        memory = cls(model.config.tasks, model.config.fusion.hidden_dim, config, predictor.model_digest)
        if reference is not None:
            memory._center_on(predictor, reference, batch_size)
        return memory

    def _center_on(self, predictor: Predictor, reference: Iterable[Post], batch_size: int | None) -> None:
        posts = list(reference)
        if not posts:
            raise InputError("label memory: the reference is empty; give governed reference posts")
        self.set_center(predictor.embed(posts, batch_size))

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------------------------- adding
    def add_embeddings(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        labels: Sequence[dict[str, LabelValue]],
        posts: Sequence[dict[str, Any] | None] | None = None,
        authors: Sequence[Sequence[str]] | None = None,
    ) -> int:
        """Add (or replace, by id: the latest label wins) entries from precomputed fused embeddings (N, H).

        ``authors`` are per entry the keyed digests of its authors (:meth:`author_digests`). Labels for tasks
        the memory does not know, or that do not fit their task, are dropped with a warning; an entry left
        with no label is not added. Returns how many entries were added or replaced.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(len(ids), -1)
        if embeddings.shape[1] != self.dim:
            raise InputError(
                f"embeddings have {embeddings.shape[1]} dimensions; this memory holds {self.dim}"
            )
        position = {pid: i for i, pid in enumerate(self.ids)}
        rows, added = [], 0
        for j, pid in enumerate(ids):
            kept = self._valid_labels(pid, labels[j])
            if not kept:
                continue
            record = posts[j] if posts is not None else None
            who = sorted(authors[j]) if authors is not None else []
            if pid not in position:
                position[pid] = len(self.ids)
                self.ids.append(pid)
                self.labels.append(kept)
                self.posts.append(record)
                self.authors.append(who)
            i = position[pid]
            self.labels[i], self.posts[i], self.authors[i] = kept, record, who
            rows.append((i, embeddings[j]))
            added += 1
        if rows:
            grown = np.zeros((len(self.ids), self.dim), dtype=np.float32)
            grown[: len(self.embeddings)] = self.embeddings
            for i, vec in rows:
                grown[i] = vec
            self.embeddings = grown
            self._index.clear()
        return added

    def _valid_labels(self, pid: str, labels: dict[str, LabelValue]) -> dict[str, LabelValue]:
        kept: dict[str, LabelValue] = {}
        for task, value in labels.items():
            if task not in self.tasks:
                continue
            try:
                encode_label(value, self.tasks[task])
            except LabelError as e:
                logger.warning("label memory: post %r: %s; label not added", pid, e)
                continue
            kept[task] = value
        return kept

    def author_digests(self, post: Post) -> list[str]:
        """The keyed digests (under this memory's key) of a post's author and its replies' authors."""
        return post_author_digests(post, self.author_key.require("this label memory"))

    def set_center(self, embeddings: np.ndarray) -> None:
        """Centre similarities on the mean of these fused embeddings (N, H) of reference posts."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim or len(embeddings) == 0:
            raise InputError(
                f"set_center needs (N, {self.dim}) embeddings with N >= 1, got {embeddings.shape}"
            )
        if len(embeddings) < _MIN_REFERENCE:
            logger.warning(
                "label memory: centring on only %d posts; give %d or more reference posts (a sample "
                "of the pool) for similarities that mean something",
                len(embeddings),
                _MIN_REFERENCE,
            )
        self.center = embeddings.mean(0)
        self.reference_size = len(embeddings)
        self._index.clear()

    def add(
        self,
        predictor: Predictor,
        posts: Iterable[Post],
        batch_size: int | None = None,
        *,
        reference: Iterable[Post] | None = None,
    ) -> int:
        """Embed labeled ``posts`` with ``predictor`` and add them. Posts without labels are skipped.

        A memory without a centre yet is centred on ``reference`` posts (governed posts like those the memory
        will be asked about: a sample of the training data or of the pool); without them it refuses
        (:class:`LabelMemoryError`), since centring on the labeled posts, or on whatever a server was asked,
        lets whoever chose those posts decide what counts as similar. A memory that has a centre ignores
        ``reference``.
        """
        posts = list(posts)
        labeled = [p for p in posts if any(t in self.tasks for t in p.labels)]
        self._check_model(predictor)
        if self.center is None:
            if reference is None:
                raise LabelMemoryError(_NO_REFERENCE)
            self._center_on(predictor, reference, batch_size)
        emb = self._embed(predictor, labeled, batch_size)  # (N, H)
        if not labeled:
            return 0
        if self.model_digest is None:
            self.model_digest = predictor.model_digest
        return self.add_embeddings(
            [p.id for p in labeled],
            emb,
            [p.labels for p in labeled],
            [p.to_dict() for p in labeled],
            [self.author_digests(p) for p in labeled],
        )

    def _embed(self, predictor: Predictor, posts: list[Post], batch_size: int | None) -> np.ndarray:
        return predictor.embed(posts, batch_size) if posts else np.zeros((0, self.dim), dtype=np.float32)

    # ----------------------------------------------------------------------------------- removing
    def _keep(self, keep: list[int]) -> int:
        removed = len(self.ids) - len(keep)
        self.ids = [self.ids[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
        self.posts = [self.posts[i] for i in keep]
        self.authors = [self.authors[i] for i in keep]
        self.embeddings = self.embeddings[keep]
        self._index.clear()
        return removed

    def remove(self, ids: Iterable[str]) -> int:
        """Forget entries by post id; returns how many were removed."""
        return self.remove_ids(ids)

    def remove_ids(self, post_ids: Iterable[str]) -> int:
        """Forget entries by post id; returns how many were removed (the caller saves)."""
        drop = {str(i) for i in post_ids}
        return self._keep([i for i, pid in enumerate(self.ids) if pid not in drop])

    def remove_authors(self, authors: Iterable[Any]) -> int:
        """Forget every entry whose post or one of whose replies is by one of ``authors`` (an erasure after
        an opt-out). Authors are compared by the governance identity rule (``normalize_author``), through
        this memory's keyed digests. Returns how many entries were removed (the caller saves)."""
        return self.remove_author_digests(digests_of(authors, self.author_key.require("this label memory")))

    def remove_author_digests(self, digests: Iterable[str]) -> int:
        """:meth:`remove_authors` by the authors' keyed digests (under this memory's author key, whose id is
        ``author_key.id``): what a server applies from its loop store's erasures. Returns entries removed."""
        drop = set(digests)
        if not drop:
            return 0
        keep = [i for i, who in enumerate(self.authors) if not erasure(who, None, drop).drop_post]
        if len(keep) == len(self.ids):
            return 0
        return self._keep(keep)  # the centre is the governed reference's: no entry ever moved it

    def refresh(
        self, predictor: Predictor, batch_size: int | None = None, *, reference: Iterable[Post] | None = None
    ) -> int:
        """Re-embed every stored post with ``predictor`` (after retraining) and recompute the centre from
        ``reference`` posts (required: the old centre means nothing to the new model); entries stored without
        their post are dropped. Returns how many entries remain."""
        if reference is None:
            raise LabelMemoryError("refresh: " + _NO_REFERENCE)
        reference = list(reference)
        kept = [
            (pid, lab, rec, who)
            for pid, lab, rec, who in zip(self.ids, self.labels, self.posts, self.authors, strict=True)
            if rec is not None
        ]
        if len(kept) < len(self.ids):
            logger.warning(
                "label memory: %d entries have no stored post and were dropped", len(self.ids) - len(kept)
            )
        emb = self._embed(predictor, [post_from_dict(k[2]) for k in kept], batch_size)
        self._keep([])
        self.model_digest = predictor.model_digest
        self.center = None
        self._center_on(predictor, reference, batch_size)
        self.add_embeddings(
            [k[0] for k in kept], emb, [k[1] for k in kept], [k[2] for k in kept], [k[3] for k in kept]
        )
        return len(self)

    # ------------------------------------------------------------------------------------ reading
    def _task_index(self, task: str) -> tuple[Any, np.ndarray, np.ndarray] | None:
        if task not in self._index:
            faiss = require("faiss", feature="the label memory (LabelMemory)")
            rows = np.array([i for i, lab in enumerate(self.labels) if task in lab], dtype=np.int64)
            if len(rows) == 0:
                return None
            spec = self.tasks[task]
            targets = np.stack([encode_label(self.labels[i][task], spec).numpy() for i in rows])  # (n, C)
            index = faiss.IndexFlatIP(self.dim)
            index.add(self._unit(self.embeddings[rows]))
            self._index[task] = (index, rows, targets.astype(np.float32))
        return self._index[task]

    def neighbours(self, fused: np.ndarray | torch.Tensor, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities (B, k) and entry positions (B, k) of the nearest labeled entries for ``task``
        (-1 where there are fewer than k)."""
        q = self._unit(fused)
        found = self._task_index(task)
        if found is None:
            return np.zeros((len(q), 0), dtype=np.float32), np.zeros((len(q), 0), dtype=np.int64)
        index, rows, _ = found
        sims, idx = index.search(q, min(self.config.k, len(rows)))
        return sims, np.where(idx >= 0, rows[np.maximum(idx, 0)], -1)

    def blend(
        self, scores: dict[str, torch.Tensor], fused: torch.Tensor | np.ndarray
    ) -> dict[str, torch.Tensor]:
        """Heads' calibrated scores (task -> (B, C)) moved toward the labels of each post's labeled
        neighbours; ``fused`` are the posts' fused embeddings (B, H). Rows with no neighbour above the
        threshold are returned unchanged (the same values, bit for bit)."""
        return self.blend_explained(scores, fused)[0]

    def blend_explained(
        self, scores: dict[str, torch.Tensor], fused: torch.Tensor | np.ndarray
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any] | None]]:
        """:meth:`blend`, and per post the entry that moved it most: ``{"entry": id, "similarity": cosine,
        "weight": alpha}`` over every task (None: no entry moved it)."""
        q = self._unit(fused)
        effects: list[dict[str, Any] | None] = [None] * len(q)
        if not len(self):
            return scores, effects
        cfg = self.config
        out = dict(scores)
        for task, p in scores.items():
            found = self._task_index(task) if task in self.tasks else None
            if found is None:
                continue
            index, rows, targets = found
            sims, idx = index.search(q, min(cfg.k, len(targets)))  # (B, k)
            sims = np.minimum(sims.astype(np.float64), 1.0)
            valid = (idx >= 0) & (sims >= cfg.threshold)
            near = valid & (sims >= cfg.near_duplicate)
            has_near = near.any(axis=1)  # (B,)
            use = np.where(has_near[:, None], near, valid)  # a near-exact copy: only such copies count
            kernel = np.where(use, np.exp((sims - 1.0) / cfg.temperature), 0.0)  # (B, k)
            alpha = cfg.weight * kernel.max(axis=1)  # (B,)
            moved = np.nonzero(alpha > 0)[0]
            if len(moved) == 0:
                continue
            kern = kernel[moved]  # (M, k)
            mem = (kern[..., None] * targets[np.maximum(idx[moved], 0)]).sum(1) / kern.sum(
                1, keepdims=True
            )  # (M, C)
            a = alpha[moved]
            far = ~has_near[moved]
            if far.any():  # no near-exact copy: no label's score moves further than max_shift
                gap = np.abs(mem - p[torch.as_tensor(moved, device=p.device)].double().cpu().numpy()).max(1)
                cap = np.where(gap > 0, cfg.max_shift / np.maximum(gap, 1e-12), np.inf)
                a = np.where(far, np.minimum(a, cap), a)
            new = p.clone()
            alpha_t = torch.as_tensor(a, dtype=p.dtype, device=p.device)[:, None]  # (M, 1)
            at = torch.as_tensor(moved, device=p.device)
            new[at] = (1 - alpha_t) * p[at] + alpha_t * torch.as_tensor(mem, dtype=p.dtype, device=p.device)
            out[task] = new
            best = kern.argmax(axis=1)  # the entry with the largest kernel: the most similar one used
            for m, row in enumerate(moved.tolist()):
                weight = float(a[m])
                if effects[row] is None or weight > effects[row]["weight"]:
                    j = int(best[m])
                    effects[row] = {
                        "entry": self.ids[int(rows[idx[row, j]])],
                        "similarity": float(sims[row, j]),
                        "weight": weight,
                    }
        return out, effects

    def _unit(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Fused embeddings (B, H), centred and L2-normalised, as FAISS reads them."""
        if isinstance(x, torch.Tensor):
            x = x.detach().float().cpu().numpy()
        x = np.asarray(x, dtype=np.float32)
        if self.center is not None:
            x = x - self.center
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)

    # ----------------------------------------------------------------------------------- save/load
    def _check_model(self, predictor: Predictor) -> None:
        dim = predictor.model.config.fusion.hidden_dim
        if dim != self.dim:
            raise LabelMemoryError(
                f"this label memory holds {self.dim}-d embeddings; the model's fused embedding is {dim}-d"
            )
        digest = predictor.model_digest
        if self.model_digest and digest and digest != self.model_digest and len(self):
            raise LabelMemoryError(
                f"this label memory was built with model {self.model_digest[:12]}..., not {digest[:12]}... "
                f"(its embeddings mean nothing to another model); call memory.refresh(predictor) to re-embed"
            )

    def save(
        self, folder: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()
    ) -> Path:
        """Write the memory as a ``label-memory`` artifact (atomically, with a manifest of every file).

        A folder holding anything but a label memory is refused unless ``overwrite``; so is a folder that
        holds one of ``inputs``.
        """
        from safetensors.numpy import save_file

        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "dim": self.dim,
            "model_digest": self.model_digest,
            "reference_size": self.reference_size,
            **self.author_key.to_json(),
            "tasks": [asdict(t) for t in self.tasks.values()],
            "entries": [
                {"id": pid, "labels": lab, "authors": list(who)}
                for pid, lab, who in zip(self.ids, self.labels, self.authors, strict=True)
            ],
        }
        with write_artifact(
            folder,
            KIND,
            version=FORMAT_VERSION,
            overwrite=overwrite,
            inputs=inputs,
            meta={"entries": len(self)},
        ) as tmp:
            text = json.dumps(meta, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
            (tmp / "memory.json").write_text(text, encoding="utf-8")
            tensors = {"embeddings": np.ascontiguousarray(self.embeddings)}
            if self.center is not None:
                tensors["center"] = np.ascontiguousarray(self.center, dtype=np.float32)
            save_file(tensors, str(tmp / "embeddings.safetensors"))
            with open(tmp / "posts.jsonl", "w", encoding="utf-8") as f:
                for rec in self.posts:
                    if rec is not None:
                        f.write(json.dumps(_with_image_file(rec, tmp), ensure_ascii=False) + "\n")
        return Path(folder)

    @classmethod
    def load(
        cls, folder: str | Path, *, expected_sha256: str | None = None, author_key: bytes | None = None
    ) -> LabelMemory:
        """Read a folder written by :meth:`save`, after verifying every file against its manifest.

        ``author_key`` (default ``$XIMGCTX_GOVERNANCE_KEY``) is needed to add posts or erase authors; the
        folder names the key's id only, and a memory loaded without that key can still be read."""
        folder = Path(folder)
        if not (folder / "memory.json").is_file():
            raise LabelMemoryError(
                f"{folder}: not a label memory (no memory.json); create one with "
                f"'ximgctx memory add --model DIR --data FILE'"
            )
        if expected_sha256 is not None:  # pinned: read exactly the bytes that were hashed
            try:
                pin = pinned_copy(folder, KIND, max_version=FORMAT_VERSION, expected_sha256=expected_sha256)
                with pin as m:
                    return cls._read(m.path, author_key)
            except ArtifactError as e:
                raise LabelMemoryError(str(e)) from None
        verify_artifact(folder, KIND, max_version=FORMAT_VERSION)
        return cls._read(folder, author_key)

    @classmethod
    def _read(cls, folder: Path, author_key: bytes | None) -> LabelMemory:
        from safetensors.numpy import load_file

        path = folder / "memory.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            memory = cls(
                [TaskSpec(**t) for t in meta["tasks"]],
                meta["dim"],
                MemoryConfig(**meta["config"]),
                meta.get("model_digest"),
            )
            entries = meta["entries"]
            size = meta.get("reference_size")
            memory.reference_size = None if size is None else int(size)
            memory.author_key = AuthorKey.for_saved(meta, author_key, str(path))
            memory.ids = [str(e["id"]) for e in entries]
            memory.labels = [dict(e["labels"]) for e in entries]
            memory.authors = [[str(d) for d in e.get("authors", [])] for e in entries]
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, ArtifactError):
                raise LabelMemoryError(str(e)) from None
            raise LabelMemoryError(
                f"{path}: not a valid version-{FORMAT_VERSION} {FORMAT} file ({e})"
            ) from None
        if meta.get("format") != FORMAT or meta.get("format_version") not in (2, FORMAT_VERSION):
            raise LabelMemoryError(f"{path}: not a version-{FORMAT_VERSION} {FORMAT} file")
        tensors = load_file(str(folder / "embeddings.safetensors"))
        emb = tensors["embeddings"]
        memory.center = tensors.get("center")
        if emb.shape != (len(entries), memory.dim):
            raise LabelMemoryError(
                f"{folder}: embeddings.safetensors is {emb.shape}, expected ({len(entries)}, {memory.dim})"
            )
        memory.posts = [None] * len(entries)
        posts_path = folder / "posts.jsonl"
        if posts_path.is_file() and posts_path.stat().st_size > 0:
            by_id = {
                p.id: _with_image_bytes(p.to_dict(), folder) for p in load_posts(posts_path, on_error="skip")
            }
            memory.posts = [by_id.get(pid) for pid in memory.ids]
        memory.embeddings = emb.astype(np.float32)
        return memory


_IMAGES = "images"  # inside a memory folder: images that came as bytes (the service's feedback), by digest


def _with_image_file(rec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A stored post whose image is bytes, with the bytes written into the memory folder and the image field
    naming that file (relative to posts.jsonl)."""
    image = rec.get("image")
    if not isinstance(image, (bytes, bytearray, memoryview)):
        return rec
    data = bytes(image)
    name = f"{_IMAGES}/{hashlib.sha256(data).hexdigest()[:32]}.img"
    (folder / _IMAGES).mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return {**rec, "image": name}


def _with_image_bytes(rec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The inverse on load: an image stored in the (verified) memory folder comes back as bytes, so the
    memory owns its images and a re-save writes them again."""
    image = rec.get("image")
    root = (folder / _IMAGES).resolve()
    if isinstance(image, str) and Path(image).resolve().parent == root and Path(image).is_file():
        return {**rec, "image": Path(image).read_bytes()}
    return rec
