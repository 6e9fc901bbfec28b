"""Loading builds the architecture without initialising it, then assigns every saved weight: same outputs,
every tensor loaded, buffers computed, nothing skipped outside the loading thread."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ximgctx import ContextModel, LoraSpec
from ximgctx.models._serialization import ModelFolderError
from ximgctx.models._skeleton import (
    building_skeleton,
    skeleton_tensors,
    skip_parameter_init,
    unloaded_parameters,
)

from ..helpers import tiny_config, tiny_model


def _outputs(model: ContextModel, posts) -> dict[str, torch.Tensor]:
    batch = model.processor(posts)
    with torch.no_grad():
        out = model(batch)
    return {**out.logits, "fused": out.fused, "reply_weights": out.reply_weights}


def _nontrivial(model: ContextModel) -> ContextModel:
    with torch.no_grad():  # adapters and heads away from their (zero / prompt) initial values
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("heads."):
                p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize(
    "lora",
    [None, LoraSpec(r=4, alpha=8.0), LoraSpec(r=4, alpha=8.0, targets=["attn", "mlp", "embed"])],
    ids=["no-lora", "lora-attn", "lora-attn-mlp-embed"],
)
def test_loaded_model_equals_saved_one_tensor_for_tensor(tmp_path, posts, lora) -> None:
    torch.manual_seed(0)
    config = replace(tiny_config("attention", lora=False), lora=lora)
    model = _nontrivial(ContextModel(config).eval())
    loaded = ContextModel.from_pretrained(model.save_pretrained(tmp_path / "m"))

    a, b = _outputs(model, posts), _outputs(loaded, posts)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # every parameter and every buffer, the non-persistent ones (causal masks) included
    saved = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    got = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())}
    assert saved.keys() == got.keys()
    for name, tensor in got.items():
        assert tensor.device.type == "cpu" and not tensor.is_meta, name
        assert tensor.dtype == saved[name].dtype, name
        assert torch.equal(tensor, saved[name]), name
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_skipped_initialisation_leaves_rng_and_buffers_alone() -> None:
    from open_clip.transformer import TextTransformer

    torch.manual_seed(0)
    seeded = torch.get_rng_state()
    reference = TextTransformer(context_length=16, vocab_size=64, width=32, heads=4, layers=1)
    assert not torch.equal(torch.get_rng_state(), seeded)  # initialising drew from the random stream

    torch.manual_seed(0)
    with skip_parameter_init():
        assert building_skeleton()
        skeleton = TextTransformer(context_length=16, vocab_size=64, width=32, heads=4, layers=1)
    assert not building_skeleton()
    assert torch.equal(torch.get_rng_state(), seeded)  # no initialisation ran
    # the causal mask is a non-persistent buffer, never in a saved file: it is computed as usual
    assert "attn_mask" not in skeleton.state_dict()
    assert torch.equal(skeleton.attn_mask, reference.attn_mask)


def test_other_threads_build_initialised_models_meanwhile() -> None:
    torch.manual_seed(1)
    reference = nn.Linear(8, 8).weight.detach().clone()
    seen: list[torch.Tensor] = []

    def build() -> None:
        torch.manual_seed(1)
        seen.append(nn.Linear(8, 8).weight.detach().clone())

    with skip_parameter_init():
        thread = threading.Thread(target=build)
        thread.start()
        thread.join()
    assert torch.equal(seen[0], reference)


def test_unloaded_parameters_are_named() -> None:
    with skip_parameter_init():
        model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    skeleton = skeleton_tensors(model)
    model.load_state_dict({"0.weight": torch.ones(3, 4), "0.bias": torch.zeros(3)}, strict=False, assign=True)
    assert unloaded_parameters(model, skeleton) == ["1.weight", "1.bias"]
    assert unloaded_parameters(model, skeleton, exclude="1.") == []


def test_adapter_missing_a_key_is_refused(tmp_path) -> None:
    path = tiny_model("concat").save_pretrained(tmp_path / "m")
    adapter = path / "adapter" / "adapter_model.safetensors"
    state = load_file(str(adapter))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(adapter))
    with pytest.raises(ModelFolderError, match="miss") as err:
        ContextModel.from_pretrained(path, verify=False)  # verification would refuse the edited file first
    assert "adapter_model.safetensors" in str(err.value)


def test_weights_saved_in_another_dtype_load_in_the_architectures(tmp_path, posts) -> None:
    model = tiny_model("concat", lora=False)
    path = model.save_pretrained(tmp_path / "m")
    weights = path / "model.safetensors"
    halves = {k: v.half() for k, v in load_file(str(weights)).items()}
    save_file(halves, str(weights), metadata={"format": "pt"})
    loaded = ContextModel.from_pretrained(path, verify=False)
    for name, p in loaded.named_parameters():
        assert p.dtype == torch.float32, name
        assert torch.equal(p, dict(model.named_parameters())[name].half().float()), name


def test_zero_shot_heads_come_from_the_file_not_the_prompts(tmp_path) -> None:
    model = tiny_model("concat", lora=False)
    head = model.heads["objects"]  # image-sourced with a prompt: initialised from the text tower when built
    assert head.spec.prompt is not None
    with torch.no_grad():
        for p in head.parameters():
            p.add_(1.0)
    loaded = ContextModel.from_pretrained(model.save_pretrained(tmp_path / "m"))
    for (name, p), q in zip(head.named_parameters(), loaded.heads["objects"].parameters(), strict=True):
        assert torch.equal(p, q), name
