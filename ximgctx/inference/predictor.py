"""Batched prediction with a trained context model.

``Predictor`` is the one place where inference runs the model: moderation, search, batch prediction
and the benchmark all go through :meth:`Predictor.run_batch`, so they share batching, device placement,
``torch.inference_mode`` and autocast. The collate step is the model's own processor (safe image decode,
capped text, tokens trimmed to the longest real sequence, identical replies encoded once); it never
drops or reorders a post, and whatever was wrong with a post is named in that post's result.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ximgctx.config import MODALITIES
from ximgctx.data.images import cap_text
from ximgctx.data.post import Post
from ximgctx.data.processor import PostBatch
from ximgctx.models.context_model import ContextModel, ContextOutput

logger = logging.getLogger(__name__)

__all__ = [
    "BatchResult",
    "PostPrediction",
    "Predictor",
    "TaskPrediction",
    "prediction_schema",
    "resolve_device",
    "resolve_dtype",
]

#: ``--dtype`` names -> torch dtypes.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: The problem recorded for a post whose text is empty (the processor masks it without a message).
EMPTY_TEXT = "text: empty; the learned null text embedding stands in for it"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> the first GPU when there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` or ``"auto"`` -> bf16 autocast on GPU (fp16 on GPUs without bf16), fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {['auto', *DTYPES]}, got {dtype!r}")
    return DTYPES[dtype]


def _batches(items: Iterable[Post], size: int) -> Iterator[list[Post]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass
class TaskPrediction:
    """One task's output for one post."""

    scores: dict[str, float]  # label -> calibrated probability (softmax or sigmoid after temperature)
    labels: list[str]  # multiclass: the argmax label; multilabel: every label with score >= its threshold

    def to_dict(self) -> dict[str, Any]:
        return {"scores": dict(self.scores), "labels": list(self.labels)}


@dataclass
class PostPrediction:
    """Everything predicted for one post, in the order posts were given."""

    id: str
    tasks: dict[str, TaskPrediction]  # task name -> prediction, in the model's task order
    inputs: dict[str, bool]  # modality -> True where the real input was used (False: null embedding)
    problems: list[str] = field(default_factory=list)  # what was wrong with the post; empty when nothing
    embedding: np.ndarray | None = None  # (H,) fused embedding, when asked for

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (the line ``ximgctx predict`` writes)."""
        out: dict[str, Any] = {
            "id": self.id,
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
            "inputs": dict(self.inputs),
            "problems": list(self.problems),
        }
        if self.embedding is not None:
            out["embedding"] = [float(x) for x in self.embedding]
        return out


@dataclass
class BatchResult:
    """One forward pass over a batch of posts, with the inputs that produced it."""

    posts: list[Post]
    batch: PostBatch  # on the model's device
    output: ContextOutput
    scores: dict[str, torch.Tensor]  # task -> (B, C) float32 calibrated probabilities
    problems: list[list[str]]  # per post: the processor's problems plus the predictor's (empty text)


def model_digest(path: str | Path) -> str | None:
    """SHA-256 of a saved model's ``manifest.json`` (which covers every weight file), or None."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return None
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


