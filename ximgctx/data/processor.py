"""From posts to tensors: safe image decoding, capped and trimmed text, deduplicated replies, label targets.

``PostProcessor(posts) -> PostBatch`` is the collate function of every loader in ximgctx (training,
evaluation, inference), so they cannot drift apart. It never drops or reorders a post: whatever is wrong
with one (a corrupt image, a missing file, 1,000 replies, an unknown label) is recorded in
``batch.problems[i]`` as a :class:`~ximgctx.data.problems.Problem` and the post goes on with that part masked.

Image decode limits belong to the process: ``limits`` comes from the caller (CLI, server, library user); the
model's ``DataConfig`` may only lower them. Reads can be confined to an :class:`ImageRoot`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from PIL import Image

from ximgctx.config import DataConfig, TaskSpec
from ximgctx.data.images import ImageDecodeError, ImageLimits, ImageRoot, from_pil, load_image
from ximgctx.data.problems import Problem
from ximgctx.data.record import LabelValue, LoadReport, Post, Reply, post_from_dict
from ximgctx.data.text import cap_text, trim_tokens
from ximgctx.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "INVALID_LABELS",
    "LabelError",
    "PostBatch",
    "PostInput",
    "PostProcessor",
    "as_post",
    "check_labels",
    "encode_label",
]

#: What happens to a label that does not fit its task (a label outside the task's label set, several labels
#: for a multiclass task, a distribution that is not one): ``error`` (the default) names the post, the task
#: and the label; ``drop`` drops that task's label of that post (the task is masked for it) and counts it.
INVALID_LABELS = ("error", "drop")

#: What the processor (and ``Predictor``) take as one post: a Post, or a dict in the README's record format
#: whose ``image`` may also be encoded bytes or a PIL image.
PostInput = Post | Mapping[str, Any]

#: what ``Post.image`` may hold
_IMAGE_TYPES = (str, bytes, bytearray, memoryview, Image.Image)


class LabelError(InputError):
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
    problems: list[list[Problem]] = field(default_factory=list)  # per post: what was wrong with it

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
        # at least one row: a batch without any reply still indexes row 0 in its (masked) slots
        remap = torch.zeros(max(self.reply_tokens.shape[0], 1), dtype=torch.long, device=idx.device)
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


def _input_error(where: str, fld: str, message: str) -> InputError:
    return InputError(f"{where} field {fld!r}: {message}")


def _check_image(image: Any, where: str) -> Any:
    if image is not None and not isinstance(image, _IMAGE_TYPES):
        raise _input_error(
            where,
            "image",
            f"an image is a path, the encoded bytes or a PIL image, got {type(image).__name__} {image!r:.40}",
        )
    return None if isinstance(image, str) and not image.strip() else image


def _post_replies(replies: Any, where: str) -> list[Reply]:
    if replies is None:
        return []
    if isinstance(replies, str):  # one string is one reply (never a list of its characters)
        return [Reply(replies)] if replies.strip() else []
    if not isinstance(replies, (list, tuple)):
        raise _input_error(
            where, "replies", f"replies are a list (or one string), got {type(replies).__name__}"
        )
    if all(isinstance(r, Reply) and isinstance(r.text, str) for r in replies):
        return replies if isinstance(replies, list) else list(replies)
    out = []
    for j, r in enumerate(replies):
        if isinstance(r, Reply) and isinstance(r.text, str):
            out.append(r)
        elif isinstance(r, str):
            out.append(Reply(r))
        else:
            got = (
                f"a Reply whose text is {type(r.text).__name__}" if isinstance(r, Reply) else type(r).__name__
            )
            raise _input_error(where, f"replies[{j}]", f"a reply is a string or a Reply, got {got}")
    return out


def _checked_post(post: Post, where: str) -> Post:
    """``post`` as it is when every field has the right type; None text and string replies are normalised."""
    if isinstance(post.id, bool) or not isinstance(post.id, (str, int)) or not str(post.id).strip():
        raise _input_error(where, "id", f"id must be a non-empty string, got {post.id!r}")
    if post.text is not None and not isinstance(post.text, str):
        raise _input_error(where, "text", f"text must be a string, got {type(post.text).__name__}")
    for fld in ("labels", "meta"):
        if not isinstance(getattr(post, fld), Mapping):
            raise _input_error(where, fld, f"{fld} must be a dict, got {type(getattr(post, fld)).__name__}")
    image = _check_image(post.image, where)
    replies = _post_replies(post.replies, where)
    same = image is post.image and replies is post.replies  # identity: == would compare a PIL image's pixels
    if same and isinstance(post.text, str) and isinstance(post.id, str):
        return post
    return Post(str(post.id), image, post.text or "", replies, post.labels, post.meta)


def as_post(item: PostInput, position: int = 0) -> Post:
    """One input as a :class:`Post`: a Post (checked), or a dict in the README's record format.

    A dict's ``image`` may be a path, the encoded bytes or a PIL image; ``replies`` one string (one reply) or
    a list of strings and ``{"text", "author"}`` objects; a missing ``id`` becomes ``"input-<position>"``;
    ``text=None`` is empty text. A wrong type is an :class:`InputError` naming the post and the field.
    """
    if isinstance(item, Post):
        return _checked_post(item, f"post {item.id!r}")
    if not isinstance(item, Mapping):
        raise InputError(
            f"post at position {position}: a post is a Post or a dict in the record format, got "
            f"{type(item).__name__}"
        )
    pid = item.get("id", f"input-{position}")
    where = f"post {pid!r}" if isinstance(pid, (str, int)) else f"post at position {position}"
    image = _check_image(item.get("image"), where)
    replies = item.get("replies")
    if isinstance(replies, str):  # one string is one reply
        replies = [replies] if replies.strip() else []
    record = {**item, "id": pid, "image": None, "replies": replies}
    post = post_from_dict(record, source=where)
    return (
        Post(post.id, image, post.text, post.replies, post.labels, post.meta) if image is not None else post
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
        wide = torch.zeros(spec.num_labels, dtype=torch.float64)  # torch refuses to store 1e39 in float32
        for label, p in value.items():
            wide[idx(label)] = float(p)
        target = wide.to(torch.float32)  # overflow becomes inf here, and is refused next
        _check_float32(target, value, spec)
        if spec.kind == "multiclass":
            target = target / target.sum().clamp(min=1e-12)
        elif float(target.max()) > 1.0:
            raise LabelError(
                f"task {spec.name!r} is multilabel: per-label probabilities must be <= 1, got {value!r}"
            )
    else:  # pragma: no cover - post validation rejects other types
        raise LabelError(f"task {spec.name!r}: unsupported label value {value!r}")
    return target


def check_labels(
    posts: Iterable[Post],
    tasks: Sequence[TaskSpec],
    *,
    invalid_labels: str = "error",
    source: str | None = None,
    report: LoadReport | None = None,
) -> dict[str, int]:
    """Check every post's label of every task before a run uses them; returns task -> posts whose label for
    it does not fit (also added to ``report``).

    Raises:
        LabelError: with ``invalid_labels="error"`` (the default), naming the first posts, their task and
            label, how many there are, and the option that drops them instead.
    """
    if invalid_labels not in INVALID_LABELS:
        raise InputError(f"invalid_labels must be one of {list(INVALID_LABELS)}, got {invalid_labels!r}")
    counts: dict[str, int] = {}
    examples: list[str] = []
    for post in posts:
        for spec in tasks:
            if spec.name not in post.labels:
                continue
            try:
                encode_label(post.labels[spec.name], spec)
            except LabelError as e:
                counts[spec.name] = counts.get(spec.name, 0) + 1
                if len(examples) < 5:
                    examples.append(f"post {post.id!r}: {e}")
    if counts and invalid_labels == "error":
        total = sum(counts.values())
        where = f"{source}: " if source else ""
        raise LabelError(
            f"{where}{total} label(s) do not fit their task ("
            + ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))
            + "): "
            + "; ".join(examples)
            + ". Fix them, or drop them (the task is masked for those posts, counted in the data report): "
            "invalid_labels='drop' (training: data.invalid_labels=drop)"
        )
    if report is not None:
        for task, n in counts.items():
            report.dropped_labels[task] = report.dropped_labels.get(task, 0) + n
        report.label_examples += examples[: max(0, 5 - len(report.label_examples))]
    return counts


def _check_float32(target: torch.Tensor, value: dict[str, float], spec: TaskSpec) -> None:
    """A distribution must hold in float32, the dtype it trains in: ``1e39`` is finite as a Python float but
    ``inf`` here, and two labels of ``3e38`` sum to ``inf``, which normalises to an all-zero target."""
    total = target.sum()  # float32, like the loss
    if not bool(torch.isfinite(target).all()) or not bool(torch.isfinite(total)):
        raise LabelError(
            f"task {spec.name!r}: the label distribution {value!r} overflows float32 (each value and their "
            f"sum must stay below {torch.finfo(torch.float32).max:.3g}); give probabilities"
        )
    if bool((target < 0).any()) or not float(total) > 0:
        raise LabelError(f"task {spec.name!r}: the label distribution {value!r} must be >= 0 and sum to > 0")


class PostProcessor:
    """Turns posts into a :class:`PostBatch`.

    Args:
        tokenizer: open_clip tokenizer: ``tokenizer(list_of_str) -> (N, context_length)`` ids, 0 = padding.
        image_transform: PIL image -> (3, S, S) tensor (open_clip's eval preprocessing).
        image_size: S.
        data: caps on replies, text and images (the model's; its image limits can only lower ``limits``).
        tasks: the tasks whose labels become targets.
        limits: the process's image decode limits (default ``ImageLimits()``), tightened by ``data``.
        image_root: where relative image paths are read from; with ``confine=True`` nothing outside it is
            opened and problems name the post and the root-relative path, never a server path.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_transform: Callable[[Any], torch.Tensor],
        image_size: int,
        data: DataConfig,
        tasks: Sequence[TaskSpec],
        *,
        limits: ImageLimits | None = None,
        image_root: ImageRoot | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.image_size = image_size
        self.data = data
        self.tasks = list(tasks)
        base = ImageLimits() if limits is None else limits
        self.limits = base.tightened(max_pixels=data.image_max_pixels, max_bytes=data.image_max_bytes)
        self.image_root = image_root

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(N, L) ids trimmed to the longest real sequence (at least 1 column)."""
        if not texts:
            return torch.zeros(0, 1, dtype=torch.long)
        return trim_tokens(self.tokenizer(texts)).contiguous()

    def _image(self, post: Post, problems: list[Problem]) -> torch.Tensor | None:
        if post.image is None:
            return None
        try:
            if isinstance(post.image, Image.Image):
                image = from_pil(post.image, self.limits)
            else:
                image = load_image(post.image, self.limits, root=self.image_root)
        except ImageDecodeError as e:
            root = self.image_root
            detail = _confined_detail(post.id, e, root.path) if root is not None and root.confine else str(e)
            problems.append(Problem("image", e.reason, detail))
            return None
        return self.image_transform(image)

    #: a label that does not fit its task: "error" (raise, naming the post, task and label) or "drop" (the
    #: task is masked for that post and the batch's problems say why); prediction drops, training says which
    invalid_labels: str = "error"

    def __call__(self, posts: Sequence[PostInput], *, invalid_labels: str | None = None) -> PostBatch:
        on_invalid = invalid_labels or self.invalid_labels
        if on_invalid not in INVALID_LABELS:
            raise InputError(f"invalid_labels must be one of {list(INVALID_LABELS)}, got {on_invalid!r}")
        parsed = [as_post(p, i) for i, p in enumerate(posts)]
        b = len(parsed)
        s = self.image_size
        pixels = torch.zeros(b, 3, s, s)
        image_mask = torch.zeros(b, dtype=torch.bool)
        problems: list[list[Problem]] = [[] for _ in range(b)]
        texts: list[str] = []
        text_mask = torch.zeros(b, dtype=torch.bool)
        reply_lists: list[list[str]] = []
        for i, post in enumerate(parsed):
            img = self._image(post, problems[i])
            if img is not None:
                pixels[i] = img
                image_mask[i] = True
            text = cap_text(post.text, self.data.max_text_chars)
            if len(post.text) > len(text):
                problems[i].append(
                    Problem("text", "capped", f"capped from {len(post.text)} to {len(text)} characters")
                )
            text_mask[i] = bool(text.strip())
            texts.append(text)
            replies = post.replies
            if len(replies) > self.data.max_replies:
                problem = Problem(
                    "replies", "capped", f"{len(replies)} replies, kept the first {self.data.max_replies}"
                )
                problems[i].append(problem)
                warnings.warn(
                    f"post {post.id!r}: {problem} (limits.max_replies)", RuntimeWarning, stacklevel=2
                )
                replies = replies[: self.data.max_replies]
            reply_lists.append([cap_text(r.text, self.data.max_reply_chars) for r in replies])

        # Replies: distinct non-empty strings are tokenized (and later encoded) once per batch.
        k = max([len(r) for r in reply_lists] + [1])
        unique: dict[str, int] = {}
        reply_index = torch.zeros(b, k, dtype=torch.long)
        reply_mask = torch.zeros(b, k, dtype=torch.bool)
        for i, row in enumerate(reply_lists):
            for j, text in enumerate(row):
                if not text.strip():
                    continue
                reply_index[i, j] = unique.setdefault(text, len(unique))
                reply_mask[i, j] = True

        targets: dict[str, torch.Tensor] = {}
        label_mask: dict[str, torch.Tensor] = {}
        for spec in self.tasks:
            t = torch.zeros(b, spec.num_labels)
            m = torch.zeros(b, dtype=torch.bool)
            for i, post in enumerate(parsed):
                if spec.name not in post.labels:
                    continue
                try:
                    t[i] = encode_label(post.labels[spec.name], spec)
                    m[i] = True
                except LabelError as e:
                    if on_invalid == "error":
                        raise LabelError(
                            f"post {post.id!r}: {e} (invalid_labels='drop' masks the task for such posts "
                            "instead)"
                        ) from None
                    problems[i].append(Problem(f"labels.{spec.name}", "invalid_label", str(e)))
            targets[spec.name] = t
            label_mask[spec.name] = m

        return PostBatch(
            ids=[p.id for p in parsed],
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


def _confined_detail(post_id: str, e: ImageDecodeError, root: str) -> str:
    """A problem's text in confined mode: the post, the field and the root-relative path (when the path is
    inside the root), never an absolute server path nor whether a path outside the root exists."""
    where = f"post {post_id!r} field 'image'"
    if e.path is not None:
        where += f" ({e.path!r} in the image root)"
    detail = e.detail
    for prefix in {os.path.realpath(root), root}:  # a decoder message quoting the file it read
        detail = detail.replace(prefix, "<image root>")
    return f"{where}: {detail}"
