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

Fused embeddings are anisotropic: with the tiny models, any two ContextBench posts have a median cosine of
0.92 (attention fusion) to 0.99 (concat), so a raw-cosine threshold cannot tell a near-duplicate from a
stranger. The memory therefore subtracts a *centre*, the mean fused embedding of reference posts (a sample of
the pool, or the labeled posts themselves), before normalising. Centred, the median pair sits near 0, 99.9%
of pairs below 0.78-0.90, and a post with one more reply or one more character of text at a median of
0.93-0.99 from its original — hence the default threshold of 0.9. ``y_j`` is the label as the loss
reads it (one-hot, multi-hot, or a soft distribution from aggregated votes); multiclass scores stay
distributions.

:class:`MemoryPredictor` wraps a :class:`~ximgctx.Predictor` with a memory and exposes the same ``predict``
/ ``iter_predict`` / ``iter_batches`` / ``embed`` API, so moderation and batch prediction can use it as is.

On disk a memory is a folder (no pickle)::

    memory.json             config, tasks, the model it was built with, ids and labels of the entries
    embeddings.safetensors  (N, H) float32 fused embeddings as the model gave them, and the (H,) centre
    posts.jsonl             the labeled posts, so :meth:`LabelMemory.refresh` can re-embed them after retraining

Its default place is beside the model folder (``<model>.memory``), not inside it: a saved model refuses to
load with unlisted weight files in its folder. The embeddings belong to the model that computed them;
loading a memory with another model is refused until it is refreshed.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ximgctx.config import TaskSpec
from ximgctx.data.post import LabelValue, Post, load_posts, post_from_dict
from ximgctx.data.processor import LabelError, encode_label

logger = logging.getLogger(__name__)

__all__ = ["LabelMemory", "MemoryConfig", "MemoryPredictor", "default_memory_dir"]