class Predictor:
    """Runs a :class:`~ximgctx.ContextModel` over posts in batches.

    Args:
        model: the model; it is put in eval mode and moved to ``device``.
        device: ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda:1"``...
        dtype: autocast dtype: ``"auto"`` is bf16 on GPU and fp32 (no autocast) on CPU.
        batch_size: posts per forward pass when a call does not say.
        prefetch: collate the next batch (image decode, tokenization) in a background thread while the
            model runs on the current one. ``None`` turns it on for GPUs only: on a few CPU cores the
            thread competes with the model's own threads.

    Example:
        >>> predictor = Predictor.from_pretrained("runs/quickstart/model")
        >>> [p.tasks["intent"].labels for p in predictor.predict(posts)]
    """

    def __init__(
        self,
        model: ContextModel,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        batch_size: int = 32,
        prefetch: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.prefetch = self.device.type == "cuda" if prefetch is None else prefetch
        self.model_dir: Path | None = None  # set by from_pretrained
        self.model_digest: str | None = None  # SHA-256 of the model folder's manifest, when loaded from one
        self.task_names = [spec.name for spec in model.config.tasks]

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        batch_size: int = 32,
        prefetch: bool | None = None,
        verify: bool = True,
        expected_sha256: str | None = None,
        trust_remote_arch: bool = False,
    ) -> Predictor:
        """Load a model folder written by ``ContextModel.save_pretrained`` (checksums verified; see
        :meth:`ContextModel.from_pretrained` for ``expected_sha256`` and ``trust_remote_arch``)."""
        dev = resolve_device(device)
        model = ContextModel.from_pretrained(
            path,
            device=dev,
            verify=verify,
            expected_sha256=expected_sha256,
            trust_remote_arch=trust_remote_arch,
        )
        predictor = cls(model, device=dev, dtype=dtype, batch_size=batch_size, prefetch=prefetch)
        predictor.model_dir = Path(path).resolve()
        predictor.model_digest = model_digest(path)
        return predictor

    # ---------------------------------------------------------------------------------------- core
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to ``self.dtype`` (a no-op context in fp32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def collate(self, posts: Sequence[Post]) -> PostBatch:
        """The model's processor over ``posts``, moved to the device."""
        return self.model.processor(list(posts)).to(self.device, non_blocking=True)

    def forward(self, batch: PostBatch, drop: Iterable[str] = ()) -> ContextOutput:
        """One forward pass under ``inference_mode`` and autocast; ``drop`` masks modalities."""
        with torch.inference_mode(), self.autocast():
            return self.model(batch, drop=tuple(drop))

    def scores(self, output: ContextOutput) -> dict[str, torch.Tensor]:
        """Calibrated per-task probabilities as float32 (B, C) tensors."""
        with torch.inference_mode():
            return {k: v.float() for k, v in self.model.scores(output.logits, calibrated=True).items()}

    def run_batch(self, posts: Sequence[Post], batch: PostBatch | None = None) -> BatchResult:
        """Collate (unless ``batch`` is given) and run one forward pass over ``posts``."""
        posts = list(posts)
        if batch is None:
            batch = self.collate(posts)
        output = self.forward(batch)
        problems = [list(p) for p in batch.problems]
        text_mask = batch.text_mask.tolist()
        for i, has_text in enumerate(text_mask):
            if not has_text:
                problems[i].append(EMPTY_TEXT)
        return BatchResult(
            posts=posts, batch=batch, output=output, scores=self.scores(output), problems=problems
        )

    def iter_batches(
        self, posts: Iterable[Post], batch_size: int | None = None, *, progress: bool = False
    ) -> Iterator[BatchResult]:
        """Yield one :class:`BatchResult` per batch, in input order (collating ahead when prefetching)."""
        size = batch_size or self.batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size!r}")
        from tqdm.auto import tqdm

        total = len(posts) if isinstance(posts, Sequence) else None
        with tqdm(total=total, disable=not progress, unit="post", desc="predict") as bar:
            for result in self._iter_batches(_batches(posts, size)):
                bar.update(len(result.posts))
                yield result

    def _iter_batches(self, chunks: Iterator[list[Post]]) -> Iterator[BatchResult]:
        if not self.prefetch:
            for chunk in chunks:
                yield self.run_batch(chunk)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ximgctx-collate") as pool:
            pending: tuple[list[Post], Future[PostBatch]] | None = None
            for chunk in chunks:
                nxt = (chunk, pool.submit(self.collate, chunk))
                if pending is not None:
                    yield self.run_batch(pending[0], pending[1].result())
                pending = nxt
            if pending is not None:
                yield self.run_batch(pending[0], pending[1].result())

    # ------------------------------------------------------------------------------------- results
    def results(self, result: BatchResult, *, embeddings: bool = False) -> list[PostPrediction]:
        """Turn one batch's scores into per-post :class:`PostPrediction` objects."""
        per_task = {name: result.scores[name].cpu().numpy() for name in self.task_names}  # task -> (B, C)
        thresholds = {
            name: self.model.heads[name].thresholds.float().cpu().numpy() for name in self.task_names
        }
        present = {m: result.output.embeddings.present[m].cpu().tolist() for m in MODALITIES}
        fused = result.output.fused.float().cpu().numpy() if embeddings else None  # (B, H)
        out = []
        for i, post in enumerate(result.posts):
            tasks = {}
            for name in self.task_names:
                spec = self.model.heads[name].spec
                row = per_task[name][i]  # (C,)
                if spec.kind == "multiclass":
                    chosen = [spec.labels[int(row.argmax())]]
                else:
                    chosen = [
                        lab for lab, s, t in zip(spec.labels, row, thresholds[name], strict=True) if s >= t
                    ]
                tasks[name] = TaskPrediction(
                    scores=dict(zip(spec.labels, row.tolist(), strict=True)), labels=chosen
                )
            out.append(
                PostPrediction(
                    id=post.id,
                    tasks=tasks,
                    inputs={m: bool(present[m][i]) for m in MODALITIES},
                    problems=result.problems[i],
                    embedding=None if fused is None else fused[i].copy(),
                )
            )
        return out

    def iter_predict(
        self,
        posts: Iterable[Post],
        batch_size: int | None = None,
        *,
        embeddings: bool = False,
        progress: bool = False,
    ) -> Iterator[PostPrediction]:
        """Predictions one post at a time, in input order, holding one batch in memory."""
        for result in self.iter_batches(posts, batch_size, progress=progress):
            yield from self.results(result, embeddings=embeddings)

    def predict(
        self,
        posts: Iterable[Post],
        batch_size: int | None = None,
        *,
        embeddings: bool = False,
        progress: bool = False,
    ) -> list[PostPrediction]:
        """Per post, per task: label scores and the labels above threshold.

        Args:
            posts: the posts; every one gets a result, in the same order, whatever is wrong with it.
            batch_size: posts per forward pass (``self.batch_size`` when None). Results do not depend on it
                beyond floating-point rounding.
            embeddings: also return each post's fused embedding.
            progress: show a progress bar.
        """
        return list(self.iter_predict(posts, batch_size, embeddings=embeddings, progress=progress))

    def embed(
        self,
        posts: Iterable[Post],
        batch_size: int | None = None,
        *,
        space: str = "fused",
        normalize: bool = False,
    ) -> np.ndarray:
        """Embeddings of ``posts`` as a float32 (N, dim) array.

        Args:
            space: ``"fused"``: the fusion output the heads read (N, H); ``"image"``: the unit-norm CLIP
                image embedding (N, D), the learned null image embedding where a post has no usable image.
            normalize: L2-normalise each row (what cosine search uses).
        """
        if space not in ("fused", "image"):
            raise ValueError(f"space must be 'fused' or 'image', got {space!r}")
        rows = []
        for result in self.iter_batches(posts, batch_size):
            x = result.output.fused if space == "fused" else result.output.embeddings.image
            x = x.float()
            rows.append((F.normalize(x, dim=-1) if normalize else x).cpu().numpy())
        dim = self.model.config.fusion.hidden_dim if space == "fused" else self.model.encoder.embed_dim
        return np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)

    # -------------------------------------------------------------------------------- query encoding
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm CLIP text embeddings (N, D): comparable with CLIP image embeddings."""
        cap = self.model.config.data.max_text_chars
        tokens = self.model.processor.tokenize([cap_text(t, cap) for t in texts]).to(self.device)
        with torch.inference_mode(), self.autocast():
            x = self.model.encoder.encode_text(tokens)
        return F.normalize(x.float(), dim=-1).cpu().numpy()


def prediction_schema(predictor: Predictor, *, embeddings: bool = False) -> Any:
    """The pyarrow schema of :meth:`PostPrediction.to_dict` records (Parquet output of ``ximgctx predict``)."""
    import pyarrow as pa

    tasks = pa.struct(
        [
            (
                spec.name,
                pa.struct(
                    [
                        ("scores", pa.struct([(lab, pa.float64()) for lab in spec.labels])),
                        ("labels", pa.list_(pa.string())),
                    ]
                ),
            )
            for spec in predictor.model.config.tasks
        ]
    )
    fields = [
        ("id", pa.string()),
        ("tasks", tasks),
        ("inputs", pa.struct([(m, pa.bool_()) for m in MODALITIES])),
        ("problems", pa.list_(pa.string())),
    ]
    if embeddings:
        fields.append(("embedding", pa.list_(pa.float32())))
    return pa.schema(fields)
