"""Adapters that mean what they say, and merged exports that load with no ximgctx installed.

A saved LoRA adapter is labelled peft-format (``adapter/adapter_config.json``) only where stock
``PeftModel.from_pretrained(base, adapter_dir)`` reproduces ximgctx's outputs exactly (tested for every preset
of both backends). open_clip's attention is ``nn.MultiheadAttention``, whose peft 0.21 layer adds the
out_proj delta twice (huggingface/peft#3774): an adapter holding such a layer is saved in ximgctx's own format
(``adapter/ximgctx_adapter.json``, no ``adapter_config.json``, a README saying why), so stock peft refuses it
loudly instead of loading different outputs. The weights file keeps peft's key layout in both cases.

:func:`export_encoder` merges the adapters into the base weights (``W + dW``, once each) and writes a plain
checkpoint: ``open_clip_config.json`` + ``open_clip_model.safetensors`` for open_clip
(``open_clip.create_model("local-dir:DIR")``), or a transformers folder (``CLIPModel.from_pretrained(DIR)``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors.torch import save_file
from torch import nn

from ximgctx._artifacts import write_artifact
from ximgctx.models.encoder import portable_ref
from ximgctx.models.lora import base_name, lora_state_dict

if TYPE_CHECKING:
    from ximgctx.models.context_model import ContextModel

__all__ = ["EXPORT_KIND", "OWN_ADAPTER_CONFIG", "export_encoder", "merged_state_dict", "peft_reproduces"]

EXPORT_KIND = "encoder-export"
#: the adapter config's name in ximgctx's own format (stock peft looks for adapter_config.json and fails)
OWN_ADAPTER_CONFIG = "ximgctx_adapter.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_OWN_README = """# ximgctx LoRA adapter (ximgctx format, not peft's)

This adapter adapts open_clip `nn.MultiheadAttention` layers. Stock peft 0.21 applies the out_proj delta of
such a layer twice (huggingface/peft#3774), so loading it with `PeftModel.from_pretrained` would silently give
other outputs than the model was trained and evaluated with. There is therefore no `adapter_config.json` here
and stock peft refuses this folder. Load the whole model with `ximgctx.ContextModel.from_pretrained(<model
folder>)`, or export merged weights that need no ximgctx: `model.export_encoder(DIR)` (open_clip's
`local-dir:DIR`). `ximgctx_adapter.json` holds the LoRA settings and `adapter_model.safetensors` the weights
in peft's key layout.
"""


def peft_reproduces(clip: nn.Module) -> bool:
    """Whether stock peft loads this model's adapters with identical outputs (no adapted MHA layer)."""
    from peft.tuners.lora.layer import MultiheadAttention as PeftLoraMultiheadAttention

    return not any(isinstance(m, PeftLoraMultiheadAttention) for m in clip.modules())


def save_adapter(model: ContextModel, folder: Path) -> None:
    """The LoRA adapter of ``model`` into ``folder``: peft's format where stock peft reproduces it, else
    ours."""
    if model.lora_config is None:
        raise ValueError("the model has no LoRA adapter to save (its config has lora: null)")
    folder.mkdir()
    config = copy.deepcopy(model.lora_config)
    base, config.revision = model.encoder.base_identity()
    config.base_model_name_or_path = portable_ref(base)
    clip = model.encoder.clip
    if peft_reproduces(clip):
        config.save_pretrained(str(folder))
    else:
        (folder / OWN_ADAPTER_CONFIG).write_text(
            json.dumps({"format": "ximgctx-lora", **config.to_dict()}, indent=2, default=sorted) + "\n"
        )
        (folder / "README.md").write_text(_OWN_README)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in lora_state_dict(clip).items()}
    save_file(weights, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})


@torch.no_grad()
def merged_state_dict(clip: nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's weights with every active adapter merged in (``W + dW``), under unadapted names."""
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import MultiheadAttention as PeftLoraMultiheadAttention

    state = {
        base_name(k): v.detach().cpu().clone() for k, v in clip.state_dict().items() if ".lora_" not in k
    }
    for name, module in clip.named_modules():
        if not isinstance(module, LoraLayer) or module.merged:
            continue
        is_mha = isinstance(module, PeftLoraMultiheadAttention)
        key = base_name(name) + (".in_proj_weight" if is_mha else ".weight")
        for adapter in module.active_adapters:
            if adapter in module.lora_A or adapter in getattr(module, "lora_embedding_A", {}):
                # every concrete LoraLayer (Linear, Embedding, Conv, MultiheadAttention) defines it
                delta = cast(Any, module).get_delta_weight(adapter).detach().cpu()
                state[key] = state[key] + delta.to(state[key].dtype)
    return {k: v.contiguous() for k, v in state.items()}


def export_encoder(model: ContextModel, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the encoder with its LoRA merged as a plain checkpoint that loads without ximgctx.

    open_clip backend: ``open_clip_config.json`` + ``open_clip_model.safetensors``, loaded with
    ``open_clip.create_model("local-dir:" + path)``. transformers backend: a ``save_pretrained`` folder
    (weights, config, tokenizer, image processor) for ``CLIPModel``/``SiglipModel.from_pretrained(path)``.
    The folder also gets ximgctx's ``manifest.json`` (SHA-256 of every file), which both libraries ignore.
    """
    clip = model.encoder.clip
    state = merged_state_dict(clip)
    with write_artifact(Path(path), EXPORT_KIND, overwrite=overwrite) as tmp:
        model.encoder.export_plain(state, tmp)
    return Path(path).resolve()
