"""Task heads, their calibration state, and the masked losses.

A head is multiclass (softmax, cross-entropy against a hard label or a soft distribution) or multilabel
(independent sigmoids, binary cross-entropy). Any task may be unlabeled on any post: its loss is masked
out, never guessed. Per-task temperature (calibration) and per-label thresholds are buffers of the
model, so they are saved and loaded with the weights.
"""

from __future__ import annotations

from collections.abc import ItemsView
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ximgctx.config import TaskSpec

__all__ = ["TaskHead", "TaskHeads", "masked_task_loss", "probabilities"]


class TaskHead(nn.Module):
    """One task's classifier with its temperature and thresholds."""

    temperature: torch.Tensor  # () buffer
    thresholds: torch.Tensor  # (C,) buffer

    def __init__(self, spec: TaskSpec, fused_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.spec = spec
        in_dim = embed_dim if spec.source == "image" else fused_dim
        self.linear = nn.Linear(in_dim, spec.num_labels)
        # calibration: logits are divided by the temperature before the softmax / sigmoid
        self.register_buffer("temperature", torch.ones(()))
        # multilabel decision thresholds per label (multiclass tasks decide by argmax)
        self.register_buffer("thresholds", torch.full((spec.num_labels,), 0.5))

    def forward(self, fused: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """fused (B, H), image (B, D) unit-norm -> logits (B, C)."""
        x = image if self.spec.source == "image" else fused
        return self.linear(x)

    @torch.no_grad()
    def init_zero_shot(self, prompt_embeddings: torch.Tensor, logit_scale: float) -> None:
        """Set an image head to CLIP zero-shot: logits = scale * cos(image, prompt_c)."""
        if self.spec.source != "image":
            raise ValueError(f"task {self.spec.name!r}: zero-shot initialisation needs source='image'")
        w = F.normalize(prompt_embeddings.float(), dim=-1)  # (C, D)
        self.linear.weight.copy_(w * logit_scale)
        self.linear.bias.zero_()


class TaskHeads(nn.ModuleDict):
    """All heads, keyed by task name, in config order."""

    def __init__(self, specs: list[TaskSpec], fused_dim: int, embed_dim: int) -> None:
        super().__init__({s.name: TaskHead(s, fused_dim, embed_dim) for s in specs})

    def __getitem__(self, key: str) -> TaskHead:
        return cast(TaskHead, super().__getitem__(key))

    def items(self) -> ItemsView[str, TaskHead]:
        return cast("ItemsView[str, TaskHead]", super().items())

    def forward(self, fused: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(fused, image) for name, head in self.items()}


def probabilities(logits: torch.Tensor, kind: str, temperature: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Calibrated scores: softmax for multiclass, sigmoid for multilabel, after dividing by temperature."""
    z = logits.float() / temperature
    return z.softmax(-1) if kind == "multiclass" else z.sigmoid()


def masked_task_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    kind: str,
    denominator: float | None = None,
) -> torch.Tensor:
    """Mean loss over the posts that carry a label for this task.

    Args:
        logits: (B, C).
        target: (B, C); a probability distribution per row for multiclass (one-hot for a hard label), a
            probability per label for multilabel. Rows where ``mask`` is False are ignored whatever they hold.
        mask: (B,) True where the post is labeled for this task.
        kind: "multiclass" or "multilabel".
        denominator: divide the summed loss by this instead of this batch's labeled count (a distributed run
            passes the mean count per process, so that averaging gradients gives the global mean's gradient).

    Returns:
        A scalar. With no labeled post it is an exact zero that still depends on ``logits``, so every
        process of a distributed run builds the same graph.
    """
    logits = logits.float()
    if not bool(mask.any()):
        return logits.sum() * 0.0
    z = logits[mask]  # (M, C)
    t = target[mask].to(z.dtype)  # (M, C)
    if kind == "multiclass":
        per_post = -(t * F.log_softmax(z, dim=-1)).sum(-1)  # (M,)
    else:
        per_post = F.binary_cross_entropy_with_logits(z, t, reduction="none").mean(-1)  # (M,)
    return per_post.mean() if denominator is None else per_post.sum() / denominator