FORMAT = "ximgctx-label-memory"
FORMAT_VERSION = 1
_MIN_REFERENCE = 32  # fewer reference posts than this give a noisy centre (a warning says so)


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

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"memory weight must be in [0, 1], got {self.weight!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"memory k must be a positive integer, got {self.k!r}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"memory threshold is a cosine similarity in [-1, 1], got {self.threshold!r}")
        if not self.temperature > 0:
            raise ValueError(f"memory temperature must be positive, got {self.temperature!r}")

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
        self.embeddings = np.zeros((0, self.dim), dtype=np.float32)  # (N, H) raw fused embeddings
        self.center: np.ndarray | None = None  # (H,) subtracted before normalising; None: raw cosine
        self._index: dict[
            str, tuple[Any, np.ndarray, np.ndarray]
        ] = {}  # task -> (faiss index, rows, targets)

    @classmethod
    def for_predictor(cls, predictor: Any, config: MemoryConfig | None = None) -> LabelMemory:
        """An empty memory matching a predictor's model."""
        base = getattr(predictor, "predictor", predictor)
        return cls(
            base.model.config.tasks,
            base.model.config.fusion.hidden_dim,
            config,
            getattr(base, "model_digest", None),
        )

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------------------------- adding
    def add_embeddings(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        labels: Sequence[dict[str, LabelValue]],
        posts: Sequence[dict[str, Any] | None] | None = None,
    ) -> int:
        """Add (or replace, by id: the latest label wins) entries from precomputed fused embeddings (N, H).

        Labels for tasks the memory does not know, or that do not fit their task, are dropped with a warning;
        an entry left with no label is not added. Returns how many entries were added or replaced.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(len(ids), -1)
        if embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings have {embeddings.shape[1]} dimensions; this memory holds {self.dim}"
            )
        position = {pid: i for i, pid in enumerate(self.ids)}
        rows, added = [], 0
        for j, pid in enumerate(ids):
            kept: dict[str, LabelValue] = {}
            for task, value in labels[j].items():
                if task not in self.tasks:
                    continue
                try:
                    encode_label(value, self.tasks[task])
                except LabelError as e:
                    logger.warning("label memory: post %r: %s; label not added", pid, e)
                    continue
                kept[task] = value
            if not kept:
                continue
            record = posts[j] if posts is not None else None
            if pid in position:
                i = position[pid]
                self.labels[i], self.posts[i] = kept, record
                rows.append((i, embeddings[j]))
            else:
                position[pid] = len(self.ids)
                self.ids.append(pid)
                self.labels.append(kept)
                self.posts.append(record)
                rows.append((position[pid], embeddings[j]))
            added += 1
        if rows:
            grown = np.zeros((len(self.ids), self.dim), dtype=np.float32)
            grown[: len(self.embeddings)] = self.embeddings
            for i, vec in rows:
                grown[i] = vec
            self.embeddings = grown
            self._index.clear()
        return added

    def set_center(self, embeddings: np.ndarray) -> None:
        """Centre similarities on the mean of these fused embeddings (N, H) of reference posts."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim or len(embeddings) == 0:
            raise ValueError(
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
        self._index.clear()

    def add(
        self,
        predictor: Any,
        posts: Iterable[Post],
        batch_size: int | None = None,
        *,
        reference: Iterable[Post] | None = None,
    ) -> int:
        """Embed labeled ``posts`` with ``predictor`` and add them. Posts without labels are skipped.

        The first time (no centre yet) the centre is set from ``reference`` posts (a sample of the posts the
        memory will be asked about), or from the added posts themselves when none are given.
        """
        posts = list(posts)
        labeled = [p for p in posts if any(t in self.tasks for t in p.labels)]
        base = getattr(predictor, "predictor", predictor)
        self._check_model(base)
        emb = (
            base.embed(labeled, batch_size) if labeled else np.zeros((0, self.dim), dtype=np.float32)
        )  # (N, H)
        if self.center is None:
            if reference is not None:
                self.set_center(base.embed(list(reference), batch_size))
            elif labeled:
                self.set_center(emb)
        if not labeled:
            return 0
        if self.model_digest is None:
            self.model_digest = getattr(base, "model_digest", None)
        return self.add_embeddings(
            [p.id for p in labeled], emb, [p.labels for p in labeled], [p.to_dict() for p in labeled]
        )

    def remove(self, ids: Iterable[str]) -> int:
        """Forget entries by post id; returns how many were removed."""
        drop = set(ids)
        keep = [i for i, pid in enumerate(self.ids) if pid not in drop]
        removed = len(self.ids) - len(keep)
        self.ids = [self.ids[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
        self.posts = [self.posts[i] for i in keep]
        self.embeddings = self.embeddings[keep]
        self._index.clear()
        return removed

    def refresh(
        self, predictor: Any, batch_size: int | None = None, *, reference: Iterable[Post] | None = None
    ) -> int:
        """Re-embed every stored post with ``predictor`` (after retraining) and recompute the centre from
        ``reference`` posts (or the stored ones); entries stored without their post are dropped. Returns how
        many entries remain."""
        base = getattr(predictor, "predictor", predictor)
        kept = [
            (pid, lab, rec)
            for pid, lab, rec in zip(self.ids, self.labels, self.posts, strict=True)
            if rec is not None
        ]
        if len(kept) < len(self.ids):
            logger.warning(
                "label memory: %d entries have no stored post and were dropped", len(self.ids) - len(kept)
            )
        posts = [post_from_dict(rec) for _, _, rec in kept]
        emb = base.embed(posts, batch_size) if posts else np.zeros((0, self.dim), dtype=np.float32)
        self.ids, self.labels, self.posts = [], [], []
        self.embeddings = np.zeros((0, self.dim), dtype=np.float32)
        self.model_digest = getattr(base, "model_digest", None)
        self.center = None
        if reference is not None:
            self.set_center(base.embed(list(reference), batch_size))
        elif len(emb):
            self.set_center(emb)
        self.add_embeddings([k[0] for k in kept], emb, [k[1] for k in kept], [k[2] for k in kept])
        return len(self)

    # ------------------------------------------------------------------------------------ reading
    def _task_index(self, task: str) -> tuple[Any, np.ndarray, np.ndarray] | None:
        if task not in self._index:
            import faiss

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
        """Heads' calibrated scores (task -> (B, C)) moved toward the labels of each post's labeled neighbours;
        ``fused`` are the posts' fused embeddings (B, H). Rows with no neighbour above the threshold are
        returned unchanged (the same values, bit for bit)."""
        if not len(self):
            return scores
        q = self._unit(fused)
        cfg = self.config
        out = dict(scores)
        for task, p in scores.items():
            found = self._task_index(task) if task in self.tasks else None
            if found is None:
                continue
            index, _, targets = found
            sims, idx = index.search(q, min(cfg.k, len(targets)))  # (B, k)
            valid = (idx >= 0) & (sims >= cfg.threshold)
            kernel = np.where(valid, np.exp((np.minimum(sims, 1.0) - 1.0) / cfg.temperature), 0.0)  # (B, k)
            alpha = cfg.weight * kernel.max(axis=1)  # (B,)
            moved = np.nonzero(alpha > 0)[0]
            if len(moved) == 0:
                continue
            kern = kernel[moved]  # (M, k)
            mem = (kern[..., None] * targets[np.maximum(idx[moved], 0)]).sum(1) / kern.sum(
                1, keepdims=True
            )  # (M, C)
            new = p.clone()
            a = torch.as_tensor(alpha[moved], dtype=p.dtype, device=p.device)[:, None]  # (M, 1)
            rows = torch.as_tensor(moved, device=p.device)
            new[rows] = (1 - a) * p[rows] + a * torch.as_tensor(mem, dtype=p.dtype, device=p.device)
            out[task] = new
        return out

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
    def _check_model(self, predictor: Any) -> None:
        dim = predictor.model.config.fusion.hidden_dim
        if dim != self.dim:
            raise ValueError(
                f"this label memory holds {self.dim}-d embeddings; the model's fused embedding is {dim}-d"
            )
        digest = getattr(predictor, "model_digest", None)
        if self.model_digest and digest and digest != self.model_digest and len(self):
            raise ValueError(
                f"this label memory was built with model {self.model_digest[:12]}..., not {digest[:12]}... "
                f"(its embeddings mean nothing to another model); call memory.refresh(predictor) to re-embed"
            )

    def save(self, folder: str | Path) -> Path:
        """Write ``memory.json``, ``embeddings.safetensors`` and ``posts.jsonl`` (atomically)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "dim": self.dim,
            "model_digest": self.model_digest,
            "tasks": [asdict(t) for t in self.tasks.values()],
            "entries": [{"id": pid, "labels": lab} for pid, lab in zip(self.ids, self.labels, strict=True)],
        }
        (tmp / "memory.json").write_text(
            json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        tensors = {"embeddings": np.ascontiguousarray(self.embeddings)}
        if self.center is not None:
            tensors["center"] = np.ascontiguousarray(self.center, dtype=np.float32)
        save_file(tensors, str(tmp / "embeddings.safetensors"))
        with open(tmp / "posts.jsonl", "w", encoding="utf-8") as f:
            for rec in self.posts:
                if rec is not None:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LabelMemory:
        """Read a folder written by :meth:`save`."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        path = folder / "memory.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder}: not a label memory (no memory.json); create one with "
                f"'ximgctx memory add --model DIR --data FILE'"
            )
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: not a version-{FORMAT_VERSION} {FORMAT} file")
        memory = cls(
            [TaskSpec(**t) for t in meta["tasks"]],
            meta["dim"],
            MemoryConfig(**meta["config"]),
            meta.get("model_digest"),
        )
        tensors = load_file(str(folder / "embeddings.safetensors"))
        emb = tensors["embeddings"]
        memory.center = tensors.get("center")
        entries = meta["entries"]
        if emb.shape != (len(entries), memory.dim):
            raise ValueError(
                f"{folder}: embeddings.safetensors is {emb.shape}, expected ({len(entries)}, {memory.dim})"
            )
        records: list[dict[str, Any] | None] = [None] * len(entries)
        posts_path = folder / "posts.jsonl"
        if posts_path.is_file() and posts_path.stat().st_size > 0:
            stored = load_posts(posts_path, on_error="skip")
            by_id = {p.id: p.to_dict() for p in stored}
            records = [by_id.get(e["id"]) for e in entries]
        memory.ids = [e["id"] for e in entries]
        memory.labels = [e["labels"] for e in entries]
        memory.posts = records
        memory.embeddings = emb.astype(np.float32)
        return memory


class MemoryPredictor:
    """A :class:`~ximgctx.Predictor` whose scores are blended with a :class:`LabelMemory`.

    Same ``predict`` / ``iter_predict`` / ``iter_batches`` / ``embed`` API as the predictor it wraps; labels
    above threshold are decided on the blended scores.

    Example:
        >>> predictor = MemoryPredictor.from_pretrained("runs/quickstart/model")  # + model.memory if present
        >>> predictor.memory.add(predictor, corrections); predictor.predict(posts)
    """

    def __init__(self, predictor: Any, memory: LabelMemory | None = None) -> None:
        self.predictor = predictor
        self.memory = memory if memory is not None else LabelMemory.for_predictor(predictor)
        self.memory._check_model(predictor)

    @classmethod
    def load(cls, predictor: Any, folder: str | Path) -> MemoryPredictor:
        return cls(predictor, LabelMemory.load(folder))

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, memory_dir: str | Path | None = None, **predictor_options: Any
    ) -> MemoryPredictor:
        """Load a model folder and its memory (``memory_dir``, else ``<model_dir>.memory`` when it exists,
        else an empty memory). ``predictor_options`` go to ``Predictor.from_pretrained`` (device, dtype...)."""
        from ximgctx.inference.predictor import Predictor

        predictor = Predictor.from_pretrained(model_dir, **predictor_options)
        folder = Path(memory_dir) if memory_dir is not None else default_memory_dir(model_dir)
        if memory_dir is not None or (folder / "memory.json").is_file():
            return cls.load(predictor, folder)
        return cls(predictor)

    # the wrapped predictor's attributes and steps, so Moderator and SearchIndex can take a MemoryPredictor
    @property
    def model(self) -> Any:
        return self.predictor.model

    @property
    def task_names(self) -> list[str]:
        return self.predictor.task_names

    @property
    def batch_size(self) -> int:
        return self.predictor.batch_size

    @property
    def device(self) -> Any:
        return self.predictor.device

    @property
    def model_dir(self) -> Any:
        return self.predictor.model_dir

    @property
    def model_digest(self) -> str | None:
        return self.predictor.model_digest

    def autocast(self) -> Any:
        return self.predictor.autocast()

    def collate(self, posts: Sequence[Post]) -> Any:
        return self.predictor.collate(posts)

    def forward(self, batch: Any, drop: Iterable[str] = ()) -> Any:
        return self.predictor.forward(batch, drop)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.predictor.encode_texts(texts)

    def scores(self, output: Any) -> dict[str, torch.Tensor]:
        """Calibrated scores of a forward pass, blended with the memory (modality ablations included)."""
        return self.memory.blend(self.predictor.scores(output), output.fused)

    def results(self, result: Any, *, embeddings: bool = False) -> list[Any]:
        return self.predictor.results(result, embeddings=embeddings)

    def run_batch(self, posts: Sequence[Post], batch: Any = None) -> Any:
        result = self.predictor.run_batch(posts, batch)
        return replace(result, scores=self.memory.blend(result.scores, result.output.fused))

    def iter_batches(self, posts: Iterable[Post], batch_size: int | None = None) -> Iterator[Any]:
        """The wrapped predictor's batch results with memory-blended scores."""
        for result in self.predictor.iter_batches(posts, batch_size):
            yield replace(result, scores=self.memory.blend(result.scores, result.output.fused))

    def iter_predict(
        self, posts: Iterable[Post], batch_size: int | None = None, *, embeddings: bool = False
    ) -> Iterator[Any]:
        for result in self.iter_batches(posts, batch_size):
            yield from self.predictor.results(result, embeddings=embeddings)

    def predict(
        self, posts: Iterable[Post], batch_size: int | None = None, *, embeddings: bool = False
    ) -> list[Any]:
        """Like ``Predictor.predict``, with the memory's labeled neighbours blended into the scores."""
        return list(self.iter_predict(posts, batch_size, embeddings=embeddings))

    def embed(self, posts: Iterable[Post], batch_size: int | None = None, **options: Any) -> np.ndarray:
        """The wrapped predictor's embeddings (the memory does not change them)."""
        return self.predictor.embed(posts, batch_size, **options)
