"""Fusion strategies: image, post text and reply embeddings in, one fused vector out.

:data:`FUSIONS` is the one registry: ``FusionConfig.kind`` is validated against it, and each class says
whether it learns reply weights (``learns_reply_weights``; explanations report "attention" or "uniform").
Adding a fusion is one class and one entry here.

All strategies share one signature::

    forward(image (B, D), text (B, D), replies (B, K, D), reply_mask (B, K)) -> FusionOutput

Embeddings arrive L2-normalised, with missing modalities already replaced by learned null embeddings by
the model, and ``reply_mask`` marks real reply slots (every post has at least one real slot: a post
without replies gets the null reply). Padded slots may hold anything; each strategy must ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ximgctx.config import FusionConfig
from ximgctx.errors import ConfigError

__all__ = [
    "FUSIONS",
    "AttentionFusion",
    "ConcatFusion",
    "CrossFusion",
    "FeatureInteraction",
    "FusionOutput",
    "build_fusion",
]


@dataclass
class FusionOutput:
    fused: torch.Tensor  # (B, H)
    reply_weights: torch.Tensor | None = None  # (B, K): how much each reply slot weighed; padded slots are 0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of (B, K, C) where ``mask`` (B, K) is True; rows with no True give zeros."""
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, K, 1)
    x = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


def _mlp(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
    )


class ConcatFusion(nn.Module):
    """``[e_img, e_txt, mean(e_rep), e_img * e_txt]`` -> MLP: the strong simple baseline."""

    learns_reply_weights = False  # replies are mean-pooled: every reply weighs the same

    def __init__(self, embed_dim: int, config: FusionConfig) -> None:
        super().__init__()
        self.mlp = _mlp(4 * embed_dim, config.hidden_dim, config.dropout)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, replies: torch.Tensor, reply_mask: torch.Tensor
    ) -> FusionOutput:
        rep = masked_mean(replies, reply_mask)  # (B, D)
        h = self.mlp(torch.cat([image, text, rep, image * text], dim=-1))  # (B, H)
        w = reply_mask.to(h.dtype)
        return FusionOutput(fused=h, reply_weights=w / w.sum(1, keepdim=True).clamp(min=1.0))


class FeatureInteraction(nn.Module):
    """Hate-CLIPper's feature interaction matrix between the image and the post text.

    Image and text are projected to ``d`` and L2-normalised; their outer product (``d x d``) holds every
    pairwise feature interaction. With ``rank=r`` the interaction is low-rank instead: ``(U p_img) * (V
    p_txt)`` (r values), the bilinear map ``p_img^T W p_txt`` restricted to rank r, at O(d r) instead of
    O(d^2). Meaning that lives in the *combination* of picture and words (a sunny photo under gloomy words
    reads as irony) is a product of features, which sums of projected embeddings express only through depth.
    """

    def __init__(self, embed_dim: int, d: int, rank: int | None) -> None:
        super().__init__()
        self.img_proj = nn.Linear(embed_dim, d)
        self.txt_proj = nn.Linear(embed_dim, d)
        self.rank = rank
        if rank is not None:
            self.u = nn.Linear(d, rank, bias=False)
            self.v = nn.Linear(d, rank, bias=False)
        self.out_dim = d * d if rank is None else rank

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pi = F.normalize(self.img_proj(image), dim=-1)  # (B, d)
        pt = F.normalize(self.txt_proj(text), dim=-1)  # (B, d)
        if self.rank is None:
            return torch.einsum("bi,bj->bij", pi, pt).flatten(1)  # (B, d*d)
        return self.u(pi) * self.v(pt)  # (B, r)


class CrossFusion(nn.Module):
    """Hate-CLIPper: the image-text feature interaction matrix (:class:`FeatureInteraction`, ``cross_dim``,
    ``cross_rank``), plus pooled replies, through an MLP."""

    learns_reply_weights = False  # replies are mean-pooled: every reply weighs the same

    def __init__(self, embed_dim: int, config: FusionConfig) -> None:
        super().__init__()
        d = config.cross_dim
        self.interaction = FeatureInteraction(embed_dim, d, config.cross_rank)
        self.rep_proj = nn.Linear(embed_dim, d)
        self.mlp = _mlp(self.interaction.out_dim + d, config.hidden_dim, config.dropout)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, replies: torch.Tensor, reply_mask: torch.Tensor
    ) -> FusionOutput:
        fim = self.interaction(image, text)  # (B, d*d) or (B, r)
        rep = masked_mean(self.rep_proj(replies), reply_mask)  # (B, d)
        h = self.mlp(torch.cat([fim, rep], dim=-1))  # (B, H)
        w = reply_mask.to(h.dtype)
        return FusionOutput(fused=h, reply_weights=w / w.sum(1, keepdim=True).clamp(min=1.0))


