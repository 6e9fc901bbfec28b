"""``pretrain``: contrastive domain adaptation of the CLIP encoder on unlabeled image+text posts.

Real users hold far more unlabeled posts than labeled ones. Pretraining pulls each post's image and text
together with open_clip's ``ClipLoss``, through the same loop as fine-tuning (:func:`~ximgctx.training.loop.fit`),
and exports the adapted weights as ``open_clip_model.safetensors``, which fine-tuning reads through
``model.encoder.pretrained``.

Across processes, ``ClipLoss`` gathers every process's features (``rank``/``world_size`` from Accelerate).
With ``gather_with_grad`` the gradient also flows back through the gathered features; with DDP's average
over processes this gives exactly the single-process gradient of the global batch, with or without
``local_loss`` (each process then scores only its own rows, against every column).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from ximgctx._fsutil import replace_folder
from ximgctx.config import DataConfig, config_to_dict
from ximgctx.data.dataset import PostDataset
from ximgctx.data.images import ImageDecodeError, ImageLimits, load_image
from ximgctx.data.post import Post
from ximgctx.data.processor import PostBatch, PostProcessor
from ximgctx.governance import check_governed
from ximgctx.models.encoder import ClipEncoder
from ximgctx.training._runtime import DataReport, load_splits, start_run
from ximgctx.training.config import PretrainExperiment, load_pretrain_experiment
from ximgctx.training.loop import FitResult, fit
from ximgctx.training.optim import build_optimizer

logger = logging.getLogger(__name__)

__all__ = ["ENCODER_WEIGHTS", "ContrastiveModel", "pretrain", "usable_pairs"]

#: the exported encoder weights (open_clip state dict), readable by ``EncoderConfig(pretrained=<this file>)``
ENCODER_WEIGHTS = "open_clip_model.safetensors"


class ContrastiveModel(nn.Module):
    """The encoder's two towers and its logit scale, as one module DDP can wrap."""

    def __init__(self, encoder: ClipEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, pixels: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = F.normalize(self.encoder.encode_image(pixels), dim=-1)  # (B, D)
        text = F.normalize(self.encoder.encode_text(tokens), dim=-1)  # (B, D)
        return image, text, self.encoder.logit_scale.exp()


def _processor(encoder: ClipEncoder, data: DataConfig) -> PostProcessor:
    tokenizer = open_clip.get_tokenizer(encoder.config.arch)
    transform = image_transform_v2(
        PreprocessCfg(**open_clip.get_model_preprocess_cfg(encoder.clip)), is_train=False
    )
    return PostProcessor(tokenizer, transform, encoder.image_size, data, tasks=[])


def usable_pairs(posts: Sequence[Post], texts: str, data: DataConfig) -> tuple[list[Post], dict[str, int]]:
    """Posts that make an (image, text) pair, and counts of the others by reason.

    Every image is decoded once here, so that no training batch holds a post without one: ClipLoss scores
    whole batches, and a missing image would become a false pair.
    """
    limits = ImageLimits().tightened(max_pixels=data.image_max_pixels, max_bytes=data.image_max_bytes)
    missing_text = "no_alt_text" if texts == "alt_text" else "no_text"
    kept, dropped = [], {"no_image": 0, missing_text: 0}
    for post in posts:
        text = post.text
        if texts == "text+replies" and post.replies:
            text = " | ".join([post.text, *[r.text for r in post.replies]])
        elif texts == "alt_text":
            alt = (post.meta or {}).get("alt_text")
            text = alt if isinstance(alt, str) else ""
        if post.image is None:
            dropped["no_image"] += 1
            continue
        if not text.strip():
            dropped[missing_text] += 1
            continue
        try:
            load_image(post.image, limits)
        except ImageDecodeError as e:
            key = f"image_{e.reason}"
            dropped[key] = dropped.get(key, 0) + 1
            continue
        kept.append(
            post if text == post.text else Post(id=post.id, image=post.image, text=text, meta=post.meta)
        )
    return kept, dropped


def _export(
    model: ContrastiveModel, full: dict[str, torch.Tensor] | None, path: Path, card: dict[str, Any]
) -> None:
    """``open_clip_model.safetensors`` + ``encoder.json`` + a short README, written atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if full is not None:  # sharded live model (FSDP): the gathered full state, under "encoder.clip." names
        clip_state = {k[len("encoder.clip.") :]: v for k, v in full.items() if k.startswith("encoder.clip.")}
    else:
        clip_state = model.encoder.clip.state_dict()
    state = {k: v.detach().cpu().contiguous().clone() for k, v in clip_state.items()}
    save_file(state, str(tmp / ENCODER_WEIGHTS), metadata={"format": "pt"})
    (tmp / "encoder.json").write_text(json.dumps(config_to_dict(model.encoder.config), indent=2) + "\n")
    lines = [
        "# ximgctx contrastive encoder",
        "",
        f"open_clip `{model.encoder.config.arch}` adapted with a CLIP loss. Fine-tune from it with "
        f"`model.encoder.pretrained={path / ENCODER_WEIGHTS}`.",
        "",
    ]
    for title, body in card.items():
        lines += [f"## {title}", "", "```json", json.dumps(body, indent=2, default=str), "```", ""]
    (tmp / "README.md").write_text("\n".join(lines))
    replace_folder(tmp, path)


def pretrain(
    config: PretrainExperiment | dict[str, Any] | str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
    train_posts: Sequence[Post] | None = None,
    val_posts: Sequence[Post] | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Contrastively adapt an encoder to unlabeled posts; returns where the weights are (``model_dir``).

    The exported folder holds ``open_clip_model.safetensors``; pass that file as
    ``model.encoder.pretrained`` to :func:`ximgctx.training.train`. Arguments as in ``train``.
    """
    cfg = load_pretrain_experiment(config, list(overrides))
    tc = cfg.train
    resolved = cfg.to_dict()
    accelerator, out = start_run(tc, resolved)

    report = DataReport()
    train_posts, val_posts = load_splits(
        cfg.data, train_posts, val_posts, report, "a manifest of posts with an image and a text"
    )
    governance = check_governed(
        train_posts, allow_ungoverned=cfg.data.allow_ungoverned, source=cfg.data.train
    ).to_dict()
    encoder = ClipEncoder(cfg.encoder)
    encoder.requires_grad_(True)  # contrastive adaptation trains every encoder weight
    data_cfg = DataConfig()
    train_pairs, dropped = usable_pairs(train_posts, cfg.contrastive.texts, data_cfg)
    val_pairs, _ = usable_pairs(val_posts or [], cfg.contrastive.texts, data_cfg)
    report.train_posts, report.val_posts = len(train_pairs), len(val_pairs)
    report.problems = {f"not a pair: {k}": v for k, v in dropped.items() if v}
    if accelerator.is_main_process and any(dropped.values()):
        logger.warning("pretraining skips %s posts that are not (image, text) pairs", dropped)

    model = ContrastiveModel(encoder)
    optimizer = build_optimizer({"encoder": [p for p in model.parameters() if p.requires_grad]}, tc.optim)
    processor = _processor(encoder, data_cfg)
    train_loader = DataLoader(
        PostDataset(train_pairs),
        batch_size=tc.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=processor,
        num_workers=tc.num_workers,
        generator=torch.Generator().manual_seed(tc.seed),
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    val_loader = None
    if val_pairs:
        val_loader = accelerator.prepare_data_loader(
            DataLoader(
                PostDataset(val_pairs),
                batch_size=tc.batch_size,
                shuffle=False,
                drop_last=True,
                collate_fn=processor,
                num_workers=tc.num_workers,
                generator=torch.Generator().manual_seed(tc.seed),
            )
        )
    clip_loss = ClipLoss(
        local_loss=cfg.contrastive.local_loss,
        gather_with_grad=cfg.contrastive.gather_with_grad,
        cache_labels=True,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )

    def loss_fn(m: nn.Module, batch: PostBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, text, scale = m(batch.pixels, batch.text_tokens)
        return clip_loss(image, text, scale), {"logit_scale": scale.detach()}

    @torch.no_grad()
    def validate_fn(m: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Contrastive loss and image->text top-1 within each (per-process) validation batch."""
        m.eval()
        local = ClipLoss()
        sums = torch.zeros(3, device=accelerator.device)  # loss * n, correct, n
        for batch in loader:
            image, text, scale = m(batch.pixels, batch.text_tokens)
            n = image.shape[0]
            hits = (image @ text.T).argmax(-1) == torch.arange(n, device=image.device)
            sums += torch.stack(
                [
                    local(image, text, scale) * n,
                    hits.sum().float(),
                    torch.tensor(float(n), device=sums.device),
                ]
            )
        m.train()
        sums = accelerator.reduce(sums, reduction="sum")
        return {
            "loss": float(sums[0] / sums[2].clamp(min=1)),
            "i2t_top1": float(sums[1] / sums[2].clamp(min=1)),
        }

    card = {
        "Data governance": governance,
        "Pretraining": {"config": resolved, "processes": accelerator.num_processes},
    }
    return fit(
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        train_loader=train_loader,
        val_loader=val_loader,
        config=tc,
        loss_fn=loss_fn,
        validate_fn=validate_fn if val_loader else None,
        export_fn=_export,
        resolved=resolved,
        card=card,
        data_report=report,
        resume=resume,
        stop_after=stop_after,
        run_name="pretrain",
    )
