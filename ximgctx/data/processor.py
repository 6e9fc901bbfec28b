"""From posts to tensors: safe image decoding, capped and trimmed text, deduplicated replies, label targets.

``PostProcessor(posts) -> PostBatch`` is the collate function of every loader in ximgctx (training,
evaluation, inference), so they cannot drift apart. It never drops or reorders a post: whatever is wrong
with one (a corrupt image, a missing file, 1,000 replies, an unknown label) is recorded in
``batch.problems[i]`` and the post goes on with that part masked.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ximgctx.config import DataConfig, TaskSpec
from ximgctx.data.images import ImageDecodeError, ImageLimits, cap_text, load_image
from ximgctx.data.post import LabelValue, Post

logger = logging.getLogger(__name__)

__all__ = ["LabelError", "PostBatch", "PostProcessor", "encode_label"]


class LabelError(ValueError):
    """A label value does not fit its task (unknown label, several labels for a multiclass task...)."""


@dataclass
class PostBatch:
    """A collated batch. Shapes use B posts, K reply slots, U unique replies, L / Lr token lengths."""

    ids: list[str]
    pixels: torch.Tensor  # (B, 3, S, S); zeros where the image is missing
    image_mask: torch.Tensor  # (B,) True where a usable image was decoded
    text_tokens: torch.Tensor  # (B, L) trimmed to the longest real sequence
    text_mask: torch.Tensor  # (B,) True where the post text is non-empty
    reply_tokens: torch.Tensor  # (U, Lr) one row per distinct reply string in the batch
    reply_index: torch.Tensor  # (B, K) row of reply_tokens for each reply slot (0 in padded slots)
    reply_mask: torch.Tensor  # (B, K) True for real reply slots
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> (B, C)
    label_mask: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> (B,) True where labeled
    problems: list[list[str]] = field(default_factory=list)  # per post: what was wrong with it

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PostBatch:
        """Move every tensor (Accelerate's ``send_to_device`` calls this)."""

        def move(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.to(device, non_blocking=non_blocking)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x

        return PostBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def select(self, index: Sequence[int]) -> PostBatch:
        """The posts ``index`` (positions, in that order) as a batch of their own, keeping only the replies
        they use (``reply_tokens`` rows are renumbered)."""
        index = list(index)
        idx = torch.tensor(index, dtype=torch.long, device=self.pixels.device)
        reply_index = self.reply_index[idx]  # (n, K)
        reply_mask = self.reply_mask[idx]  # (n, K)
        used = torch.unique(reply_index[reply_mask])  # (U',) sorted rows of reply_tokens still needed
        remap = torch.zeros(self.reply_tokens.shape[0], dtype=torch.long, device=idx.device)
        remap[used] = torch.arange(used.numel(), device=idx.device)
        return PostBatch(
            ids=[self.ids[i] for i in index],
            pixels=self.pixels[idx],
            image_mask=self.image_mask[idx],
            text_tokens=self.text_tokens[idx],
            text_mask=self.text_mask[idx],
            reply_tokens=self.reply_tokens[used],
            reply_index=torch.where(reply_mask, remap[reply_index], torch.zeros_like(reply_index)),
            reply_mask=reply_mask,
            targets={k: v[idx] for k, v in self.targets.items()},
            label_mask={k: v[idx] for k, v in self.label_mask.items()},
            problems=[self.problems[i] for i in index],
        )


def encode_label(value: LabelValue, spec: TaskSpec) -> torch.Tensor:
    """One post's label for ``spec`` as a (C,) target: one-hot, multi-hot, or a distribution.

    Raises:
        LabelError: an unknown label, or several labels for a multiclass task.
    """
    index = {name: i for i, name in enumerate(spec.labels)}
    target = torch.zeros(spec.num_labels)

    def idx(label: str) -> int:
        if label not in index:
            raise LabelError(f"unknown label {label!r} for task {spec.name!r}; known: {spec.labels}")
        return index[label]

    if isinstance(value, str):
        target[idx(value)] = 1.0
    elif isinstance(value, list):
        if spec.kind == "multiclass" and len(set(value)) != 1:
            raise LabelError(
                f"task {spec.name!r} is multiclass but the post has labels {value!r}; "
                f"give one label or a {{label: probability}} distribution"
            )
        for label in value:
            target[idx(label)] = 1.0
    elif isinstance(value, dict):
        for label, p in value.items():
            target[idx(label)] = float(p)
        if spec.kind == "multiclass":
            target = target / target.sum().clamp(min=1e-12)
        elif float(target.max()) > 1.0:
            raise LabelError(
                f"task {spec.name!r} is multilabel: per-label probabilities must be <= 1, got {value!r}"
            )
    else:  # pragma: no cover - post validation rejects other types
        raise LabelError(f"task {spec.name!r}: unsupported label value {value!r}")
    return target


class PostProcessor:
    """Turns posts into a :class:`PostBatch`.

    Args:
        tokenizer: open_clip tokenizer: ``tokenizer(list_of_str) -> (N, context_length)`` ids, 0 = padding.
        image_transform: PIL image -> (3, S, S) tensor (open_clip's eval preprocessing).
        image_size: S.
        data: caps on replies, text and images.
        tasks: the tasks whose labels become targets.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_transform: Callable[[Any], torch.Tensor],
        image_size: int,
        data: DataConfig,
        tasks: Sequence[TaskSpec],
    ) -> None:
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.image_size = image_size
        self.data = data
        self.tasks = list(tasks)
        self.limits = ImageLimits(max_pixels=data.image_max_pixels, max_bytes=data.image_max_bytes)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(N, L) ids trimmed to the longest real sequence (at least 1 column)."""
        if not texts:
            return torch.zeros(0, 1, dtype=torch.long)
        tokens = self.tokenizer(texts)
        lengths = (tokens != 0).sum(1)
        return tokens[:, : max(int(lengths.max()), 1)].contiguous()

    def _image(self, post: Post, problems: list[str]) -> torch.Tensor | None:
        if post.image is None:
            return None
        try:
            image = load_image(post.image, self.limits)
        except ImageDecodeError as e:
            problems.append(f"image: {e.reason}: {e}")
            return None
        return self.image_transform(image)

    def __call__(self, posts: Sequence[Post]) -> PostBatch:
        b = len(posts)
        s = self.image_size
        pixels = torch.zeros(b, 3, s, s)
        image_mask = torch.zeros(b, dtype=torch.bool)
        problems: list[list[str]] = [[] for _ in range(b)]
        texts: list[str] = []
        text_mask = torch.zeros(b, dtype=torch.bool)
        reply_lists: list[list[str]] = []
        for i, post in enumerate(posts):
            img = self._image(post, problems[i])
            if img is not None:
                pixels[i] = img
                image_mask[i] = True
            text = cap_text(post.text, self.data.max_text_chars)
            if len(post.text) > len(text):
                problems[i].append(f"text: capped from {len(post.text)} to {len(text)} characters")
            text_mask[i] = bool(text.strip())
            texts.append(text)
            replies = post.replies
            if len(replies) > self.data.max_replies:
                msg = f"replies: {len(replies)} replies, kept the first {self.data.max_replies}"
                problems[i].append(msg)
                warnings.warn(f"post {post.id!r}: {msg} (data.max_replies)", RuntimeWarning, stacklevel=2)
                replies = replies[: self.data.max_replies]
            reply_lists.append([cap_text(r.text, self.data.max_reply_chars) for r in replies])

        # Replies: distinct non-empty strings are tokenized (and later encoded) once per batch.
        k = max([len(r) for r in reply_lists] + [1])
        unique: dict[str, int] = {}
        reply_index = torch.zeros(b, k, dtype=torch.long)
        reply_mask = torch.zeros(b, k, dtype=torch.bool)
        for i, replies in enumerate(reply_lists):
            for j, text in enumerate(replies):
                if not text.strip():
                    continue
                reply_index[i, j] = unique.setdefault(text, len(unique))
                reply_mask[i, j] = True

        targets: dict[str, torch.Tensor] = {}
        label_mask: dict[str, torch.Tensor] = {}
        for spec in self.tasks:
            t = torch.zeros(b, spec.num_labels)
            m = torch.zeros(b, dtype=torch.bool)
            for i, post in enumerate(posts):
                if spec.name not in post.labels:
                    continue
                try:
                    t[i] = encode_label(post.labels[spec.name], spec)
                    m[i] = True
                except LabelError as e:
                    problems[i].append(f"labels.{spec.name}: {e}")
            targets[spec.name] = t
            label_mask[spec.name] = m

        return PostBatch(
            ids=[p.id for p in posts],
            pixels=pixels,
            image_mask=image_mask,
            text_tokens=self.tokenize(texts),
            text_mask=text_mask,
            reply_tokens=self.tokenize(list(unique)),
            reply_index=reply_index,
            reply_mask=reply_mask,
            targets=targets,
            label_mask=label_mask,
            problems=problems,
        )
