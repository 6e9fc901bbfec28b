"""ContextModel: encoder -> fusion -> heads, with null embeddings for missing modalities."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ximgctx.config import MODALITIES, ModelConfig
from ximgctx.data.images import ImageLimits, ImageRoot
from ximgctx.data.processor import PostBatch, PostProcessor
from ximgctx.models._skeleton import building_skeleton
from ximgctx.models.backends import build_encoder
from ximgctx.models.encoder import Encoder
from ximgctx.models.fusion import build_fusion
from ximgctx.models.heads import TaskHeads, masked_task_loss, probabilities
from ximgctx.models.lora import apply_lora
from ximgctx.models.size_limits import check_fusion_size

if TYPE_CHECKING:
    from peft import LoraConfig as PeftLoraConfig

logger = logging.getLogger(__name__)

__all__ = ["ContextModel", "ContextOutput", "Embeddings", "LossOutput", "TextEncoder"]

#: ``tokens (N, T) -> unnormalised text embeddings (N, D)``
TextEncoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Embeddings:
    """Unit-norm modality embeddings after null substitution."""

    image: torch.Tensor  # (B, D)
    text: torch.Tensor  # (B, D)
    replies: torch.Tensor  # (B, K, D)
    reply_mask: torch.Tensor  # (B, K) real reply slots (slot 0 holds the null reply when a post has none)
    present: dict[str, torch.Tensor]  # modality -> (B,) True where the real input was used


@dataclass
class ContextOutput:
    logits: dict[str, torch.Tensor]  # task -> (B, C) raw logits
    fused: torch.Tensor  # (B, H) fused post embedding (search, label memory)
    embeddings: Embeddings
    reply_weights: torch.Tensor  # (B, K) weight of each real reply; 0 for padding and the null reply


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar, weighted sum over tasks
    per_task: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> scalar (0 when unlabeled)
    labeled: dict[str, int] = field(default_factory=dict)  # task -> posts labeled in this batch


class ContextModel(nn.Module):
    """The multimodal context model.

    Args:
        config: what to build. ``config.encoder`` decides the encoder and its starting weights.
        encoder: an encoder already built for ``config.encoder`` (loading a saved model passes its own copy).

    Example:
        >>> model = ContextModel(ModelConfig(tasks=[TaskSpec("intent", ["joke", "protest"], "multilabel")]))
        >>> batch = model.processor(posts)
        >>> out = model(batch)                       # logits per task, fused embedding, reply weights
        >>> out = model(batch, drop=("image",))      # the same posts with the image masked out
    """

    def __init__(self, config: ModelConfig, encoder: Encoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.card: dict[
            str, Any
        ] = {}  # model-card sections kept across save/load (metrics, governance, data)
        self.card_metadata: dict[str, Any] = {}  # Hugging Face model-card metadata set by the caller
        self.encoder: Encoder = encoder if encoder is not None else build_encoder(config.encoder)
        self.lora_config: PeftLoraConfig | None = None
        if config.lora is not None:
            self.lora_config = apply_lora(self.encoder.clip, config.lora)
        elif config.encoder.freeze:
            self.encoder.requires_grad_(False)
        d = self.encoder.embed_dim
        self.null_image = nn.Parameter(torch.randn(d) * 0.02)  # (D,) stands in for a missing image
        self.null_text = nn.Parameter(torch.randn(d) * 0.02)  # (D,) for an empty post text
        self.null_reply = nn.Parameter(torch.randn(d) * 0.02)  # (D,) the single slot of a post with no reply
        check_fusion_size(d, config.fusion)  # a config's hidden_dim may not make this process allocate 50 GB
        self.fusion = build_fusion(d, config.fusion)
        self.heads = TaskHeads(config.tasks, fused_dim=config.fusion.hidden_dim, embed_dim=d)
        self.processor = self.build_processor()
        if not building_skeleton():  # a saved model's heads are loaded: no text tower run for them
            self.init_zero_shot_heads()

    def train(self, mode: bool = True) -> ContextModel:
        """Like ``nn.Module.train``, but a frozen encoder keeps its BatchNorm statistics frozen too
        (otherwise a ResNet tower's running means would drift during LoRA training)."""
        super().train(mode)
        if mode and (self.config.lora is not None or self.config.encoder.freeze):
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # ----------------------------------------------------------------------------------------- data
    def build_processor(
        self, limits: ImageLimits | None = None, image_root: ImageRoot | None = None
    ) -> PostProcessor:
        """The collate function matching this model's tokenizer and image preprocessing.

        ``limits`` are the process's image decode limits (default ``ImageLimits()``); this model's
        ``config.limits`` can only lower them. ``image_root`` resolves, and may confine, image reads.
        """
        return PostProcessor(
            self.encoder.tokenizer,
            self.encoder.image_transform(),
            self.encoder.image_size,
            self.config.limits,
            self.config.tasks,
            limits=limits,
            image_root=image_root,
        )

    @property
    def device(self) -> torch.device:
        return self.null_image.device

    @torch.no_grad()
    def init_zero_shot_heads(self) -> list[str]:
        """Initialise image-sourced heads that have a prompt from the encoder's text embeddings.

        Returns the names of the heads initialised.
        """
        done = []
        scale = float(self.encoder.logit_scale.exp())
        for name, head in self.heads.items():
            spec = head.spec
            if spec.source != "image" or spec.prompt is None:
                continue
            tokens = self.processor.tokenize([spec.prompt.format(label) for label in spec.labels])
            emb = self.encoder.encode_text(tokens.to(self.device))  # (C, D)
            head.init_zero_shot(emb, scale)
            done.append(name)
        return done

    # -------------------------------------------------------------------------------------- forward
    def _modality_dropout(self, present: torch.Tensor) -> torch.Tensor:
        p = self.config.fusion.modality_dropout
        if not self.training or p <= 0:
            return present
        keep = torch.rand(present.shape, device=present.device) >= p
        return present & keep

    def encode(
        self, batch: PostBatch, drop: Iterable[str] = (), text_encoder: TextEncoder | None = None
    ) -> Embeddings:
        """Encode each modality, skipping the encoder for masked inputs, and substitute null embeddings.

        ``text_encoder`` (``tokens (N, T) -> (N, D)``) replaces ``encoder.encode_text`` for the post texts
        and replies (inference passes a cache of row-exact text embeddings,
        :class:`ximgctx.inference.reply_cache.TextCache`)."""
        drop = set(drop)
        unknown = drop - set(MODALITIES)
        if unknown:
            raise ValueError(f"drop must name modalities from {list(MODALITIES)}, got {sorted(unknown)}")
        b = len(batch)
        d = self.encoder.embed_dim
        dev = self.device

        img_present = self._modality_dropout(batch.image_mask.to(dev) & ("image" not in drop))  # (B,)
        # a copy, not a view: a view of a parameter keeps requires_grad under no_grad, and shares its storage
        image = self.null_image.expand(b, d).clone()
        if bool(img_present.any()):
            enc = F.normalize(self.encoder.encode_image(batch.pixels[img_present]), dim=-1)  # (Ni, D)
            full = torch.zeros(b, d, dtype=enc.dtype, device=dev).index_put(
                (img_present.nonzero()[:, 0],), enc
            )
            image = torch.where(img_present[:, None], full, image.to(enc.dtype))

        txt_present = self._modality_dropout(batch.text_mask.to(dev) & ("text" not in drop))  # (B,)
        reply_mask = batch.reply_mask.to(dev)  # (B, K)
        if "replies" in drop:
            reply_mask = torch.zeros_like(reply_mask)
        rep_present = self._modality_dropout(reply_mask.any(1))  # (B,)
        reply_mask = reply_mask & rep_present[:, None]
        # post texts and distinct replies go through the text tower in one call, grouped by length together
        post_tokens = batch.text_tokens[txt_present] if bool(txt_present.any()) else None  # (Nt, T)
        reply_tokens = batch.reply_tokens if bool(reply_mask.any()) else None  # (U, T')
        post_enc, reply_enc = self._encode_texts(post_tokens, reply_tokens, text_encoder)

        text = self.null_text.expand(b, d).clone()
        if post_enc is not None:
            enc = F.normalize(post_enc, dim=-1)  # (Nt, D)
            full = torch.zeros(b, d, dtype=enc.dtype, device=dev).index_put(
                (txt_present.nonzero()[:, 0],), enc
            )
            text = torch.where(txt_present[:, None], full, text.to(enc.dtype))

        k = reply_mask.shape[1]
        replies = self.null_reply.expand(b, k, d).clone()
        if reply_enc is not None:
            enc = F.normalize(reply_enc, dim=-1)  # (U, D) distinct replies
            replies = torch.where(
                reply_mask[..., None], enc[batch.reply_index], replies.to(enc.dtype)
            )  # (B, K, D)
        # a post without replies reads one null reply in slot 0
        null_slot = torch.zeros_like(reply_mask)
        null_slot[:, 0] = ~rep_present
        return Embeddings(
            image=image,
            text=text,
            replies=replies,
            reply_mask=reply_mask | null_slot,
            present={"image": img_present, "text": txt_present, "replies": rep_present},
        )

    def _encode_texts(
        self,
        posts: torch.Tensor | None,
        replies: torch.Tensor | None,
        text_encoder: TextEncoder | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Post-text and reply tokens through one ``encode_text`` call (fewer, fuller length groups)."""
        encode = self.encoder.encode_text if text_encoder is None else text_encoder
        mergeable = (
            posts is not None
            and replies is not None
            and (posts.shape[1] == replies.shape[1] or self.encoder.pads_with_zero)
        )
        if not mergeable or posts is None or replies is None:
            return (
                None if posts is None else encode(posts),
                None if replies is None else encode(replies),
            )
        width = max(posts.shape[1], replies.shape[1])
        tokens = torch.cat(
            [F.pad(posts, (0, width - posts.shape[1])), F.pad(replies, (0, width - replies.shape[1]))]
        )
        enc = encode(tokens)  # (Nt + U, D)
        return enc[: posts.shape[0]], enc[posts.shape[0] :]

    def forward(
        self, batch: PostBatch, drop: Iterable[str] = (), text_encoder: TextEncoder | None = None
    ) -> ContextOutput:
        """Logits for every task; ``drop`` masks modalities (image, text, replies) as if they were absent;
        ``text_encoder`` as in :meth:`encode`."""
        emb = self.encode(batch, drop, text_encoder)
        out = self.fusion(emb.image, emb.text, emb.replies, emb.reply_mask)
        logits = self.heads(out.fused, emb.image)
        weights = out.reply_weights * emb.present["replies"][:, None].to(out.reply_weights.dtype)
        return ContextOutput(logits=logits, fused=out.fused, embeddings=emb, reply_weights=weights)

    def loss(
        self, output: ContextOutput, batch: PostBatch, labeled_per_process: dict[str, float] | None = None
    ) -> LossOutput:
        """Weighted sum of the masked task losses, each the mean over the posts labeled for its task.

        ``labeled_per_process``: in data-parallel training, each task's labeled-post count summed over all
        processes and divided by their number. Each process then divides its summed loss by that instead of
        its own count, so the averaged gradient is the gradient of the mean over every labeled post of the
        global batch, however unevenly the labels fall on the processes (``ximgctx.training.finetune``
        computes it with one all-reduce per step).
        """
        per_task: dict[str, torch.Tensor] = {}
        labeled: dict[str, int] = {}
        total = output.fused.sum() * 0.0
        for spec in self.config.tasks:
            mask = batch.label_mask[spec.name].to(self.device)
            denominator = None if labeled_per_process is None else labeled_per_process[spec.name]
            loss = masked_task_loss(
                output.logits[spec.name],
                batch.targets[spec.name].to(self.device),
                mask,
                spec.kind,
                denominator or None,
            )
            per_task[spec.name] = loss
            labeled[spec.name] = int(mask.sum())
            total = total + spec.weight * loss
        return LossOutput(total=total, per_task=per_task, labeled=labeled)

    def scores(self, logits: dict[str, torch.Tensor], calibrated: bool = True) -> dict[str, torch.Tensor]:
        """Per-task probabilities (softmax or sigmoid), divided by each task's temperature when calibrated."""
        out = {}
        for name, z in logits.items():
            head = self.heads[name]
            out[name] = probabilities(z, head.spec.kind, head.temperature if calibrated else 1.0)
        return out

    # ------------------------------------------------------------------------------------ utilities
    def trainable_parameters(self) -> dict[str, float]:
        """Counts of trainable and total parameters, and the trainable share."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        lora = sum(p.numel() for n, p in self.named_parameters() if p.requires_grad and "lora_" in n)
        return {"trainable": trainable, "total": total, "lora": lora, "share": trainable / max(total, 1)}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split into lora / encoder / fusion / heads, for separate learning rates."""
        groups: dict[str, list[nn.Parameter]] = {"lora": [], "encoder": [], "fusion": [], "heads": []}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_" in name:
                groups["lora"].append(p)
            elif name.startswith("encoder."):
                groups["encoder"].append(p)
            elif name.startswith("heads."):
                groups["heads"].append(p)
            else:  # fusion and the null embeddings
                groups["fusion"].append(p)
        return groups

    def save_pretrained(
        self,
        path: str | Path,
        *,
        card: dict[str, Any] | None = None,
        overwrite: bool = False,
        metadata: dict[str, Any] | None = None,
        authors: bytes | None = None,
    ) -> Path:
        """Write config, safetensors weights, the peft adapter, processor settings, a model card and a
        verified manifest to ``path`` (atomically). ``authors`` (the bytes of
        :func:`ximgctx.governance.authors.model_authors_bytes`: who trained it, as keyed digests) is written
        as :data:`ximgctx.governance.authors.MODEL_AUTHORS_FILE`; training always gives it. ``card`` adds
        sections to the model card (metrics, data governance, training data) on top of those the model
        already carries.

        ``path`` may be new, empty, or a model folder (replaced); a folder holding anything else is refused
        unless ``overwrite=True``. ``metadata`` sets Hugging Face model-card metadata (``license``,
        ``datasets``, ``base_model``, ``tags``, ``pipeline_tag``...) on top of the defaults and the model's
        own (kept across save/load)."""
        from ximgctx.models._serialization import save_model

        return save_model(
            self, Path(path), card=card or {}, overwrite=overwrite, metadata=metadata or {}, authors=authors
        )

    def export_encoder(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Merge the LoRA adapters into the encoder and write a plain checkpoint that needs no ximgctx:
        open_clip (``open_clip.create_model("local-dir:" + path)``) or transformers
        (``CLIPModel.from_pretrained(path)`` / ``SiglipModel``), by the encoder's backend."""
        from ximgctx.models.export import export_encoder

        return export_encoder(self, path, overwrite=overwrite)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = True,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str = "Upload ximgctx model",
        create_pr: bool = False,
        card: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        api: Any = None,
    ) -> Any:
        """Save to a temporary folder, verify it, and upload exactly its files to hub repo ``repo_id`` in one
        commit (created private unless ``private=False``; files an earlier version left there are deleted).
        ``api`` is a ``huggingface_hub.HfApi`` (one is made with ``token`` when None). Returns the commit
        info."""
        import tempfile

        from ximgctx.models.hub import push_folder

        with tempfile.TemporaryDirectory(prefix="ximgctx-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model", card=card, metadata=metadata)
            return push_folder(
                folder,
                repo_id,
                private=private,
                token=token,
                revision=revision,
                commit_message=commit_message,
                create_pr=create_pr,
                api=api,
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        verify: bool = True,
        expected_sha256: str | None = None,
        trust_remote_arch: bool = False,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> ContextModel:
        """Load a folder written by :meth:`save_pretrained`, or a hub repo id (``"org/name"``) holding one.

        Every file is checked against the folder's manifest first (``verify=False`` skips the checksums, for
        a folder you wrote yourself); ``expected_sha256`` pins the exact artifact (its manifest's SHA-256,
        ``ximgctx._artifacts.artifact_digest``). An architecture from outside the registered list
        (``hf-hub:``/``local-dir:``) loads only with ``trust_remote_arch=True``. A repo id is fetched with
        ``huggingface_hub.snapshot_download`` (``revision``, ``cache_dir``; cache only when ``HF_HUB_OFFLINE``
        is set) and always verified.
        """
        from ximgctx.models._serialization import load_model
        from ximgctx.models.hub import resolve_model

        folder, verified = resolve_model(
            path, revision=revision, cache_dir=cache_dir, expected_sha256=expected_sha256
        )
        if verified:  # a hub snapshot, verified with the links into the cache's blobs
            verify, expected_sha256 = False, None
        return load_model(
            cls,
            folder,
            device=torch.device(device),
            verify=verify,
            expected_sha256=expected_sha256,
            trust_remote_arch_=trust_remote_arch,
        )

    @classmethod
    def _skeleton(cls, config: ModelConfig) -> ContextModel:
        """The architecture of ``config`` with random weights and no download (weights follow)."""
        return cls(replace(config, encoder=replace(config.encoder, pretrained=None)))
