"""Architecture sizes bounded before anything is allocated.

A model folder's config decides how much memory its modules take: a few bytes of ``config.json`` saying
``hidden_size: 8192`` with 24 layers make ``transformers`` allocate ~77 GB of random weights *before* any
weight file is checked, ``fusion.hidden_dim: 65536`` makes 51 GB of fusion layers, and a
``preprocessor_config.json`` size of 20000 x 20000 makes every image 1.6 GB per channel. So the parameter
count a config implies is computed from its numbers (plain integer arithmetic, nothing built) and refused
above :attr:`ModelLimits.max_parameters`, naming the value and the limit; image sizes are held to the
process's image limits.

The limits belong to the loading process, like the image decode limits: the defaults admit every real CLIP and
SigLIP (ViT-bigG is 2.5 B parameters, SigLIP so400m 0.9 B); :func:`set_model_limits` raises or lowers them for
the whole process, e.g. ``with model_limits_set(ModelLimits(max_parameters=10**10)): ...`` for a model you
trust.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ximgctx.data.images import ImageLimits
from ximgctx.errors import ConfigError

__all__ = [
    "ModelLimits",
    "ModelSizeError",
    "check_fusion_size",
    "check_hf_checkpoint",
    "check_open_clip_cfg",
    "current_model_limits",
    "model_limits_set",
    "set_model_limits",
]


class ModelSizeError(ConfigError):
    """A model config implies more parameters (or larger images) than the process allows."""


@dataclass(frozen=True)
class ModelLimits:
    """What a model folder may make this process allocate."""

    max_parameters: int = 4_000_000_000  # parameters one encoder (or the fusion + heads) may have
    max_image_side: int = 4096  # pixels on one side of the encoder's or image processor's input
    max_image_pixels: int = ImageLimits().max_pixels  # height x width of that input: the decode limit

    def __post_init__(self) -> None:
        for name in ("max_parameters", "max_image_side", "max_image_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"ModelLimits.{name} must be a positive integer, got {value!r}")


_LIMITS = [ModelLimits()]


def current_model_limits() -> ModelLimits:
    """The limits this process loads models under."""
    return _LIMITS[0]


def set_model_limits(limits: ModelLimits) -> ModelLimits:
    """Set the process's model limits; returns the previous ones."""
    if not isinstance(limits, ModelLimits):
        raise ConfigError(f"set_model_limits takes a ModelLimits, got {type(limits).__name__}")
    previous, _LIMITS[0] = _LIMITS[0], limits
    return previous


@contextlib.contextmanager
def model_limits_set(limits: ModelLimits) -> Iterator[None]:
    """The process's model limits set to ``limits`` inside the block."""
    previous = set_model_limits(limits)
    try:
        yield
    finally:
        set_model_limits(previous)


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 10**8 else f"{n:,}"


def _over(where: str, what: str, n: int, limits: ModelLimits) -> ModelSizeError:
    return ModelSizeError(
        f"{where}: {what} implies {_billions(n)} parameters ({n * 4 / 1e9:.1f} GB in float32), over this "
        f"process's limit of {_billions(limits.max_parameters)} (ModelLimits.max_parameters; "
        "ximgctx.models.size_limits.set_model_limits raises it for a model you trust); nothing was allocated"
    )


def _pos_int(cfg: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if isinstance(value, float) and value.is_integer() and 0 < value < 2**63:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelSizeError(f"{where}.{key} must be a positive integer, got {value!r}")
    return value


def _transformer_params(width: int, hidden: int, layers: int) -> int:
    """One pre-norm transformer stack: attention (4 W x W + biases), MLP (2 W x H + biases), 2 layer norms."""
    return layers * (4 * width * width + 4 * width + 2 * width * hidden + hidden + width + 4 * width)


def _check_side(where: str, key: str, height: int, width: int, limits: ModelLimits) -> None:
    if max(height, width) > limits.max_image_side or height * width > limits.max_image_pixels:
        raise ModelSizeError(
            f"{where}: {key} {height}x{width} is over this process's image limits "
            f"({limits.max_image_side} px a side, {limits.max_image_pixels:,} pixels; "
            "ModelLimits.max_image_side / max_image_pixels)"
        )


# ------------------------------------------------------------------------------------------ transformers
#: transformers' defaults for the fields a config may leave out: (text, vision, projection)
_HF_DEFAULTS: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "clip": (
        {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "vocab_size": 49408,
         "max_position_embeddings": 77},
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "image_size": 224,
         "patch_size": 32, "num_channels": 3},
    ),
    "siglip": (
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "vocab_size": 32000,
         "max_position_embeddings": 64},
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "image_size": 224,
         "patch_size": 16, "num_channels": 3},
    ),
}  # fmt: skip


