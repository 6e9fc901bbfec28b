"""LoRA on the CLIP encoder through peft, with target presets resolved by module type.

open_clip's attention blocks are ``nn.MultiheadAttention``, which calls its ``out_proj`` through
``F.linear``: an adapter on ``out_proj`` alone would never run and train nothing. The ``attn`` preset
therefore targets the whole MHA module, which peft adapts as one unit (its in-projection and
out-projection both get adapters). ``mlp`` targets the Linear layers inside transformer blocks, ``conv``
the convolutions of a ResNet image tower, ``embed`` the text tower's token embedding (peft's embedding LoRA:
a low-rank update of the whole vocabulary table; it is what lets LoRA teach a text tower new words, which
matters most on a randomly initialised tower like the quickstart's). ``all`` is all four. The same reasoning
as for ``out_proj`` excludes the q/k/v projections of a ResNet tower's attention pool, which are also read as
raw weights.

peft's own MHA layer runs each forward by adding the adapter delta into the base weights and subtracting it
again afterwards. In floating point ``(W + d) - d != W``, so the frozen base weights drift a little on every
step (measured: every adapted in_proj and out_proj weight differs after one training step). ximgctx swaps in
:class:`~ximgctx.models._peft.ExactLoraMultiheadAttention`, which hands MHA the merged weight as a temporary
tensor and puts the original Parameter object back untouched, so base weights stay bit-identical (tested).
peft 0.21's layer also adds the out_proj delta twice (``W + 2 dW``; huggingface/peft#3774); this one applies
``W + dW``, checked against a plain ``nn.MultiheadAttention`` holding the merged weights. Because stock peft
would reload such an adapter with the doubled delta, adapters with an MHA target are saved in ximgctx's own
adapter format (no ``adapter_config.json``, so ``PeftModel.from_pretrained`` refuses them loudly); every other
adapter is saved in peft's format and reloads in stock peft with identical outputs (see
:func:`ximgctx.models.export.save_adapter`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ximgctx.config import LORA_PRESETS, LoraSpec

if TYPE_CHECKING:
    from peft import LoraConfig as PeftLoraConfig

# peft (and the transformers it imports, ~1 s) loads only when a model has adapters: the peft-specific code is
# in ximgctx.models._peft, imported by the functions below when they run.

__all__ = ["apply_lora", "lora_state_dict", "load_lora_state_dict", "resolve_lora_targets", "peft_config"]

#: transformers CLIP/SigLIP: the Linear layers of each preset, by their last name (attention layers call their
#: projections as modules, so q/k/v/out_proj adapters all run; SigLIP's pooling-head MHA is left out, since
#: stock peft would not reproduce it)
_HF_LINEAR_PRESETS = {"attn": ("q_proj", "k_proj", "v_proj", "out_proj"), "mlp": ("fc1", "fc2")}


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "vision_model") and hasattr(model, "text_model")


def _tower_of(name: str) -> str:
    return "image" if name.startswith(("visual.", "vision_model.")) else "text"


def _hf_preset_match(name: str, module: nn.Module, wanted: set[str]) -> bool:
    """Whether a transformers CLIP/SigLIP module belongs to one of the ``wanted`` presets."""
    last = name.rsplit(".", 1)[-1]
    if not name.startswith(("vision_model.", "text_model.")):
        return False  # the projections between the towers and the contrastive space stay frozen
    if isinstance(module, nn.Linear):
        if ".head.attention." in name:
            return False
        return any(p in wanted and last in names for p, names in _HF_LINEAR_PRESETS.items())
    if isinstance(module, nn.Embedding):
        return "embed" in wanted and last == "token_embedding"
    return isinstance(module, nn.Conv2d) and "conv" in wanted


def _inside_block(name: str) -> bool:
    # transformer blocks in open_clip live under ".resblocks."; ResNet bottlenecks under ".layerN."
    return ".resblocks." in name


def resolve_lora_targets(model: nn.Module, settings: LoraSpec) -> list[str]:
    """Full module names of ``model`` (an open_clip or transformers CLIP/SigLIP model) the presets select.

    transformers models: ``attn`` = ``q_proj``/``k_proj``/``v_proj``/``out_proj``, ``mlp`` = ``fc1``/``fc2``,
    ``embed`` = the text tower's ``token_embedding``, ``conv`` = the patch embedding.
    """
    hf = _is_hf(model)
    wanted = set(settings.targets)
    presets = set(LORA_PRESETS)
    explicit = wanted - presets
    if "all" in wanted:
        wanted |= {"attn", "mlp", "conv", "embed"}
    mha_children: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            mha_children.update(f"{name}.{c}" for c, _ in module.named_modules() if c)
    names: set[str] = set()
    for name, module in model.named_modules():
        if (
            not name
            or _tower_of(name) not in settings.towers
            or name in mha_children
            or ".base_layer" in name
            or ".lora_" in name
        ):
            continue
        if name in explicit or any(name.endswith("." + e) for e in explicit):
            names.add(name)
        elif hf:
            if _hf_preset_match(name, module, wanted):
                names.add(name)
        elif "attn" in wanted and isinstance(module, nn.MultiheadAttention):
            names.add(name)
        elif "mlp" in wanted and isinstance(module, nn.Linear) and _inside_block(name) and ".mlp." in name:
            names.add(name)
        elif (
            "conv" in wanted
            and isinstance(module, nn.Conv2d)
            and name.startswith("visual.")
            and ".attnpool." not in name
        ):
            names.add(name)
        elif "embed" in wanted and isinstance(module, nn.Embedding):
            names.add(name)
    if not names:
        kinds = sorted({type(m).__name__ for _, m in model.named_modules()})
        raise ValueError(
            f"lora.targets={settings.targets} on towers {settings.towers} selects no module of this encoder; "
            f"its module types are {kinds}. Use presets attn, mlp, conv, embed or all, or exact module names."
        )
    return sorted(names)


def peft_config(settings: LoraSpec, targets: Iterable[str]) -> PeftLoraConfig:
    """peft's config for exactly ``targets`` (full module names): :func:`ximgctx.models._peft.peft_config`."""
    from ximgctx.models._peft import peft_config as _peft_config

    return _peft_config(settings, targets)


def apply_lora(model: nn.Module, settings: LoraSpec) -> PeftLoraConfig:
    """Inject adapters into ``model`` in place and return the peft config used.

    Only the adapters are left trainable inside ``model``; every other encoder weight is frozen.
    """
    from peft import inject_adapter_in_model

    config = peft_config(settings, resolve_lora_targets(model, settings))
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
    return config


#: ``PeftModel.save_pretrained`` prefixes adapter keys with this; ours match, so peft loads our adapters.
_PEFT_PREFIX = "base_model.model."


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights keyed as in peft's ``adapter_model.safetensors``."""
    from peft import get_peft_model_state_dict

    return {_PEFT_PREFIX + k: v for k, v in get_peft_model_state_dict(model).items()}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    state = {k[len(_PEFT_PREFIX) :] if k.startswith(_PEFT_PREFIX) else k: v for k, v in state.items()}
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter weights hold keys this model does not have: {unexpected[:5]}")
    # every adapter weight must come from the file: a loaded model's adapters are not initialised
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise ValueError(f"adapter weights miss {len(missing)} of this model's adapter keys: {missing[:5]}")


def base_name(name: str) -> str:
    """A parameter's name as it is in the plain open_clip model (peft inserts ``.base_layer``)."""
    return name.replace(".base_layer", "")
