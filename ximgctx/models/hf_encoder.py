"""The Hugging Face encoder: a ``transformers`` ``CLIPModel`` or ``SiglipModel`` behind ClipEncoder's
interface.

The checkpoint (a hub repo id or a local folder) brings its own weights, tokenizer and image-processor
settings. Classes are chosen explicitly from the config's ``model_type`` (no ``AutoModel``, never
``trust_remote_code``); weights load from safetensors only and a download never fetches ``.bin``/``.py``
files.

Tokens follow ximgctx's processor convention, id 0 = padding: the tokenizer wrapper stores each id plus one.
CLIP's text tower is causal and pools at the end-of-text token, so its batches are trimmed to their longest
real sequence with the same embeddings. SigLIP pools the *last* position of text padded to the fixed length it
was trained with, so trimming would change every embedding: its texts stay padded (pads are real tokens
there), exactly as ``get_text_features`` sees them with the checkpoint's own ``padding="max_length"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ximgctx._fsutil import sha256_file
from ximgctx._hub import looks_like_repo_id, snapshot
from ximgctx.config import EncoderConfig
from ximgctx.data.text import trim_tokens
from ximgctx.errors import ConfigError
from ximgctx.models.encoder import Encoder, ModelFolderError, PretrainedWeightsError, encode_by_length
from ximgctx.models.size_limits import check_hf_checkpoint

__all__ = ["HF_MODEL_TYPES", "HFEncoder", "resolve_checkpoint"]

#: config.json ``model_type`` -> (model class, image processor class) names in ``transformers``
HF_MODEL_TYPES: dict[str, tuple[str, str]] = {
    "clip": ("CLIPModel", "CLIPImageProcessor"),
    "siglip": ("SiglipModel", "SiglipImageProcessor"),
}
#: files a checkpoint download may fetch: configs, safetensors weights, tokenizer data; never pickles or code
HF_DIR = "hf"  # in a saved model: the checkpoint's config, tokenizer and image processor (no weights)
_ALLOW = ["*.json", "*.safetensors", "*.txt", "*.model"]
_MAX_CONFIG_BYTES = 4 << 20


def _offline(arch: str, why: str) -> str:
    return (
        f"cannot load the transformers checkpoint {arch!r}: {why}. On a machine with network access run "
        f"huggingface_hub.snapshot_download({arch!r}) (or "
        f"CLIPModel.from_pretrained({arch!r}).save_pretrained(DIR) "
        f"with its tokenizer and image processor), copy the folder here and pass it: "
        f"EncoderConfig(backend='transformers', arch='/path/to/folder')."
    )


def resolve_checkpoint(config: EncoderConfig) -> tuple[Path, str | None]:
    """The local folder of ``config.arch`` and its hub commit (None for a folder given by the caller).

    A hub id is fetched (or found in the cache) with ``snapshot_download``; offline and uncached, one error
    names the id and how to pass a folder, at once.
    """
    arch = config.arch
    if Path(arch).expanduser().is_dir():
        return Path(arch).expanduser(), None
    if os.sep in arch.strip("/").replace("/", "", 1) or arch.startswith((".", "/", "~")):
        raise PretrainedWeightsError(f"encoder.arch={arch!r} looks like a folder but no such folder exists")
    folder = snapshot(
        arch,
        revision=config.revision,
        cache_dir=config.cache_dir,
        allow_patterns=_ALLOW,
        error=lambda why: PretrainedWeightsError(_offline(arch, why)),
    )
    return folder, folder.name


def _model_type(folder: Path) -> str:
    path = folder / "config.json"
    if not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: missing or too large; a transformers CLIP/SigLIP checkpoint has one")
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in HF_MODEL_TYPES:
        raise ConfigError(
            f"{path}: model_type {model_type!r} is not one the transformers backend loads "
            f"({sorted(HF_MODEL_TYPES)}); SigLIP 2 (siglip2) takes variable-resolution patches and is not "
            f"supported yet"
        )
    return model_type


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok_cfg = folder / "tokenizer_config.json"
    if tok_cfg.is_file():
        raw = json.loads(tok_cfg.read_bytes()) if tok_cfg.stat().st_size < _MAX_CONFIG_BYTES else {}
        if isinstance(raw, dict) and "auto_map" in raw:
            raise ConfigError(f"{tok_cfg}: names a custom tokenizer class (auto_map), which is code; refused")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    if not type(tokenizer).__module__.startswith("transformers."):
        raise ConfigError(f"{folder}: tokenizer class {type(tokenizer).__name__} is not one of transformers'")
    return tokenizer


class HFTokenizer:
    """``texts -> (N, context_length)`` ids + 1, with 0 for padding (the processor's convention).

    ``fixed_length`` (SigLIP) pads every text to ``context_length`` with the checkpoint's pad token, stored as
    a real id, so nothing downstream trims it.
    """

    def __init__(self, tokenizer: Any, context_length: int, fixed_length: bool) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.fixed_length = fixed_length

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        enc = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
            return_attention_mask=True,
        )
        ids = enc["input_ids"].long() + 1  # (N, T)
        if self.fixed_length:
            return ids
        return ids * enc["attention_mask"].long()


class HFEncoder(Encoder):
    """A transformers CLIP/SigLIP model: the :class:`~ximgctx.models.encoder.Encoder` of
    ``backend="transformers"``.

    Args:
        config: ``backend="transformers"``; ``arch`` is the checkpoint.
        folder: read the checkpoint from this folder instead of ``config.arch`` (a saved ximgctx model's
            ``hf/`` copy).
        load_weights: False builds the architecture with random weights (saved weights follow).
    """

    backend = "transformers"

    #: a transformers ``CLIPModel`` or ``SiglipModel`` (its class is chosen from the checkpoint's config)
    clip: Any

    def __init__(self, config: EncoderConfig, folder: Path | None = None, load_weights: bool = True) -> None:
        super().__init__()
        import transformers

        self.config = config
        revision = None
        if folder is None:
            folder, revision = resolve_checkpoint(config)
        self.model_type = _model_type(folder)
        check_hf_checkpoint(folder)  # the sizes the config implies, before any module is built
        model_name, processor_name = HF_MODEL_TYPES[self.model_type]
        model_cls = getattr(transformers, model_name)
        if load_weights:
            if not any(folder.glob("*.safetensors")):
                raise PretrainedWeightsError(
                    f"{folder}: no .safetensors weights; ximgctx never unpickles .bin checkpoints. Convert "
                    "them "
                    f"where you trust the file: {model_name}.from_pretrained(DIR).save_pretrained(DIR)"
                )
            self.clip = model_cls.from_pretrained(str(folder), use_safetensors=True)
        else:
            self.clip = model_cls(model_cls.config_class.from_pretrained(str(folder)))
        self.image_processor = getattr(transformers, processor_name).from_pretrained(str(folder))
        self.hf_tokenizer = _load_tokenizer(folder)
        text_cfg, vision_cfg = self.clip.config.text_config, self.clip.config.vision_config
        #: where the starting weights came from: checkpoint, hub commit, weights file digest (model cards)
        self.provenance: dict[str, str | None] = {"pretrained": config.arch, "revision": revision}
        weights = folder / "model.safetensors"
        self.provenance["sha256"] = sha256_file(weights) if load_weights and weights.is_file() else None
        self.embed_dim: int = int(
            self.clip.config.projection_dim if self.model_type == "clip" else vision_cfg.hidden_size
        )
        self.image_size: int = int(vision_cfg.image_size)
        limit = getattr(self.hf_tokenizer, "model_max_length", None) or 10**9
        self.context_length: int = int(min(text_cfg.max_position_embeddings, limit))
        self.pad_id = int(self.hf_tokenizer.pad_token_id if self.hf_tokenizer.pad_token_id is not None else 0)
        self.tokenizer = HFTokenizer(
            self.hf_tokenizer, self.context_length, fixed_length=not self.pads_with_zero
        )
        if config.grad_checkpointing:
            self.clip.gradient_checkpointing_enable()

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    @property
    def pads_with_zero(self) -> bool:
        """Whether padding is id 0 and trimmable: CLIP's causal text tower yes, SigLIP's last-token pooling
        no."""
        return self.model_type == "clip"

    @property
    def image_tower(self) -> nn.Module:
        return self.clip.vision_model

    @property
    def preprocess(self) -> dict[str, Any]:
        """The image processor's settings (size, mean/std, resize mode), as saved in
        ``processor_config.json``."""
        return self.image_processor.to_dict()

    def image_transform(self) -> Any:
        """PIL image -> (3, S, S) tensor with the checkpoint's own image processor."""
        processor = self.image_processor

        def transform(image: Any) -> torch.Tensor:
            return processor(images=image, return_tensors="pt")["pixel_values"][0]

        return transform

    def save_files(self, folder: Path) -> None:
        """Write the HF config, tokenizer files and image-processor settings (no weights) into the model
        folder's ``hf/``."""
        out = folder / HF_DIR
        out.mkdir(parents=True, exist_ok=True)
        self.clip.config.save_pretrained(str(out))
        self.hf_tokenizer.save_pretrained(str(out))
        self.image_processor.save_pretrained(str(out))

    def export_plain(self, state: dict[str, torch.Tensor], folder: Path) -> None:
        """A ``save_pretrained`` folder (weights, config, tokenizer, image processor) for
        ``CLIPModel``/``SiglipModel.from_pretrained(folder)``."""
        plain = type(self.clip)(self.clip.config)
        plain.load_state_dict(state)
        plain.save_pretrained(str(folder))
        self.hf_tokenizer.save_pretrained(str(folder))
        self.image_processor.save_pretrained(str(folder))

    @classmethod
    def for_saved_model(cls, config: EncoderConfig, folder: Path) -> HFEncoder:
        """The architecture, tokenizer and image processor from the saved model's own ``hf/`` copy."""
        if not (folder / HF_DIR).is_dir():
            raise ModelFolderError(
                f"{folder / HF_DIR}: missing, but the config's encoder is a transformers model"
            )
        try:
            return cls(config, folder=folder / HF_DIR, load_weights=False)
        except (OSError, ValueError) as e:  # a ConfigError too: the saved copy names code (auto_map), ...
            raise ModelFolderError(f"{folder / HF_DIR}: not a usable transformers checkpoint ({e})") from None

    def base_identity(self) -> tuple[str, str | None]:
        # the hub commit; for a local folder the weights file's SHA-256
        prov = self.provenance
        return self.config.arch, prov.get("revision") or self.config.revision or prov.get("sha256")

    def base_model(self) -> str | None:
        return self.config.arch if looks_like_repo_id(self.config.arch) else None

    @staticmethod
    def _features(out: Any) -> torch.Tensor:
        # transformers < 5 returns the projected tensor; 5 returns a model output whose pooler_output it is
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D), unnormalised: the model's ``get_image_features``."""
        return self._features(self.clip.get_image_features(pixel_values=pixels))

    def encode_text(self, tokens: torch.Tensor, trim: bool = True) -> torch.Tensor:
        """(N, T) ids + 1 (0 = padding) -> (N, D), unnormalised: the model's ``get_text_features``.

        With ``trim``, CLIP rows are grouped by real length and each group cut to its longest row (as
        ClipEncoder does); SigLIP rows arrive at their fixed length, every position a real id.
        """
        if not self.pads_with_zero:
            ids = torch.where(tokens > 0, tokens - 1, torch.full_like(tokens, self.pad_id))
            return self._features(self.clip.get_text_features(input_ids=ids))
        if not trim:
            return self._clip_text(tokens)
        return encode_by_length(tokens, lambda rows: self._clip_text(trim_tokens(rows)))

    def _clip_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's text features of (N, L) ids + 1 with 0 = padding (masked, pad id restored) -> (N, D)."""
        real = tokens > 0  # (N, L)
        ids = torch.where(real, tokens - 1, torch.full_like(tokens, self.pad_id))
        return self._features(self.clip.get_text_features(input_ids=ids, attention_mask=real.long()))

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(pixels), self.encode_text(tokens)
