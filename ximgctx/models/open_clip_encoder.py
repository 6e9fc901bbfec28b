"""The CLIP encoder: open_clip image and text towers, with token trimming for short texts.

Weights come from a pretrained tag (downloaded as open_clip does it, or found in the local cache), from a
local file, or from random initialisation. Offline, a tag that is not cached fails at once with a message
that names the architecture, the tag and how to pass a local file, instead of open_clip's retry loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from safetensors.torch import save_file
from torch import nn

from ximgctx._fsutil import sha256_file
from ximgctx._hub import hub_reachable
from ximgctx.config import EncoderConfig
from ximgctx.data.text import trim_tokens
from ximgctx.errors import ConfigError
from ximgctx.models.encoder import Encoder, PretrainedWeightsError, encode_by_length, encode_rowwise
from ximgctx.models.size_limits import check_open_clip_cfg

logger = logging.getLogger(__name__)

__all__ = [
    "REMOTE_ARCH_PREFIXES",
    "ClipEncoder",
    "build_clip",
    "make_tokenizer",
    "register_model_configs",
    "trust_remote_arch",
]

_CONFIG_DIR = resources.files("ximgctx.models") / "model_configs"
#: open_clip architectures shipped inside the package: one JSON config each in models/model_configs/.
SHIPPED_ARCHS: tuple[str, ...] = tuple(
    sorted(p.name[: -len(".json")] for p in _CONFIG_DIR.iterdir() if p.name.endswith(".json"))
)

_registered = False


#: Architecture names that make open_clip read a config (and possibly a tokenizer) from outside ximgctx's
#: registered list: a hub repo or a folder. They can reach transformers' remote code, so they load only
#: inside :func:`trust_remote_arch` (a caller's explicit opt-in, never a value read from a file).
REMOTE_ARCH_PREFIXES = ("hf-hub:", "local-dir:")
#: The only tokenizer settings taken from a remote architecture's config; anything else (such as
#: ``trust_remote_code``) is dropped.
_SAFE_TOKENIZER_KWARGS = ("clean", "strip_sep_token", "language")
_TRUST_REMOTE_ARCH: contextvars.ContextVar[bool] = contextvars.ContextVar("trust_remote_arch", default=False)


@contextlib.contextmanager
def trust_remote_arch(enabled: bool = True):
    """Allow ``hf-hub:`` / ``local-dir:`` architectures inside this block (the caller's opt-in).

    Such an architecture is code and configuration from outside the package; a model folder naming one is
    refused unless the code loading it says so: ``ContextModel.from_pretrained(path, trust_remote_arch=True)``
    or ``with ximgctx.trust_remote_arch(): ContextModel(config)``; on the command line
    ``--trust-remote-arch``.
    """
    token = _TRUST_REMOTE_ARCH.set(bool(enabled))
    try:
        yield
    finally:
        _TRUST_REMOTE_ARCH.reset(token)


def check_arch(arch: str) -> None:
    """Refuse an architecture that is neither registered (shipped or open_clip built-in) nor opted in."""
    register_model_configs()
    if arch.startswith(REMOTE_ARCH_PREFIXES):
        if not _TRUST_REMOTE_ARCH.get():
            raise ConfigError(
                f"encoder.arch={arch!r} loads an architecture from outside ximgctx's registered list, which "
                "can "
                "run code shipped with it; refusing it. Only when you trust its source, opt in from your "
                "own "
                f"code: ContextModel.from_pretrained(path, trust_remote_arch=True) or "
                f"`with ximgctx.trust_remote_arch(): ...` (command line: --trust-remote-arch)"
            )
        return
    if arch not in open_clip.list_models():
        from ximgctx.models.hub import transformers_hint

        hint = transformers_hint(arch) if Path(arch).is_dir() else ""
        if not hint and arch.count("/") == 1 and not Path(arch).exists():
            hint = (
                f"; {arch!r} looks like a Hugging Face hub id: a transformers CLIPModel or SiglipModel "
                f"checkpoint is read with backend='transformers' (EncoderConfig(backend='transformers', "
                f"arch={arch!r}))"
            )
        raise ConfigError(
            f"unknown open_clip architecture {arch!r}; shipped tiny ones: {list(SHIPPED_ARCHS)}, "
            f"built-in ones include ViT-B-32, ViT-B-16, RN50 (see open_clip.list_models()){hint}"
        )


def _remote_model_cfg(arch: str, cache_dir: str | None) -> Any:
    from open_clip.factory import _get_hf_config

    schema, _, ident = arch.partition(":")
    if schema == "local-dir":
        raw = json.loads((Path(ident) / "open_clip_config.json").read_text(encoding="utf-8"))
    else:
        raw = _get_hf_config(ident, cache_dir=cache_dir)
    return raw.get("model_cfg") if isinstance(raw, dict) else None


def _remote_text_cfg(arch: str, cache_dir: str | None) -> dict[str, Any]:
    model_cfg = _remote_model_cfg(arch, cache_dir)
    text_cfg = model_cfg.get("text_cfg") if isinstance(model_cfg, dict) else None
    return text_cfg if isinstance(text_cfg, dict) else {}


def make_tokenizer(arch: str, cache_dir: str | None = None) -> Any:
    """open_clip's tokenizer for ``arch``. For a registered architecture it is open_clip's own; for an
    opted-in remote one it is built here from the remote config's tokenizer name and the few settings in
    ``_SAFE_TOKENIZER_KWARGS`` only, with ``trust_remote_code=False``."""
    check_arch(arch)
    if not arch.startswith(REMOTE_ARCH_PREFIXES):
        return open_clip.get_tokenizer(arch)
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer, SimpleTokenizer

    text_cfg = _remote_text_cfg(arch, cache_dir)
    context_length = int(text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH))
    name = text_cfg.get("hf_tokenizer_name")
    if not name:
        return SimpleTokenizer(context_length=context_length)
    given = text_cfg.get("tokenizer_kwargs")
    raw_kwargs: dict[str, Any] = given if isinstance(given, dict) else {}
    kwargs = {k: raw_kwargs[k] for k in _SAFE_TOKENIZER_KWARGS if k in raw_kwargs}
    dropped = sorted(set(raw_kwargs) - set(kwargs))
    if dropped:
        logger.warning("%s: tokenizer settings %s from its config are not used", arch, dropped)
    source = arch.partition(":")[2] if arch.startswith("local-dir:") else str(name)
    return HFTokenizer(
        source,
        context_length=context_length,
        cache_dir=cache_dir,
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        trust_remote_code=False,
        **kwargs,
    )


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns "initialized randomly" for a skeleton whose weights are loaded right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def quiet_random_init():
    """Silence open_clip's random-initialisation warning while a model's saved weights are about to load."""
    filt = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def register_model_configs() -> None:
    """Register the package's tiny architectures with open_clip (idempotent)."""
    global _registered
    if _registered:
        return
    open_clip.add_model_config(Path(str(_CONFIG_DIR)))
    _registered = True


def _offline_message(arch: str, tag: str, why: str) -> str:
    return (
        f"cannot load pretrained weights {tag!r} for open_clip architecture {arch!r}: {why}. "
        f"Download the checkpoint on a machine with network access (for example "
        f"open_clip.create_model({arch!r}, pretrained={tag!r}) fills the Hugging Face cache), then either "
        "copy "
        f"the cache here or pass the file itself: EncoderConfig(arch={arch!r}, "
        "pretrained='/path/to/weights.safetensors') "
        f"(or encoder.pretrained=/path/... on the command line)."
    )


def _resolve_pretrained(config: EncoderConfig) -> str | None:
    """Turn ``config.pretrained`` into something open_clip loads without network surprises."""
    tag = config.pretrained
    if tag is None:
        return None
    if os.path.sep in tag or tag.endswith((".pt", ".pth", ".bin", ".safetensors")) or Path(tag).exists():
        if not Path(tag).is_file():
            from ximgctx.models.hub import transformers_hint

            what = (
                "is a folder, not a weights file"
                if Path(tag).is_dir()
                else "looks like a path but no such file exists"
            )
            raise PretrainedWeightsError(f"encoder.pretrained={tag!r} {what}{transformers_hint(tag)}")
        return tag
    cfg = open_clip.get_pretrained_cfg(config.arch, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(config.arch)
        raise PretrainedWeightsError(
            f"unknown pretrained tag {tag!r} for architecture {config.arch!r}; known tags: "
            f"{known or 'none'}. "
            f"A local weights file can be passed as encoder.pretrained instead."
        )
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        for name in ([filename] if filename else []) + [
            "open_clip_model.safetensors",
            "open_clip_pytorch_model.bin",
        ]:
            cached = try_to_load_from_cache(repo, name, cache_dir=config.cache_dir)
            if isinstance(cached, str):
                return cached
    if not hub_reachable():
        raise PretrainedWeightsError(
            _offline_message(
                config.arch, tag, "it is not in the local cache and the hub is unreachable (offline)"
            )
        )
    return tag


def build_clip(config: EncoderConfig) -> nn.Module:
    """Create the open_clip model named by ``config`` with its weights."""
    check_arch(config.arch)
    if config.arch.startswith(REMOTE_ARCH_PREFIXES):
        model_cfg = _remote_model_cfg(config.arch, config.cache_dir)
    else:
        model_cfg = open_clip.get_model_config(config.arch)
    check_open_clip_cfg(model_cfg, f"encoder.arch={config.arch!r}")  # sizes bounded before building
    pretrained = _resolve_pretrained(config)
    try:
        model = open_clip.create_model(config.arch, pretrained=pretrained, cache_dir=config.cache_dir)
    except Exception as e:
        if pretrained is not None and not Path(pretrained).is_file():
            raise PretrainedWeightsError(
                _offline_message(config.arch, pretrained, f"download failed ({e})")
            ) from e
        raise
    return model


def _provenance(config: EncoderConfig) -> dict[str, str | None]:
    tag = config.pretrained
    if tag is None:
        return {"pretrained": None, "sha256": None}
    path = Path(tag)
    if path.is_file():
        return {"pretrained": path.name, "sha256": sha256_file(path)}
    return {"pretrained": tag, "sha256": None}


def _plain_blocks(transformer: nn.Module) -> bool:
    """open_clip residual blocks that :func:`_block_at` may run at one position (no cross-attention,
    batch-first, no gradient checkpointing, whose recomputation goes through the transformer's own loop)."""
    blocks = getattr(transformer, "resblocks", None)
    return (
        blocks is not None
        and len(blocks) > 0
        and getattr(transformer, "batch_first", True)
        and not getattr(transformer, "grad_checkpointing", False)
        and all(isinstance(b, ResidualAttentionBlock) and not hasattr(b, "ln_1_kv") for b in blocks)
    )


def _pools_class_token(visual: Any) -> bool:
    return (
        isinstance(visual, VisionTransformer)
        and hasattr(visual, "_embeds")
        and visual.attn_pool is None
        and getattr(visual, "pool_type", None) == "tok"
        and not visual.output_tokens
        and not visual.final_ln_after_pool
        and _plain_blocks(visual.transformer)
    )


def _block_at(
    block: ResidualAttentionBlock,
    x: torch.Tensor,
    index: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """An open_clip ``ResidualAttentionBlock``'s output at one position per row: (N, L, W) -> (N, W).

    The query is that position alone; keys and values are every position not in ``key_padding_mask``
    (True = ignore). Equals ``block(x)[rows, index]`` when the mask reproduces that row's attention mask.
    """
    rows = torch.arange(x.shape[0], device=x.device)
    y = block.ln_1(x)  # (N, L, W)
    q = y[rows, index].unsqueeze(1)  # (N, 1, W)
    attended = block.attn(q, y, y, need_weights=False, key_padding_mask=key_padding_mask)[0]  # (N, 1, W)
    h = x[rows, index].unsqueeze(1) + block.ls_1(attended)
    h = h + block.ls_2(block.mlp(block.ln_2(h)))
    return h[:, 0]


def _manual_attention_ok(block: ResidualAttentionBlock) -> bool:
    attn = block.attn
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn._qkv_same_embed_dim
        and attn.in_proj_weight is not None
        and attn.batch_first
        and attn.bias_k is None
        and not attn.add_zero_attn
    )


def _block_at_rowwise(
    block: ResidualAttentionBlock, x: torch.Tensor, index: torch.Tensor, ignore: torch.Tensor
) -> torch.Tensor:
    """:func:`_block_at` with the attention written out as matrix products (the fused attention kernel
    for a single query rounds a row differently with the number of rows in the call; these do not).
    (N, L, W) -> (N, W); ``ignore`` (N, L) True for keys after the pooled position."""
    attn = block.attn
    n, length, e = x.shape
    heads = attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e : 2 * e], b[2 * e :])
    rows = torch.arange(n, device=x.device)
    y = block.ln_1(x)  # (N, L, W)
    q = F.linear(y[rows, index], w[:e], bq).view(n, heads, 1, e // heads)  # (N, h, 1, d)
    k = F.linear(y, w[e : 2 * e], bk).view(n, length, heads, e // heads).transpose(1, 2)  # (N, h, L, d)
    v = F.linear(y, w[2 * e :], bv).view(n, length, heads, e // heads).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) * (e // heads) ** -0.5  # (N, h, 1, L)
    scores = scores.masked_fill(ignore[:, None, None, :], float("-inf"))
    mixed = (scores.softmax(dim=-1) @ v).reshape(n, e)  # (N, W)
    h = x[rows, index] + block.ls_1(attn.out_proj(mixed))
    return h + block.ls_2(block.mlp(block.ln_2(h)))


@functools.lru_cache(maxsize=8)
def _shared_tokenizer(arch: str) -> Any:
    # building the BPE tables takes ~0.15 s; tokenizers are stateless, so one per architecture is shared
    return make_tokenizer(arch)


class ClipEncoder(Encoder):
    """open_clip's image and text towers behind a small interface.

    ``encode_text`` runs the text transformer on token batches trimmed to their longest real sequence.
    Because CLIP's text attention is causal and pools at the end-of-text token, the embeddings equal
    open_clip's on the full 77-token padding (tested), at a fraction of the cost for short texts.
    """

    backend = "open_clip"

    #: open_clip's ``CLIP`` or ``CustomTextCLIP``; its towers are read by attribute name
    clip: Any

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = build_clip(config)
        size = self.clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.context_length = int(getattr(self.clip, "context_length", 77))
        #: where the starting weights came from: the tag or file, and the file's SHA-256 (model cards)
        self.provenance: dict[str, str | None] = _provenance(config)
        self.embed_dim: int = int(self._infer_embed_dim())
        if config.grad_checkpointing:
            self.clip.set_grad_checkpointing(True)

    def export_plain(self, state: dict[str, torch.Tensor], folder: Path) -> None:
        """``open_clip_config.json`` + ``open_clip_model.safetensors``, loaded with
        ``open_clip.create_model("local-dir:" + folder)``."""
        model_cfg = open_clip.get_model_config(self.config.arch)
        if model_cfg is None:
            raise ValueError(
                f"open_clip has no config for architecture {self.config.arch!r}; cannot export it"
            )
        save_file(state, str(folder / "open_clip_model.safetensors"), metadata={"format": "pt"})
        config = {"model_cfg": model_cfg, "preprocess_cfg": self.preprocess}
        (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")

    def base_model(self) -> str | None:
        pretrained = self.config.pretrained
        if pretrained is None or Path(pretrained).exists():
            return None
        hub = (open_clip.get_pretrained_cfg(self.config.arch, pretrained) or {}).get("hf_hub", "")
        return "/".join(hub.strip("/").split("/")[:2]) or None

    def _infer_embed_dim(self) -> int:
        proj = getattr(self.clip, "text_projection", None)
        if isinstance(proj, nn.Linear):
            return proj.out_features
        if isinstance(proj, torch.Tensor):
            return proj.shape[1]
        with torch.no_grad():
            size = self.image_size
            return self.clip.encode_image(torch.zeros(1, 3, size, size)).shape[-1]

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for this architecture: ``texts -> (N, context_length)`` ids, 0 = padding."""
        return _shared_tokenizer(self.config.arch)

    @property
    def image_tower(self) -> nn.Module:
        return self.clip.visual

    @property
    def preprocess(self) -> dict[str, Any]:
        """open_clip's preprocessing settings (size, mean/std, interpolation, resize mode)."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in open_clip.get_model_preprocess_cfg(self.clip).items()
        }

    def image_transform(self) -> Any:
        """PIL image -> (3, S, S) tensor: open_clip's evaluation preprocessing."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(self.clip))
        return image_transform_v2(cfg, is_train=False)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D), unnormalised: open_clip's ``encode_image``.

        A ViT that pools its class token reads only that token of the last block's output, so the last block
        runs for that one query (keys and values still from every token): about a tenth of the tower's
        compute saved, same embeddings up to float rounding (tested against open_clip).
        """
        visual = self.clip.visual
        if not _pools_class_token(visual):
            return self.clip.encode_image(pixels)
        x = visual._embeds(pixels)  # (N, 1 + P, W)
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x)
        index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        pooled = visual.ln_post(_block_at(blocks[-1], x, index))  # (N, W)
        return pooled @ visual.proj if visual.proj is not None else pooled

    @property
    def pads_with_zero(self) -> bool:
        """Whether token id 0 is padding for this text tower (open_clip's own tokenizer, trimmable towers)."""
        return self._text_parts() is not None

    def _text_parts(self) -> Any:
        # The built-in CLIP text tower keeps its parts on the model; CustomTextCLIP keeps them on .text.
        # Both are trimmable when they pool at a token position under a causal mask.
        owner = self.clip.text if hasattr(self.clip, "text") else self.clip
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
        if not all(hasattr(owner, n) for n in needed):
            return None  # e.g. a Hugging Face text tower: no trimming
        if getattr(owner, "cls_emb", None) is not None:
            return None
        pool = getattr(owner, "text_pool_type", getattr(owner, "pool_type", "argmax"))
        if pool not in ("argmax", "eos") or getattr(owner, "attn_mask", None) is None:
            return None
        return owner

    def encode_text(self, tokens: torch.Tensor, trim: bool = True) -> torch.Tensor:
        """(N, T) token ids -> (N, D), unnormalised.

        With ``trim`` (the default) rows are grouped by their real length and each group runs trimmed to its
        own longest row, so a batch of short replies with one long one does not pad everything to the long
        one. The grouping is exact: causal attention and end-of-text pooling make padding invisible.
        """
        owner = self._text_parts()
        if owner is None or not trim:
            return self.clip.encode_text(tokens)
        return encode_by_length(tokens, lambda rows: self._encode_trimmed(owner, rows))

    def encode_text_rowwise(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> (N, D), each row depending on its own tokens only (see
        :func:`~ximgctx.models.encoder.encode_rowwise`): rows run at a fixed width just above their real
        length, in calls of a fixed number of rows. Equal to :meth:`encode_text` up to float rounding."""
        owner = self._text_parts()
        if owner is None:
            return super().encode_text_rowwise(tokens)
        return encode_rowwise(
            tokens,
            lambda rows: self._encode_trimmed(owner, rows, trim=False, rowwise=True),
            limit=self.context_length,
        )

    def _encode_trimmed(
        self, owner: Any, tokens: torch.Tensor, *, trim: bool = True, rowwise: bool = False
    ) -> torch.Tensor:
        """open_clip's text forward on tokens cut to their longest real sequence: (N, L) -> (N, D).
        ``trim=False`` runs at the width given; ``rowwise`` computes the last block's attention with
        plain matrix products (:func:`_block_at_rowwise`)."""
        if trim:
            tokens = trim_tokens(tokens)
        seq_len = tokens.shape[1]
        cast_dtype = owner.transformer.get_cast_dtype()
        x = owner.token_embedding(tokens).to(cast_dtype)  # (N, L, W)
        x = x + owner.positional_embedding[:seq_len].to(cast_dtype)
        attn_mask = owner.attn_mask[:seq_len, :seq_len]
        pool = getattr(owner, "text_pool_type", getattr(owner, "pool_type", "argmax"))
        if pool == "argmax":
            idx = tokens.argmax(dim=-1)
        else:
            eos: Any = getattr(owner, "text_eos_id", getattr(owner, "eos_id", None))
            idx = (tokens == eos).int().argmax(dim=-1)
        transformer = owner.transformer
        if _plain_blocks(transformer):
            # only the pooled (end-of-text) position of the last block is read: run that block for it alone,
            # its causal mask being "keys up to the pooled position"
            for block in transformer.resblocks[:-1]:
                x = block(x, attn_mask=attn_mask)
            ignore = torch.arange(seq_len, device=x.device)[None, :] > idx[:, None]  # (N, L) keys after it
            last = transformer.resblocks[-1]
            if rowwise and _manual_attention_ok(last):
                x = owner.ln_final(_block_at_rowwise(last, x, idx, ignore))  # (N, W)
            else:
                x = owner.ln_final(_block_at(last, x, idx, ignore))  # (N, W)
        else:
            x = owner.ln_final(transformer(x, attn_mask=attn_mask))
            x = x[torch.arange(x.shape[0], device=x.device), idx]  # (N, W)
        proj = owner.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(pixels), self.encode_text(tokens)
