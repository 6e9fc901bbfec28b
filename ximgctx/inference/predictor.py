"""Batched prediction with a trained context model.

``Predictor`` is the one place where inference batches posts: moderation, search, batch prediction and the
benchmark all go through :meth:`Predictor.run_batch`, so they share batching, device placement,
``torch.inference_mode`` and autocast. The forward pass itself is :func:`ximgctx.models.forward.run_forward`,
the same one evaluation runs. The collate step is the model's own processor (safe image decode,
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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ximgctx._distributed import resolve_device
from ximgctx.config import MODALITIES
from ximgctx.data.problems import Problem
from ximgctx.data.processor import PostBatch, PostInput, as_post
from ximgctx.data.record import Post
from ximgctx.data.text import cap_text
from ximgctx.errors import ConfigError
from ximgctx.models.context_model import ContextModel, ContextOutput
from ximgctx.models.decision import decided_labels
from ximgctx.models.forward import run_forward
from ximgctx.models.modalities import ALL, Modalities

if TYPE_CHECKING:
    from ximgctx.inference.memory import LabelMemory
    from ximgctx.inference.reply_cache import TextCache

logger = logging.getLogger(__name__)

__all__ = [
    "BatchResult",
    "PostPrediction",
    "Predictor",
    "TaskPrediction",
    "abstain_reason",
    "prediction_schema",
    "resolve_device",
    "resolve_dtype",
]

#: ``--dtype`` names -> torch dtypes.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: The problem recorded for a post whose text is empty (the processor masks it without a message).
EMPTY_TEXT = Problem("text", "empty", "the learned null text embedding stands in for it")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` or ``"auto"`` -> bf16 autocast on GPU (fp16 on GPUs without bf16), fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {['auto', *DTYPES]}, got {dtype!r}")
    return DTYPES[dtype]


def abstain_reason(post: Post) -> str:
    """Why an image-sourced task gives no prediction for a post whose image is not usable."""
    if post.image is None:
        return "no image: the post has none"
    return "no usable image: it could not be read (see problems)"


def _batches(items: Iterable[PostInput], size: int) -> Iterator[list[Post]]:
    it = (as_post(item, i) for i, item in enumerate(items))  # dicts and PIL images become posts (checked)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass
class TaskPrediction:
    """One task's output for one post.

    A task the post gives no evidence for *abstains*: an image-sourced task (``TaskSpec.source="image"``)
    on a post without a usable image has no ``labels`` and ``abstained`` says why. Its ``scores`` are
    present but marked by ``abstained``: they are the heads' output on the learned null image embedding,
    kept for diagnostics and ablations, and are not a prediction about the post (nothing downstream
    decides on them: search filters, moderation categories and labels all skip an abstained task).
    """

    scores: dict[str, float]  # label -> calibrated probability (softmax or sigmoid after temperature)
    labels: list[str]  # multiclass: the argmax label; multilabel: every label with score >= its threshold
    abstained: str | None = None  # why the task gave no labels (e.g. "no image: ..."); None: it predicted

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": dict(self.scores),
            "labels": list(self.labels),
            "abstained": self.abstained,
        }


@dataclass
class PostPrediction:
    """Everything predicted for one post, in the order posts were given."""

    id: str
    tasks: dict[str, TaskPrediction]  # task name -> prediction, in the model's task order
    inputs: dict[str, bool]  # modality -> True where the real input was used (False: null embedding)
    problems: list[str] = field(default_factory=list)  # str(Problem) for each thing wrong with the post
    embedding: np.ndarray | None = None  # (H,) fused embedding, when asked for

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (the line ``ximgctx predict`` writes)."""
        out: dict[str, Any] = {
            "id": self.id,
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
            "inputs": dict(self.inputs),
            "problems": [str(p) for p in self.problems],
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
    problems: list[list[Problem]]  # per post: the processor's problems plus the predictor's (empty text)
    # per post: the label-memory entry that moved its scores most, {"entry", "similarity", "weight"}, or None
    memory_effects: list[dict[str, Any] | None] | None = None


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
        memory: a :class:`~ximgctx.inference.memory.LabelMemory` whose labeled neighbours are blended into
            :meth:`scores` (so every consumer, from ``predict`` to moderation explanations, reads the
            blended scores); None: the heads' scores alone.
        text_cache: a :class:`~ximgctx.inference.reply_cache.TextCache` of text-tower outputs reused across
            batches (stock replies such as "lol" are encoded once; scores identical bit for bit to
            ``TextCache(max_entries=0)``), which may be shared by predictors (entries are keyed by model).
            ``"auto"`` (for now): no cache, because the row-exact calls cost more than the per-batch length
            grouping saves on CPU unless replies repeat across batches far more than within them (``ximgctx
            bench inference`` measures both); None or False: no cache, texts grouped by length per batch.

    Example:
        >>> predictor = Predictor.from_pretrained("runs/quickstart/model")
        >>> [p.tasks["intent"].labels for p in predictor.predict(posts)]
        >>> predictor.memory = LabelMemory.load("runs/quickstart/model.memory")  # corrections apply at once
    """

    def __init__(
        self,
        model: ContextModel,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        batch_size: int = 32,
        prefetch: bool | None = None,
        memory: LabelMemory | None = None,
        text_cache: TextCache | str | bool | None = "auto",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.prefetch = self.device.type == "cuda" if prefetch is None else prefetch
        self.model_dir: Path | None = None  # set by from_pretrained
        self.model_digest: str | None = None  # SHA-256 of the model folder's manifest, when loaded from one
        self.task_names = [spec.name for spec in model.config.tasks]
        self._memory: LabelMemory | None = None
        self.memory = memory
        self.text_cache: TextCache | None = self._text_cache(text_cache)

    def _text_cache(self, text_cache: TextCache | str | bool | None) -> TextCache | None:
        from ximgctx.inference.reply_cache import TextCache

        if text_cache is None or text_cache is False:
            return None
        if text_cache == "auto":
            return None
        if text_cache is True:
            return TextCache()
        if not isinstance(text_cache, TextCache):
            raise ConfigError(
                f"text_cache must be a TextCache, 'auto', True, False or None; got {text_cache!r}"
            )
        return text_cache

    @property
    def memory(self) -> LabelMemory | None:
        """The label memory blended into :meth:`scores`, or None."""
        return self._memory

    @memory.setter
    def memory(self, memory: LabelMemory | None) -> None:
        if memory is not None:
            memory._check_model(self)  # same embedding size, and built with this model when both are known
        self._memory = memory

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
        memory: LabelMemory | str | Path | bool | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        text_cache: TextCache | str | bool | None = "auto",
    ) -> Predictor:
        """Load a model folder written by ``ContextModel.save_pretrained``, or a hub repo id (``"org/name"``)
        holding one (checksums verified; see :meth:`ContextModel.from_pretrained` for ``expected_sha256``,
        ``trust_remote_arch``, ``revision`` and ``cache_dir``).

        Args:
            memory: a label memory, or a memory folder to load (verified), or True for the model's own
                (``<path>.memory`` beside the model folder, when it exists); None or False: no memory.
        """
        from ximgctx.models.hub import resolve_model

        # a hub id becomes the verified snapshot in the Hugging Face cache: model_dir and model_digest name it
        path, verified = resolve_model(
            path, revision=revision, cache_dir=cache_dir, expected_sha256=expected_sha256
        )
        if verified:  # links into the cache's blobs included
            verify, expected_sha256 = False, None
        dev = resolve_device(device)
        model = ContextModel.from_pretrained(
            path,
            device=dev,
            verify=verify,
            expected_sha256=expected_sha256,
            trust_remote_arch=trust_remote_arch,
        )
        predictor = cls(
            model, device=dev, dtype=dtype, batch_size=batch_size, prefetch=prefetch, text_cache=text_cache
        )
        predictor.model_dir = Path(path).resolve()
        predictor.model_digest = model_digest(path)
        if memory is not None and memory is not False:
            from ximgctx.inference.memory import LabelMemory, default_memory_dir

            if memory is True:
                folder = default_memory_dir(path)
                memory = LabelMemory.load(folder) if (folder / "memory.json").is_file() else None
            elif not isinstance(memory, LabelMemory):
                memory = LabelMemory.load(memory)
            predictor.memory = memory
        return predictor

    # ---------------------------------------------------------------------------------------- core
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to ``self.dtype`` (a no-op context in fp32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def collate(self, posts: Sequence[Post]) -> PostBatch:
        """The model's processor over ``posts``, moved to the device."""
        # labels play no part in a prediction: one that does not fit its task is a problem of that post
        batch = self.model.processor(list(posts), invalid_labels="drop")
        return batch.to(self.device, non_blocking=True)

    def forward(self, batch: PostBatch, modalities: Modalities | str | Iterable[str] = ALL) -> ContextOutput:
        """One forward pass under ``inference_mode`` and autocast, reading only ``modalities`` (the kept
        ones: a :class:`~ximgctx.models.modalities.Modalities`, ``"image+text"`` or ``["image", "text"]``);
        the others are replaced by their learned null embeddings."""
        cache = self.text_cache
        text_encoder = None
        if cache is not None and not self.model.training:
            text_encoder = cache.encoder_for(self.model.encoder, self.dtype)
        with torch.inference_mode():
            return run_forward(self.model, batch, modalities, dtype=self.dtype, text_encoder=text_encoder)

    def scores(self, output: ContextOutput) -> dict[str, torch.Tensor]:
        """Calibrated per-task probabilities as float32 (B, C) tensors, blended with the label memory when
        the predictor has one (modality ablations included: they go through here too)."""
        with torch.inference_mode():
            scores = {k: v.float() for k, v in self.model.scores(output.logits, calibrated=True).items()}
        if self._memory is not None:
            scores = self._memory.blend(scores, output.fused)
        return scores

    def scores_explained(
        self, output: ContextOutput
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any] | None] | None]:
        """:meth:`scores`, and per post the label-memory entry that moved them most
        (:meth:`~ximgctx.inference.memory.LabelMemory.blend_explained`; None without a memory)."""
        with torch.inference_mode():
            scores = {k: v.float() for k, v in self.model.scores(output.logits, calibrated=True).items()}
        if self._memory is None:
            return scores, None
        return self._memory.blend_explained(scores, output.fused)

    def run_batch(self, posts: Sequence[PostInput], batch: PostBatch | None = None) -> BatchResult:
        """Collate (unless ``batch`` is given) and run one forward pass over ``posts``."""
        parsed = [as_post(p, i) for i, p in enumerate(posts)]
        if batch is None:
            batch = self.collate(parsed)
        output = self.forward(batch)
        problems = [list(p) for p in batch.problems]
        text_mask = batch.text_mask.tolist()
        for i, has_text in enumerate(text_mask):
            if not has_text:
                problems[i].append(EMPTY_TEXT)
        scores, effects = self.scores_explained(output)
        return BatchResult(
            posts=parsed, batch=batch, output=output, scores=scores, problems=problems, memory_effects=effects
        )

    def iter_batches(
        self, posts: Iterable[PostInput], batch_size: int | None = None, *, progress: bool = False
    ) -> Iterator[BatchResult]:
        """Yield one :class:`BatchResult` per batch, in input order (collating ahead when prefetching)."""
        size = batch_size or self.batch_size
        if size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {size!r}")
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
        """Turn one batch's scores into per-post :class:`PostPrediction` objects.

        Labels are decided by :func:`ximgctx.models.decision.decide` (the rule evaluation counts with). An
        image-sourced task abstains on a post without a usable image (``batch.image_mask`` False).
        """
        present = {m: result.output.embeddings.present[m].cpu().tolist() for m in MODALITIES}
        usable_image = result.batch.image_mask.cpu().tolist()  # (B,) the processor decoded a usable image
        per_task: dict[str, tuple[list[list[float]], list[list[str]]]] = {}  # task -> (scores, labels)
        for name in self.task_names:
            head = self.model.heads[name]
            probs = result.scores[name].cpu().numpy()  # (B, C)
            thresholds = head.thresholds.float().cpu().numpy()  # (C,)
            per_task[name] = (probs.tolist(), decided_labels(head.spec, probs, thresholds))
        fused = result.output.fused.float().cpu().numpy() if embeddings else None  # (B, H)
        out = []
        for i, post in enumerate(result.posts):
            missing = None if usable_image[i] else abstain_reason(post)
            tasks = {}
            for name in self.task_names:
                spec = self.model.heads[name].spec
                rows, chosen = per_task[name]
                scores = dict(zip(spec.labels, rows[i], strict=True))
                if spec.source == "image" and missing is not None:
                    tasks[name] = TaskPrediction(scores=scores, labels=[], abstained=missing)
                else:
                    tasks[name] = TaskPrediction(scores=scores, labels=chosen[i])
            out.append(
                PostPrediction(
                    id=post.id,
                    tasks=tasks,
                    inputs={m: bool(present[m][i]) for m in MODALITIES},
                    problems=[str(p) for p in result.problems[i]],
                    embedding=None if fused is None else fused[i].copy(),
                )
            )
        return out

    def iter_predict(
        self,
        posts: Iterable[PostInput],
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
        posts: Iterable[PostInput],
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
        posts: Iterable[PostInput],
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
            raise ConfigError(f"space must be 'fused' or 'image', got {space!r}")
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
        cap = self.model.config.limits.max_text_chars
        tokens = self.model.processor.tokenize([cap_text(t, cap) for t in texts]).to(self.device)
        with torch.inference_mode(), self.autocast():
            x = self.model.encoder.encode_text(tokens)
        return F.normalize(x.float(), dim=-1).cpu().numpy()


def prediction_schema(predictor: Predictor, *, embeddings: bool = False) -> Any:
    """The pyarrow schema of :meth:`PostPrediction.to_dict` records (Parquet output of ``ximgctx
    predict``)."""
    import pyarrow as pa

    tasks = pa.struct(
        [
            (
                spec.name,
                pa.struct(
                    [
                        ("scores", pa.struct([(lab, pa.float64()) for lab in spec.labels])),
                        ("labels", pa.list_(pa.string())),
                        ("abstained", pa.string()),
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
