"""AdamW over the model's parameter groups, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ximgctx.training.config import OptimConfig

__all__ = ["WarmupCosine", "build_optimizer", "build_scheduler", "split_lora_by_tower", "warmup_steps"]


def build_optimizer(groups: dict[str, list[nn.Parameter]], config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with one learning rate per named group (lora, encoder, fusion, heads; or lora_image and
    lora_text instead of lora, see :func:`split_lora_by_tower`).

    Weight decay applies to matrices only: biases, norms, scalars and the (1-D) null embeddings are
    excluded, as in open_clip and most recipes. Empty groups are left out; each optimizer group keeps its
    ``name`` ("fusion", "fusion/no_decay", ...) so logs can show every learning rate.
    """
    param_groups = []
    for name, params in groups.items():
        lr = config.lr.rate(name)
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        if decay:
            param_groups.append(
                {"params": decay, "lr": lr, "weight_decay": config.weight_decay, "name": name}
            )
        if no_decay:
            param_groups.append(
                {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}/no_decay"}
            )
    if not param_groups:
        raise ValueError(
            "nothing to train: the model has no trainable parameter (encoder frozen, no LoRA, "
            "and no fusion or heads?)"
        )
    return torch.optim.AdamW(param_groups, betas=(config.betas[0], config.betas[1]), eps=config.eps)


def split_lora_by_tower(
    groups: dict[str, list[nn.Parameter]], image_tower: nn.Module
) -> dict[str, list[nn.Parameter]]:
    """Replace the ``lora`` group by ``lora_image`` (adapters inside ``image_tower``) and ``lora_text``.

    The two towers learn at different speeds: a text tower trained from scratch needs a larger rate to learn
    its words than an image tower needs to keep its colours and layout while it learns shapes.
    """
    inside = {id(p) for p in image_tower.parameters()}
    out = {k: v for k, v in groups.items() if k != "lora"}
    out["lora_image"] = [p for p in groups.get("lora", []) if id(p) in inside]
    out["lora_text"] = [p for p in groups.get("lora", []) if id(p) not in inside]
    return out


def warmup_steps(config: OptimConfig, total_steps: int) -> int:
    """Warmup length in optimizer steps: ``warmup_steps`` when set, else ``warmup_ratio`` of the run."""
    if config.warmup_steps > 0:
        return min(config.warmup_steps, total_steps)
    return int(round(config.warmup_ratio * total_steps))


class WarmupCosine:
    """LR multiplier at optimizer step ``s``: linear warmup to 1, then cosine down to ``min_ratio``.

    A plain object (not a closure), so ``LambdaLR.state_dict()`` saves its numbers with the checkpoint.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup = warmup
        self.total = max(total, 1)
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int) -> LambdaLR:
    """Warmup + cosine over ``total_steps`` optimizer steps. Step it once per optimizer step."""
    return LambdaLR(
        optimizer, WarmupCosine(warmup_steps(config, total_steps), total_steps, config.min_lr_ratio)
    )
