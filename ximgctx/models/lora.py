"""LoRA on the CLIP encoder through peft, with target presets resolved by module type.

open_clip's attention blocks are ``nn.MultiheadAttention``, which calls its ``out_proj`` through
``F.linear``: an adapter on ``out_proj`` alone would never run and train nothing. The ``attn`` preset
therefore targets the whole MHA module, which peft adapts as one unit (its in-projection and
out-projection both get adapters). ``mlp`` targets the Linear layers inside transformer blocks, ``conv``
the convolutions of a ResNet image tower. The same reasoning excludes the q/k/v projections of a ResNet
tower's attention pool, which are also read as raw weights.
"""

from __future__ import annotations

from collections.abc import Iterable

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from torch import nn

from ximgctx.config import LoraSettings

__all__ = ["apply_lora", "lora_state_dict", "load_lora_state_dict", "resolve_lora_targets", "peft_config"]

_TOWER_PREFIX = {"image": "visual.", "text": ""}


def _tower_of(name: str) -> str:
    return "image" if name.startswith("visual.") else "text"


def _inside_block(name: str) -> bool:
    # transformer blocks in open_clip live under ".resblocks."; ResNet bottlenecks under ".layerN."
    return ".resblocks." in name


def resolve_lora_targets(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Full module names of ``model`` (an open_clip model) that the presets select, sorted."""
    wanted = set(settings.targets)
    presets = {"attn", "mlp", "conv", "all"}
    explicit = wanted - presets
    if "all" in wanted:
        wanted |= {"attn", "mlp", "conv"}
    mha_children: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            mha_children.update(f"{name}.{c}" for c, _ in module.named_modules() if c)
    names: set[str] = set()
    for name, module in model.named_modules():
        if not name or _tower_of(name) not in settings.towers or name in mha_children:
            continue
        if name in explicit or any(name.endswith("." + e) for e in explicit):
            names.add(name)
        elif "attn" in wanted and isinstance(module, nn.MultiheadAttention):
            names.add(name)
        elif "mlp" in wanted and isinstance(module, nn.Linear) and _inside_block(name) and ".mlp." in name:
            names.add(name)
        elif "conv" in wanted and isinstance(module, nn.Conv2d) and name.startswith("visual.") and \
                ".attnpool." not in name:
            names.add(name)
    if not names:
        kinds = sorted({type(m).__name__ for _, m in model.named_modules()})
        raise ValueError(
            f"lora.targets={settings.targets} on towers {settings.towers} selects no module of this encoder; "
            f"its module types are {kinds}. Use presets attn, mlp, conv or all, or exact module names."
        )
    return sorted(names)


def peft_config(settings: LoraSettings, targets: Iterable[str]) -> LoraConfig:
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=sorted(targets),
        bias="none",
    )


def apply_lora(model: nn.Module, settings: LoraSettings) -> LoraConfig:
    """Inject adapters into ``model`` in place and return the peft config used.

    Only the adapters are left trainable inside ``model``; every other encoder weight is frozen.
    """
    config = peft_config(settings, resolve_lora_targets(model, settings))
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
    return config


def lora_state_dict(model: nn.Module) -> dict:
    """The adapter weights in peft's key format (as in ``adapter_model.safetensors``)."""
    return get_peft_model_state_dict(model)


def load_lora_state_dict(model: nn.Module, state: dict) -> None:
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter weights hold keys this model does not have: {unexpected[:5]}")


def base_name(name: str) -> str:
    """A parameter's name as it is in the plain open_clip model (peft inserts ``.base_layer``)."""
    return name.replace(".base_layer", "")
