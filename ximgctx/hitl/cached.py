"""Training the fusion module and heads on cached features of a frozen encoder.

The encoder is frozen, so its modality embeddings never change: :func:`cached_features` computes them once
per post set (``ContextModel.encode``, after null substitution) and caches them; :func:`finetune` trains
``model.fusion`` -> ``model.heads`` on them with fine-tuning's own loss
(``ximgctx.training.finetune.supervised_loss``, so task weights apply) and AdamW
(``ximgctx.training.optim.build_optimizer``); :func:`evaluate` scores them (exact match for multilabel tasks)
and :func:`predict` gives calibrated scores and fused embeddings for selection. The simulated labeling loop
(:mod:`ximgctx.hitl.simulate`) and the drift simulation (``ximgctx bench drift``) both run on this, many
times cheaper per round than ``ximgctx.training.train`` (an Accelerate run re-encoding every post).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ximgctx.config import EncoderConfig, FusionConfig, ModelConfig, TaskSpec
from ximgctx.data.processor import encode_label
from ximgctx.data.record import Post
from ximgctx.models.context_model import ContextModel, ContextOutput, Embeddings

__all__ = [
    "Features",
    "build_model",
    "cached_features",
    "encode",
    "evaluate",
    "finetune",
    "forward",
    "output",
    "predict",
]


@dataclass
class Features:
    """Cached modality embeddings of N posts (after null substitution), as the fusion module reads them."""

    image: torch.Tensor  # (N, D)
    text: torch.Tensor  # (N, D)
    replies: torch.Tensor  # (N, K, D)
    reply_mask: torch.Tensor  # (N, K)

    def rows(self, idx: torch.Tensor | np.ndarray | list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return self.image[idx], self.text[idx], self.replies[idx], self.reply_mask[idx]


@torch.no_grad()
def encode(model: ContextModel, posts: list[Post], batch_size: int = 64) -> Features:
    k = max(model.config.limits.max_replies, 1)
    parts: dict[str, list[torch.Tensor]] = {"image": [], "text": [], "replies": [], "reply_mask": []}
    model.eval()
    for start in range(0, len(posts), batch_size):
        batch = model.processor(posts[start : start + batch_size], invalid_labels="drop")  # features only
        emb = model.encode(batch)
        b, kb, d = emb.replies.shape
        replies = torch.zeros(b, k, d)
        mask = torch.zeros(b, k, dtype=torch.bool)
        replies[:, :kb], mask[:, :kb] = emb.replies[:, :k], emb.reply_mask[:, :k]
        if kb < k:  # pad slots beyond the batch's longest thread with the null reply, masked out
            replies[:, kb:] = model.null_reply.detach()
        parts["image"].append(emb.image.float())
        parts["text"].append(emb.text.float())
        parts["replies"].append(replies)
        parts["reply_mask"].append(mask)
    return Features(**{name: torch.cat(v) for name, v in parts.items()})


def cached_features(model: ContextModel, posts: list[Post], cache: Path) -> Features:
    """Encode ``posts`` once; the cache file is reused when it holds the same post ids."""
    from safetensors.torch import load_file, save_file

    ids = [p.id for p in posts]
    meta = cache.with_suffix(".json")
    if (
        cache.is_file()
        and meta.is_file()
        and json.loads(meta.read_text()) == {"ids": ids, **encoder_key(model)}
    ):
        return Features(**load_file(str(cache)))
    feats = encode(model, posts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in asdict(feats).items()}, str(cache))
    meta.write_text(json.dumps({"ids": ids, **encoder_key(model)}))
    return feats


def encoder_key(model: ContextModel) -> dict[str, Any]:
    """What the cached features depend on: the encoder's architecture and its weights (fingerprinted)."""
    digest = hashlib.sha256()
    for p in list(model.encoder.parameters())[:4]:
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return {
        "arch": model.config.encoder.arch,
        "pretrained": model.config.encoder.pretrained,
        "weights": digest.hexdigest()[:16],
    }


def output(model: ContextModel, feats: Features, idx: Any) -> ContextOutput:
    """``ContextModel.forward`` of cached rows, after its encode step."""
    image, text, replies, mask = feats.rows(idx)
    out = model.fusion(image, text, replies, mask)
    emb = Embeddings(image=image, text=text, replies=replies, reply_mask=mask, present={})
    return ContextOutput(
        logits=model.heads(out.fused, image), fused=out.fused, embeddings=emb, reply_weights=out.reply_weights
    )