def hf_parameters(raw: Mapping[str, Any], where: str) -> tuple[int, str]:
    """The parameters a transformers CLIP/SigLIP ``config.json`` implies, and the part that is largest."""
    text_d, vision_d = _HF_DEFAULTS[str(raw.get("model_type"))]
    text = raw.get("text_config") or {}
    vision = raw.get("vision_config") or {}
    if not isinstance(text, Mapping) or not isinstance(vision, Mapping):
        raise ModelSizeError(f"{where}: text_config and vision_config must be objects")
    t = {k: _pos_int(text, k, v, f"{where} text_config") for k, v in text_d.items()}
    v = {k: _pos_int(vision, k, d, f"{where} vision_config") for k, d in vision_d.items()}
    text_params = (t["vocab_size"] + t["max_position_embeddings"]) * t["hidden_size"] + _transformer_params(
        t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    )
    patches = (v["image_size"] // v["patch_size"]) ** 2 + 1
    vision_params = (v["num_channels"] * v["patch_size"] ** 2 + patches) * v["hidden_size"]
    vision_params += _transformer_params(v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"])
    proj = _pos_int(raw, "projection_dim", 512, where) if raw.get("model_type") == "clip" else 0
    total = text_params + vision_params + proj * (t["hidden_size"] + v["hidden_size"])
    if vision_params >= text_params:
        what = (
            f"vision_config hidden_size={v['hidden_size']}, intermediate_size={v['intermediate_size']}, "
            f"num_hidden_layers={v['num_hidden_layers']}"
        )
    else:
        what = (
            f"text_config hidden_size={t['hidden_size']}, intermediate_size={t['intermediate_size']}, "
            f"num_hidden_layers={t['num_hidden_layers']}, vocab_size={t['vocab_size']}"
        )
    return total, what


def _sides(value: Any) -> list[tuple[str, int, int]]:
    """The (what, height, width) an image processor's ``size`` / ``crop_size`` value asks for."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [("", int(value), int(value))]
    if isinstance(value, Mapping):
        out = []
        if "height" in value or "width" in value:
            h, w = value.get("height", 0), value.get("width", 0)
            if isinstance(h, (int, float)) and isinstance(w, (int, float)):
                out.append((".height/width", int(h), int(w)))
        for key in ("shortest_edge", "longest_edge"):
            side = value.get(key)
            if isinstance(side, (int, float)) and not isinstance(side, bool):
                out.append((f".{key}", int(side), int(side)))
        return out
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, int) for x in value):
        return [("", int(value[0]), int(value[1]))]
    return []


def _read_json(path: Path, max_bytes: int = 4 << 20) -> Any:
    if not path.is_file() or path.stat().st_size > max_bytes:
        return None
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return None  # the loader that reads it next names the problem


def check_hf_checkpoint(folder: Path, limits: ModelLimits | None = None) -> None:
    """Refuse a transformers checkpoint folder whose ``config.json`` implies more parameters than
    ``limits`` allow (the process's by default), or whose ``config.json`` image size or
    ``preprocessor_config.json`` ``size`` / ``crop_size`` exceeds the process's image limits, before any
    module is built."""
    limits = limits if limits is not None else current_model_limits()
    cfg_path = folder / "config.json"
    raw = _read_json(cfg_path)
    if isinstance(raw, Mapping) and raw.get("model_type") in _HF_DEFAULTS:
        total, what = hf_parameters(raw, str(cfg_path))
        if total > limits.max_parameters:
            raise _over(str(cfg_path), what, total, limits)
        vision = raw.get("vision_config") or {}
        side = _pos_int(vision, "image_size", 224, f"{cfg_path} vision_config")
        _check_side(str(cfg_path), "vision_config.image_size", side, side, limits)
    pre_path = folder / "preprocessor_config.json"
    pre = _read_json(pre_path)
    if isinstance(pre, Mapping):
        for key in ("size", "crop_size"):
            for suffix, h, w in _sides(pre.get(key)):
                _check_side(str(pre_path), f"{key}{suffix}", h, w, limits)


# ------------------------------------------------------------------------------------------------ open_clip
def open_clip_parameters(model_cfg: Mapping[str, Any], where: str) -> tuple[int, str]:
    """The parameters an open_clip ``model_cfg`` (``vision_cfg`` / ``text_cfg`` widths and layers)
    implies: the two transformer towers; a ResNet tower (``layers`` a list) counts as its width squared per
    block, an upper bound of the same order."""
    total, what, best = 0, "", -1
    embed = _pos_int(model_cfg, "embed_dim", 512, where)
    for tower, defaults in (
        ("vision_cfg", {"width": 768, "layers": 12, "patch_size": 16, "image_size": 224}),
        ("text_cfg", {"width": 512, "layers": 12, "vocab_size": 49408, "context_length": 77}),
    ):
        cfg = model_cfg.get(tower) or {}
        if not isinstance(cfg, Mapping):
            raise ModelSizeError(f"{where}: {tower} must be an object")
        if cfg.get("timm_model_name") or cfg.get("hf_model_name"):
            continue  # a timm / transformers tower: its size comes from its own registry, not this config
        layers_v = cfg.get("layers", defaults["layers"])
        blocks = (
            sum(_pos_int({"layers": n}, "layers", 1, f"{where} {tower}") for n in layers_v)
            if isinstance(layers_v, (list, tuple))
            else _pos_int(cfg, "layers", defaults["layers"], f"{where} {tower}")
        )
        width = _pos_int(cfg, "width", defaults["width"], f"{where} {tower}")
        ratio = cfg.get("mlp_ratio", 4.0)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 2**20:
            raise ModelSizeError(f"{where} {tower}.mlp_ratio must be a positive number, got {ratio!r}")
        n = _transformer_params(width, int(width * ratio), blocks) + width * embed
        if tower == "text_cfg":
            vocab = _pos_int(cfg, "vocab_size", defaults["vocab_size"], f"{where} {tower}")
            ctx = _pos_int(cfg, "context_length", defaults["context_length"], f"{where} {tower}")
            n += (vocab + ctx) * width
        else:
            patch = _pos_int(cfg, "patch_size", defaults["patch_size"], f"{where} {tower}")
            side = cfg.get("image_size", defaults["image_size"])
            side = side[0] if isinstance(side, (list, tuple)) and side else side
            side = _pos_int({"image_size": side}, "image_size", 224, f"{where} {tower}")
            n += (3 * patch * patch + (side // patch) ** 2 + 1) * width
        total += n
        if n > best:
            best, what = n, f"{tower} width={width}, layers={layers_v}"
    return total, what


def check_open_clip_cfg(model_cfg: Any, where: str, limits: ModelLimits | None = None) -> None:
    """Refuse an open_clip ``model_cfg`` implying more parameters than the process allows, or an image size
    beyond its image limits."""
    if not isinstance(model_cfg, Mapping):
        return
    limits = limits if limits is not None else current_model_limits()
    total, what = open_clip_parameters(model_cfg, where)
    if total > limits.max_parameters:
        raise _over(where, what, total, limits)
    vision = model_cfg.get("vision_cfg") or {}
    side = vision.get("image_size", 224) if isinstance(vision, Mapping) else 224
    pair: Any = side if isinstance(side, (list, tuple)) and len(side) == 2 else (side, side)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in pair):
        _check_side(where, "vision_cfg.image_size", int(pair[0]), int(pair[1]), limits)


# -------------------------------------------------------------------------------------------------- fusion
def fusion_parameters(embed_dim: int, fusion: Any) -> int:
    """The parameters a ``FusionConfig`` implies on ``embed_dim``-wide embeddings (an upper bound over the
    three kinds: input projections, the interaction, the transformer layers and the MLP)."""
    h, d, layers = int(fusion.hidden_dim), int(fusion.cross_dim), int(fusion.layers)
    rank = int(fusion.cross_rank) if fusion.cross_rank else d
    inputs = 3 * (embed_dim + 1) * h + 3 * (embed_dim + 1) * d  # image / text / replies into H and into d
    interaction = min(d * d, 2 * d * rank) * h + h
    stack = _transformer_params(h, 4 * h, layers) if fusion.kind == "attention" else 0
    mlp = 2 * (3 * embed_dim * h + h * h + 2 * h)
    return inputs + interaction + stack + mlp


def check_fusion_size(
    embed_dim: int, fusion: Any, where: str = "fusion", limits: ModelLimits | None = None
) -> None:
    """Refuse a fusion config implying more parameters than the process allows, before it is built: an
    arithmetic upper bound first; above the limit, the exact count of the module built on the ``meta`` device
    (shapes only, no memory)."""
    limits = limits if limits is not None else current_model_limits()
    total = fusion_parameters(embed_dim, fusion)
    if total <= limits.max_parameters:
        return
    if fusion.layers <= 1024:
        import torch

        from ximgctx.models.fusion import build_fusion

        with torch.device("meta"):
            module = build_fusion(embed_dim, fusion)
        total = sum(p.numel() for p in module.parameters())
        if total <= limits.max_parameters:
            return
    what = f"fusion.hidden_dim={fusion.hidden_dim} (kind={fusion.kind}, layers={fusion.layers})"
    raise _over(where, what, total, limits)
