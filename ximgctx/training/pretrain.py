"""``pretrain``: contrastive domain adaptation of the CLIP encoder on unlabeled image+text posts.

Real users hold far more unlabeled posts than labeled ones. Pretraining pulls each post's image and text
together with open_clip's ``ClipLoss``, through the same loop as fine-tuning
(:func:`~ximgctx.training.loop.fit`), and exports the adapted weights as ``open_clip_model.safetensors``,
which fine-tuning reads through ``model.encoder.pretrained``.

Across processes, ``ClipLoss`` gathers every process's features (``rank``/``world_size`` from Accelerate).
With ``gather_with_grad`` the gradient also flows back through the gathered features; with DDP's average
over processes this gives exactly the single-process gradient of the global batch, with or without
``local_loss`` (each process then scores only its own rows, against every column).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from ximgctx._artifacts import verify_artifact, write_artifact
from ximgctx.config import DataConfig, EncoderConfig, TaskSpec, config_to_dict
from ximgctx.data.dataset import PostDataset
from ximgctx.data.images import ImageDecodeError, ImageLimits, from_pil, load_image
from ximgctx.data.processor import PostBatch, PostProcessor
from ximgctx.data.record import Post
from ximgctx.errors import ArtifactError
from ximgctx.governance import check_governed
from ximgctx.governance.authors import MODEL_AUTHORS_FILE
from ximgctx.models.context_model import ContextModel
from ximgctx.models.open_clip_encoder import ClipEncoder
from ximgctx.training._runtime import DataReport, load_splits, start_run, training_authors
from ximgctx.training.config import ContrastiveConfig, PretrainExperiment, load_pretrain_experiment
from ximgctx.training.loop import FitResult, Run, fit
from ximgctx.training.optim import build_optimizer

logger = logging.getLogger(__name__)

__all__ = [
    "ENCODER_WEIGHTS",
    "EXPORT_KIND",
    "ContrastiveModel",
    "PretrainRecipe",
    "export_encoder",
    "load_pretrained_export",
    "pretrain",
    "usable_pairs",
]

#: the exported encoder weights (open_clip state dict), readable by ``EncoderConfig(pretrained=<this file>)``
ENCODER_WEIGHTS = "open_clip_model.safetensors"
#: the artifact kind (and format version) of a pretrain export folder
EXPORT_KIND = "pretrained-encoder"
EXPORT_VERSION = 1


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


@dataclass
class _ProcessorSource:
    """What ``ContextModel.build_processor`` reads of a model: its config (encoder, data caps, tasks) and its
    encoder. Pretraining has no heads, so it hands the model's own builder these instead of a ContextModel."""

    @dataclass
    class Config:
        encoder: EncoderConfig  # the CLIP being adapted (tokenizer, preprocessing)
        limits: DataConfig  # input caps
        tasks: list[TaskSpec]  # none: pretraining reads no labels

    config: Config
    encoder: ClipEncoder


def _processor(encoder: ClipEncoder, data: DataConfig) -> PostProcessor:
    """The fine-tuning model's collate function for this encoder (ContextModel.build_processor, no tasks)."""
    source = _ProcessorSource(_ProcessorSource.Config(encoder.config, data, []), encoder)
    return ContextModel.build_processor(source)  # type: ignore[arg-type]


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
            if isinstance(post.image, Image.Image):  # a post built in memory may hold the decoded image
                from_pil(post.image, limits)
            else:
                load_image(post.image, limits)
        except ImageDecodeError as e:
            key = f"image_{e.reason}"
            dropped[key] = dropped.get(key, 0) + 1
            continue
        kept.append(
            post if text == post.text else Post(id=post.id, image=post.image, text=text, meta=post.meta)
        )
    return kept, dropped


