"""The peft-specific part of ximgctx's LoRA: the exact ``nn.MultiheadAttention`` layer and the peft config
that registers it. Imported only when a model has adapters (peft imports transformers, ~1 s)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft.tuners.lora.layer import MultiheadAttention as PeftLoraMultiheadAttention
from torch import nn

from ximgctx.config import LoraSpec

__all__ = ["ExactLoraMultiheadAttention", "peft_config"]


class ExactLoraMultiheadAttention(PeftLoraMultiheadAttention):
    """peft's LoRA for ``nn.MultiheadAttention`` without mutating the base weights."""

    def forward(self, query: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        active = [a for a in self.active_adapters if a in self.lora_A]
        if self.disable_adapters or self.merged or not active:
            return super().forward(query, *args, **kwargs)
        previous_dtype = query.dtype
        base: Any = self.get_base_layer()  # the wrapped nn.MultiheadAttention; out_proj is a peft LoRA Linear
        out_base = base.out_proj.get_base_layer()
        w_in = base._parameters["in_proj_weight"]
        w_out = out_base._parameters["weight"]
        merged_in = w_in + sum(self.get_delta_weight(a).to(w_in.dtype) for a in active)  # (3E, E)
        merged_out = w_out + sum(base.out_proj.get_delta_weight(a).to(w_out.dtype) for a in active)  # (E, E)
        try:
            # nn.MultiheadAttention reads these attributes inside its forward
            # (F.multi_head_attention_forward); a plain tensor in their place routes gradients to the
            # adapters and leaves the Parameters alone.
            base._parameters["in_proj_weight"] = merged_in
            out_base._parameters["weight"] = merged_out
            result = base(query, *args, **kwargs)
        finally:
            base._parameters["in_proj_weight"] = w_in
            out_base._parameters["weight"] = w_out
        return (result[0].to(previous_dtype), result[1].to(previous_dtype) if result[1] is not None else None)


def peft_config(settings: LoraSpec, targets: Iterable[str]) -> PeftLoraConfig:
    """peft's config for exactly ``targets`` (full module names).

    A *list* of names would make peft match by suffix: the text tower's ``transformer.resblocks.0.attn`` also
    matches the image tower's ``visual.transformer.resblocks.0.attn``, so ``towers: [text]`` would adapt both.
    One anchored regex (peft full-matches a string) selects the named modules and nothing else.
    """
    config = PeftLoraConfig(
        r=settings.r,
        # peft annotates lora_alpha as int, but scales by lora_alpha / r as a float
        lora_alpha=settings.alpha,  # type: ignore[arg-type]
        lora_dropout=settings.dropout,
        target_modules="^(?:" + "|".join(re.escape(t) for t in sorted(targets)) + ")$",
        bias="none",
    )
    config._register_custom_module({nn.MultiheadAttention: ExactLoraMultiheadAttention})
    return config