def forward(model: ContextModel, feats: Features, idx: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Logits per task (B, C) and the fused embedding (B, H) of cached rows."""
    out = output(model, feats, idx)
    return out.logits, out.fused


@dataclass
class _Labels:
    """The aggregated labels of cached rows, as the supervised loss reads a batch."""

    targets: dict[str, torch.Tensor]  # task -> (B, C)
    label_mask: dict[str, torch.Tensor]  # task -> (B,) every row is labeled


@torch.no_grad()
def predict(
    model: ContextModel, feats: Features, idx: np.ndarray, batch_size: int = 512
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Calibrated scores per task (N, C) and unit-norm fused embeddings (N, H), dropout as currently set."""
    scores: dict[str, list[np.ndarray]] = {}
    fused_all = []
    for start in range(0, len(idx), batch_size):
        logits, fused = forward(model, feats, idx[start : start + batch_size])
        for t, p in model.scores(logits).items():
            scores.setdefault(t, []).append(p.float().numpy())
        fused_all.append(torch.nn.functional.normalize(fused.float(), dim=-1).numpy())
    return {t: np.concatenate(v) for t, v in scores.items()}, np.concatenate(fused_all)


# ------------------------------------------------------------------------------------------ a round


def finetune(
    model: ContextModel,
    feats: Features,
    idx: np.ndarray,
    targets: dict[str, torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> float:
    """``epochs`` passes over the labeled rows ``idx`` (``targets[task][i]`` is row ``idx[i]``'s target),
    training the fusion module and heads with AdamW at ``lr``; returns the last epoch's mean loss."""
    from ximgctx.training.config import LearningRates, OptimConfig
    from ximgctx.training.finetune import supervised_loss
    from ximgctx.training.optim import build_optimizer

    groups = model.parameter_groups()
    optim = build_optimizer(
        {k: v for k, v in groups.items() if k in ("fusion", "heads")},
        OptimConfig(lr=LearningRates(fusion=lr, heads=lr)),
    )
    model.train()
    last = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(idx), generator=generator).numpy()
        losses = []
        for start in range(0, len(idx), batch_size):
            rows = order[start : start + batch_size]
            labels = _Labels(
                targets={t: targets[t][rows] for t in targets},
                label_mask={t: torch.ones(len(rows), dtype=torch.bool) for t in targets},
            )
            # the fine-tuning loss itself: masked task losses weighted by TaskSpec.weight
            loss = supervised_loss(model, output(model, feats, idx[rows]), labels).total
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in optim.param_groups for p in g["params"]], 1.0)
            optim.step()
            losses.append(loss.item())
        last = float(np.mean(losses))
    model.eval()
    return last


def evaluate(model: ContextModel, feats: Features, truth: list[dict[str, Any]]) -> dict[str, float]:
    from ximgctx.evaluation.metrics import task_metrics

    scores_logits: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        idx = np.arange(len(truth))
        for start in range(0, len(idx), 512):
            logits, _ = forward(model, feats, idx[start : start + 512])
            for t, z in logits.items():
                scores_logits.setdefault(t, []).append(z)
    out = {}
    for t, parts in scores_logits.items():
        spec = model.heads[t].spec
        targets = torch.stack([encode_label(row[t], spec) for row in truth])
        m = task_metrics(spec, torch.cat(parts), targets, torch.ones(len(truth), dtype=torch.bool))
        out[t] = m["accuracy"]
    out["mean"] = float(np.mean([out[t] for t in scores_logits]))
    return out


def build_model(
    specs: list[TaskSpec],
    *,
    arch: str,
    encoder: str | None,
    hidden_dim: int,
    fusion_layers: int,
    dropout: float,
    seed: int,
) -> ContextModel:
    """A ContextModel with a frozen encoder (``encoder``: pretrained weights, or None for a random one) and
    an attention fusion of ``hidden_dim`` x ``fusion_layers``, its weights seeded by ``seed``; in eval
    mode."""
    torch.manual_seed(seed)
    model_config = ModelConfig(
        tasks=specs,
        encoder=EncoderConfig(arch=arch, pretrained=encoder, freeze=True),
        fusion=FusionConfig(
            kind="attention",
            hidden_dim=hidden_dim,
            layers=fusion_layers,
            heads=4,
            dropout=dropout,
        ),
        lora=None,
    )
    return ContextModel(model_config).eval()
