"""LoRA through peft: every adapter trains, base weights stay bit-identical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ximgctx import ContextModel, EncoderConfig, LoraSpec, ModelConfig
from ximgctx.models.lora import base_name, resolve_lora_targets
from ximgctx.models.open_clip_encoder import build_clip

from ..helpers import TASKS


def _model(arch: str, targets: list[str]) -> ContextModel:
    torch.manual_seed(0)
    return ContextModel(
        ModelConfig(
            tasks=TASKS, encoder=EncoderConfig(arch=arch), lora=LoraSpec(r=4, alpha=8.0, targets=targets)
        )
    )


@pytest.mark.parametrize(
    ("arch", "targets"),
    [("ximgctx-tiny", ["attn", "mlp"]), ("ximgctx-tiny-32", ["all"]), ("ximgctx-tiny-rn", ["all"])],
)
def test_one_step_trains_every_adapter_and_no_base_weight(arch, targets, posts) -> None:
    model = _model(arch, targets).train()
    with torch.no_grad():
        # open_clip zero-initialises the last BatchNorm of every ResNet bottleneck, which leaves the block's
        # convolutions without gradient in a randomly initialised tower; trained weights are never zero there.
        for name, p in model.encoder.clip.named_parameters():
            if name.endswith("bn3.weight"):
                p.fill_(1.0)
    base = {base_name(k): v.clone() for k, v in model.encoder.clip.state_dict().items() if "lora_" not in k}
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for n, p in model.encoder.named_parameters() if "lora_" not in n)
    share = model.trainable_parameters()
    assert 0 < share["lora"] <= share["trainable"] < share["total"] and 0 < share["share"] < 0.3

    batch = model.processor(posts)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    # Step 1: B starts at zero (the adapted model equals the base model), so only B gets a gradient.
    model.loss(model(batch), batch).total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
    opt.step()
    opt.zero_grad()
    # After that one step B != 0, and every adapter parameter, A included, receives a gradient.
    model.loss(model(batch), batch).total.backward()
    zero = [n for n, p in lora.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert zero == [], f"adapters without gradient: {zero[:5]}"
    opt.step()
    after = {base_name(k): v for k, v in model.encoder.clip.state_dict().items() if "lora_" not in k}
    assert base.keys() == after.keys()
    changed = [k for k in base if not torch.equal(base[k], after[k])]
    assert changed == [], f"base weights changed: {changed[:5]}"


def test_attn_preset_targets_whole_mha_not_out_proj() -> None:
    clip = build_clip(EncoderConfig(arch="ximgctx-tiny"))
    names = resolve_lora_targets(clip, LoraSpec(targets=["attn"]))
    assert names and all(n.endswith(".attn") for n in names)
    n_mha = sum(isinstance(m, nn.MultiheadAttention) for _, m in clip.named_modules())
    assert len(names) == n_mha
    assert not any(n.endswith("out_proj") for n in names)


def test_tower_selection_and_bad_targets() -> None:
    clip = build_clip(EncoderConfig(arch="ximgctx-tiny"))
    names = resolve_lora_targets(clip, LoraSpec(targets=["attn"], towers=["text"]))
    assert names and not any(n.startswith("visual.") for n in names)
    with pytest.raises(ValueError, match="selects no module"):
        resolve_lora_targets(clip, LoraSpec(targets=["conv"], towers=["text"]))


def test_mha_adapter_equals_merged_reference() -> None:
    """The adapted attention equals a plain MHA whose weights are W + dW (in_proj and out_proj, once each)."""
    import copy

    from peft import inject_adapter_in_model

    from ximgctx.models.lora import peft_config

    torch.manual_seed(0)
    holder = nn.Module()
    holder.attn = nn.MultiheadAttention(16, 2, batch_first=True)
    base = copy.deepcopy(holder.attn)
    inject_adapter_in_model(peft_config(LoraSpec(r=2, alpha=2.0), ["attn"]), holder)
    with torch.no_grad():
        for name, p in holder.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    a = holder.attn
    out_proj = a.base_layer.out_proj
    d_in = a.lora_B["default"].weight @ a.lora_A["default"].weight * a.scaling["default"]
    d_out = (
        out_proj.lora_B["default"].weight @ out_proj.lora_A["default"].weight * out_proj.scaling["default"]
    )
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        ours = holder.attn(x, x, x, need_weights=False)[0]
        base.in_proj_weight.add_(d_in)
        base.out_proj.weight.add_(d_out)
        reference = base(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    assert ours.abs().sum() > 0


@pytest.mark.parametrize("towers", [["text"], ["image"], ["image", "text"]])
def test_adapters_land_on_the_named_towers_only(towers) -> None:
    """peft matches a list of target names by suffix, and the text tower's module names are suffixes of the
    image tower's (``transformer.resblocks.0.attn`` / ``visual.transformer.resblocks.0.attn``): the adapted
    modules must be exactly the resolved ones."""
    model = ContextModel(
        ModelConfig(
            tasks=TASKS,
            encoder=EncoderConfig(arch="ximgctx-tiny"),
            lora=LoraSpec(r=2, alpha=4.0, targets=["all"], towers=towers),
        )
    )
    clip = model.encoder.clip
    adapted = sorted(
        {
            n.split(".lora_")[0].replace(".base_layer", "")
            for n, _ in clip.named_parameters()
            if ".lora_" in n and ".out_proj." not in n.split(".lora_")[0] + "."
        }
    )
    expected = resolve_lora_targets(
        build_clip(EncoderConfig(arch="ximgctx-tiny")), LoraSpec(targets=["all"], towers=towers)
    )
    assert adapted == expected
    assert any(n.startswith("visual.") for n in adapted) == ("image" in towers)
    assert any(not n.startswith("visual.") for n in adapted) == ("text" in towers)