class PretrainRecipe:
    """Contrastive pretraining: open_clip's ClipLoss, in-batch retrieval for validation, the encoder
    export."""

    name = "pretrain"

    def __init__(self, accelerator: Any, contrastive: ContrastiveConfig) -> None:
        self.accelerator = accelerator
        self.clip_loss = ClipLoss(
            local_loss=contrastive.local_loss,
            gather_with_grad=contrastive.gather_with_grad,
            cache_labels=True,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
        )

    def loss(self, model: nn.Module, batch: PostBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, text, scale = model(batch.pixels, batch.text_tokens)
        return self.clip_loss(image, text, scale), {"logit_scale": scale.detach()}

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Contrastive loss and image->text top-1 within each (per-process) validation batch."""
        model.eval()
        local = ClipLoss()
        sums = torch.zeros(3, device=self.accelerator.device)  # loss * n, correct, n
        for batch in loader:
            image, text, scale = model(batch.pixels, batch.text_tokens)
            n = image.shape[0]
            hits = (image @ text.T).argmax(-1) == torch.arange(n, device=image.device)
            sums += torch.stack(
                [
                    local(image, text, scale) * n,
                    hits.sum().float(),
                    torch.tensor(float(n), device=sums.device),
                ]
            )
        model.train()
        sums = self.accelerator.reduce(sums, reduction="sum")
        return {
            "loss": float(sums[0] / sums[2].clamp(min=1)),
            "i2t_top1": float(sums[1] / sums[2].clamp(min=1)),
        }

    def export(
        self,
        model: nn.Module,
        full: dict[str, torch.Tensor] | None,
        path: Path,
        card: dict[str, Any],
        *,
        authors: bytes | None = None,
    ) -> None:
        export_encoder(model, full, path, card, authors=authors)  # type: ignore[arg-type]


def export_encoder(
    model: ContrastiveModel,
    full: dict[str, torch.Tensor] | None,
    path: Path,
    card: dict[str, Any],
    *,
    authors: bytes | None = None,
) -> None:
    """``open_clip_model.safetensors`` + ``encoder.json`` + a short README, written as a sealed artifact of
    kind ``pretrained-encoder`` (read it back with :func:`load_pretrained_export`), with the author set of its
    training posts (``authors``: :data:`ximgctx.governance.authors.MODEL_AUTHORS_FILE`) when given."""
    if full is not None:  # sharded live model (FSDP): the gathered full state, under "encoder.clip." names
        clip_state = {k[len("encoder.clip.") :]: v for k, v in full.items() if k.startswith("encoder.clip.")}
    else:
        clip_state = model.encoder.clip.state_dict()
    state = {k: v.detach().cpu().contiguous().clone() for k, v in clip_state.items()}
    lines = [
        "# ximgctx contrastive encoder",
        "",
        f"open_clip `{model.encoder.config.arch}` adapted with a CLIP loss. Fine-tune from it with "
        f"`model.encoder.pretrained={path / ENCODER_WEIGHTS}`.",
        "",
    ]
    for title, body in card.items():
        lines += [f"## {title}", "", "```json", json.dumps(body, indent=2, default=str), "```", ""]
    meta = {"arch": model.encoder.config.arch}
    with write_artifact(path, EXPORT_KIND, version=EXPORT_VERSION, meta=meta) as tmp:
        save_file(state, str(tmp / ENCODER_WEIGHTS), metadata={"format": "pt"})
        (tmp / "encoder.json").write_text(json.dumps(config_to_dict(model.encoder.config), indent=2) + "\n")
        (tmp / "README.md").write_text("\n".join(lines))
        if authors is not None:
            (tmp / MODEL_AUTHORS_FILE).parent.mkdir(parents=True, exist_ok=True)
            (tmp / MODEL_AUTHORS_FILE).write_bytes(authors)


def load_pretrained_export(
    path: str | Path, *, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The encoder weights (open_clip state dict) and ``encoder.json`` of a ``pretrain`` export, after the
    folder is verified as a ``pretrained-encoder`` artifact (every file listed, checksums, no links).

    ``path`` is the export folder or its ``open_clip_model.safetensors``.
    """
    folder = Path(path)
    if folder.name == ENCODER_WEIGHTS:
        folder = folder.parent
    verify_artifact(folder, EXPORT_KIND, max_version=EXPORT_VERSION, expected_sha256=expected_sha256)
    try:
        encoder = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{folder / 'encoder.json'}: unreadable ({e})") from None
    return load_file(str(folder / ENCODER_WEIGHTS)), encoder


def pretrain(
    config: PretrainExperiment | dict[str, Any] | str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
    train_posts: Sequence[Post] | None = None,
    val_posts: Sequence[Post] | None = None,
    stop_after: int | None = None,
    overwrite: bool = False,
) -> FitResult:
    """Contrastively adapt an encoder to unlabeled posts; returns where the weights are (``model_dir``).

    The exported folder holds ``open_clip_model.safetensors``; pass that file as
    ``model.encoder.pretrained`` to :func:`ximgctx.training.train`. Arguments as in ``train``.
    """
    cfg = load_pretrain_experiment(config, list(overrides))
    inputs = (*cfg.data.train_sources, cfg.data.val, cfg.data.image_root)
    with start_run(cfg.train, resume=resume, overwrite=overwrite, inputs=inputs) as (
        accelerator,
        _,
    ):
        run = _prepare(cfg, accelerator, train_posts, val_posts)
        return fit(PretrainRecipe(accelerator, cfg.contrastive), run, resume=resume, stop_after=stop_after)


def _prepare(
    cfg: PretrainExperiment,
    accelerator: Any,
    train_posts: Sequence[Post] | None,
    val_posts: Sequence[Post] | None,
) -> Run:
    """Pairs (read, governance checked, unusable ones counted), the contrastive model, optimizer, loaders."""
    tc = cfg.train
    report = DataReport()
    train_posts, val_posts = load_splits(
        cfg.data, train_posts, val_posts, report, "a manifest of posts with an image and a text"
    )
    governance = check_governed(
        train_posts, allow_ungoverned=cfg.data.allow_ungoverned, source=cfg.data.train_name
    ).to_dict()
    encoder = ClipEncoder(cfg.encoder)
    encoder.requires_grad_(True)  # contrastive adaptation trains every encoder weight
    data_cfg = cfg.limits
    train_pairs, dropped = usable_pairs(train_posts, cfg.contrastive.texts, data_cfg)
    val_pairs, _ = usable_pairs(val_posts or [], cfg.contrastive.texts, data_cfg)
    report.train_posts, report.val_posts = len(train_pairs), len(val_pairs)
    report.problems = {f"not a pair: {k}": v for k, v in dropped.items() if v}
    if accelerator.is_main_process and any(dropped.values()):
        logger.warning("pretraining skips %s posts that are not (image, text) pairs", dropped)

    model = ContrastiveModel(encoder)
    optimizer = build_optimizer({"encoder": [p for p in model.parameters() if p.requires_grad]}, tc.optim)
    processor = _processor(encoder, data_cfg)
    loader = functools.partial(
        DataLoader,
        batch_size=tc.batch_size,
        drop_last=True,
        collate_fn=processor,
        num_workers=tc.num_workers,
        generator=torch.Generator().manual_seed(tc.seed),
    )
    train_loader = loader(PostDataset(train_pairs), shuffle=True)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    val_loader = (
        accelerator.prepare_data_loader(loader(PostDataset(val_pairs), shuffle=False)) if val_pairs else None
    )
    card = {
        "Data governance": governance,
        "Pretraining": {"config": cfg.to_dict(), "processes": accelerator.num_processes},
    }
    authors = training_authors(train_pairs) if accelerator.is_main_process else None
    return Run(
        accelerator, model, optimizer, train_loader, val_loader, tc, cfg.to_dict(), card, report, authors
    )