class _Block(nn.Module):
    """Pre-norm transformer block that can return its attention weights."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width)
        )

    def forward(
        self, x: torch.Tensor, pad: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = self.ln1(x)
        y, w = self.attn(y, y, y, key_padding_mask=pad, need_weights=need_weights, average_attn_weights=True)
        x = x + y
        x = x + self.mlp(self.ln2(x))
        return x, w  # (B, T, W), (B, T, T) or None


class AttentionFusion(nn.Module):
    """A small transformer over ``[CLS, e_img, e_txt, (e_img x e_txt), e_rep_1..K]`` with modality-type
    embeddings.

    With ``interaction`` (the default) one token carries the image-text :class:`FeatureInteraction`
    (``cross_dim``, ``cross_rank``), projected to the transformer's width: on ContextBench it is what lets
    the model learn the image-text interactions that decide meaning (the README's status section has the
    figures). Padded reply slots are masked out of attention. Every token attends to every other, so replies
    are read in the light of the post; the last layer's attention from CLS to the reply tokens is returned as
    ``reply_weights`` (which replies drove the decision).
    """

    IMAGE, TEXT, REPLY, INTERACTION = 0, 1, 2, 3
    learns_reply_weights = True  # reply_weights are the summary token's attention over the replies

    def __init__(self, embed_dim: int, config: FusionConfig) -> None:
        super().__init__()
        width = config.hidden_dim
        self.in_proj = nn.ModuleList([nn.Linear(embed_dim, width) for _ in range(3)])  # image, text, reply
        self.interaction = (
            FeatureInteraction(embed_dim, config.cross_dim, config.cross_rank) if config.interaction else None
        )
        self.inter_proj = nn.Linear(self.interaction.out_dim, width) if self.interaction is not None else None
        self.type_embed = nn.Parameter(torch.zeros(4 if self.interaction is not None else 3, width))
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.type_embed, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(
            [_Block(width, config.heads, config.dropout) for _ in range(config.layers)]
        )
        self.ln = nn.LayerNorm(width)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, replies: torch.Tensor, reply_mask: torch.Tensor
    ) -> FusionOutput:
        b, k, _ = replies.shape
        img = self.in_proj[self.IMAGE](image) + self.type_embed[self.IMAGE]  # (B, W)
        txt = self.in_proj[self.TEXT](text) + self.type_embed[self.TEXT]  # (B, W)
        rep = self.in_proj[self.REPLY](replies) + self.type_embed[self.REPLY]  # (B, K, W)
        rep = torch.where(reply_mask.unsqueeze(-1), rep, torch.zeros((), dtype=rep.dtype, device=rep.device))
        post = [self.cls.expand(b, -1, -1), img.unsqueeze(1), txt.unsqueeze(1)]
        if self.interaction is not None and self.inter_proj is not None:
            inter = (
                self.inter_proj(self.interaction(image, text)) + self.type_embed[self.INTERACTION]
            )  # (B, W)
            post.append(inter.unsqueeze(1))
        n_post = len(post)
        x = torch.cat([*post, rep], dim=1)  # (B, n_post + K, W)
        keep = torch.ones(b, n_post, dtype=torch.bool, device=x.device)
        pad = ~torch.cat([keep, reply_mask], dim=1)  # (B, n_post + K), True = ignore
        weights = None
        for i, block in enumerate(self.blocks):
            x, w = block(x, pad, need_weights=i == len(self.blocks) - 1)
            if w is not None:
                weights = w
        fused = self.ln(x[:, 0])  # (B, W)
        assert weights is not None  # the last block returns them (config validation: fusion.layers > 0)
        cls_to_rep = weights[:, 0, n_post:]  # (B, K)
        cls_to_rep = cls_to_rep * reply_mask.to(cls_to_rep.dtype)
        cls_to_rep = cls_to_rep / cls_to_rep.sum(1, keepdim=True).clamp(min=1e-12)
        return FusionOutput(fused=fused, reply_weights=cls_to_rep)


#: fusion kind -> class. A plain dict: no registration by import side effects.
FUSIONS: dict[str, type[ConcatFusion] | type[CrossFusion] | type[AttentionFusion]] = {
    "concat": ConcatFusion,
    "cross": CrossFusion,
    "attention": AttentionFusion,
}


def build_fusion(embed_dim: int, config: FusionConfig) -> nn.Module:
    if config.kind not in FUSIONS:
        raise ConfigError(f"fusion.kind must be one of {sorted(FUSIONS)}, got {config.kind!r}")
    return FUSIONS[config.kind](embed_dim, config)
