"""Run a model over posts with modalities masked, gathering logits from every process exactly once.

This is the one place where evaluation predictions are collected, for validation during training, for
``evaluate`` and for the quickstart, so they cannot drift apart; the forward pass is
:func:`ximgctx.models.forward.run_forward`, the same one inference runs. Each batch is collated once and
run once per kept-modality key (masked inputs skip the encoder). Under Accelerate,
``gather_for_metrics`` drops the duplicates that even batches add at the end of the data; each post's
position in the dataset is gathered along with its logits and checked, so a post counted twice or not at
all is an error, not a silently wrong metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from ximgctx.data.dataset import PostDataset  # re-exported: its home moved to ximgctx.data
from ximgctx.models.forward import run_forward
from ximgctx.models.modalities import Modalities

__all__ = [
    "ABLATION_KEYS",
    "FULL",
    "PostDataset",
    "Predictions",
    "drop_for",
    "predict",
]

#: every non-empty subset of kept modalities, named as in ContextBench's oracle.json
ABLATION_KEYS: tuple[str, ...] = (
    "image",
    "text",
    "replies",
    "image+text",
    "image+replies",
    "text+replies",
    "image+text+replies",
)
FULL = "image+text+replies"


def drop_for(key: str) -> tuple[str, ...]:
    """The modalities to mask for a kept-modality key: ``"image+text"`` -> ``("replies",)``."""
    return Modalities.parse(key).dropped


@dataclass
class Predictions:
    """Logits and labels for every post of a dataset, in dataset order."""

    index: torch.Tensor  # (N,) dataset positions, 0..N-1
    logits: dict[str, torch.Tensor]  # task -> (N, C) float32
    targets: dict[str, torch.Tensor]  # task -> (N, C)
    label_mask: dict[str, torch.Tensor]  # task -> (N,) True where labeled
    problems: Counter = field(default_factory=Counter)  # problem kind -> posts with it (all processes)
    image_mask: torch.Tensor | None = None  # (N,) True where the post's image was usable


def _identity(x: Any) -> Any:
    return x


def _check_each_post_once(index: torch.Tensor, n_expected: int) -> None:
    """The gathered rows hold every dataset position exactly once (else the metrics would be wrong)."""
    counts = (
        torch.bincount(index, minlength=n_expected)
        if index.numel()
        else torch.zeros(n_expected, dtype=torch.long)
    )
    if index.numel() != n_expected or counts.numel() != n_expected or bool((counts != 1).any()):
        twice = int((counts > 1).sum())
        missing = int((counts == 0).sum())
        raise RuntimeError(
            f"prediction gathered {index.numel()} rows for {n_expected} posts ({twice} posts more than "
            f"once, {missing} missing); metrics would be wrong"
        )


def _gather_problems(problems: dict[int, set[str]]) -> dict[int, set[str]]:
    """Every process's posts' problem kinds; a post padded in twice is still one position."""
    from accelerate.utils import gather_object

    merged: dict[int, set[str]] = {}
    for part in gather_object([problems]):
        merged.update(part)
    return merged


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: DataLoader,
    *,
    keys: Sequence[str] = (FULL,),
    accelerator: Any | None = None,
    n_posts: int | None = None,
) -> dict[str, Predictions]:
    """Logits for every post of ``loader`` under each kept-modality key, gathered across processes.

    Args:
        model: a ``ContextModel`` (or one wrapped by ``accelerator.prepare``).
        loader: yields ``PostBatch``; its dataset must be a :class:`PostDataset` (positions come from ids).
            Under Accelerate, pass the prepared loader.
        keys: kept-modality keys (``ABLATION_KEYS`` for every ablation).
        accelerator: gathers across processes when given; ``None`` runs in this process only.
        n_posts: expected number of posts (default: ``len(loader.dataset)``); checked after gathering.

    Returns:
        ``{key: Predictions}``, rows sorted by dataset position, each post exactly once.
    """
    dataset: Any = loader.dataset  # a PostDataset: its posts in order
    position = {p.id: i for i, p in enumerate(dataset.posts)}
    n_expected = len(dataset) if n_posts is None else n_posts
    gather = accelerator.gather_for_metrics if accelerator is not None else _identity
    was_training = model.training
    model.eval()
    parts: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    index_parts: list[torch.Tensor] = []
    problems: dict[int, set[str]] = {}  # dataset position -> Problem.key set (this process's posts)
    model_device = next(model.parameters()).device
    try:
        for batch in loader:
            if accelerator is None:  # a prepared loader already puts batches on the right device
                batch = batch.to(model_device)
            device = batch.pixels.device
            idx = torch.tensor([position[i] for i in batch.ids], dtype=torch.long, device=device)  # (B,)
            for pid, plist in zip(batch.ids, batch.problems, strict=True):
                if plist:
                    problems[position[pid]] = {p.key for p in plist}
            index_parts.append(gather(idx).cpu())
            labels = gather({"targets": batch.targets, "mask": batch.label_mask, "image": batch.image_mask})
            for key in keys:
                forward = run_forward(model, batch, key)
                logits = {t: z.float() for t, z in forward.logits.items()}
                parts[key].append(
                    {
                        "logits": {t: z.cpu() for t, z in gather(logits).items()},
                        "targets": {t: v.cpu() for t, v in labels["targets"].items()},
                        "mask": {t: v.cpu() for t, v in labels["mask"].items()},
                        "image": labels["image"].cpu(),
                    }
                )
    finally:
        model.train(was_training)
    index = torch.cat(index_parts) if index_parts else torch.zeros(0, dtype=torch.long)
    _check_each_post_once(index, n_expected)
    if accelerator is not None:
        problems = _gather_problems(problems)
    problem_counts = Counter(kind for kinds in problems.values() for kind in kinds)
    order = torch.argsort(index)
    out: dict[str, Predictions] = {}
    for key in keys:
        chunks = parts[key]
        tasks = chunks[0]["logits"].keys() if chunks else []
        out[key] = Predictions(
            index=index[order],
            logits={t: torch.cat([c["logits"][t] for c in chunks])[order] for t in tasks},
            targets={t: torch.cat([c["targets"][t] for c in chunks])[order] for t in tasks},
            label_mask={t: torch.cat([c["mask"][t] for c in chunks])[order] for t in tasks},
            problems=problem_counts,
            image_mask=torch.cat([c["image"] for c in chunks])[order].bool() if chunks else None,
        )
    return out
