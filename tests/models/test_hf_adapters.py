"""Adapters that mean what they say: stock peft reproduces ximgctx's outputs or refuses the folder; merged
exports load in plain open_clip / transformers."""

from __future__ import annotations

import json
import subprocess
import sys

import open_clip
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from ximgctx import ContextModel, EncoderConfig, LoraSpec, ModelConfig
from ximgctx.models.encoder import portable_ref
from ximgctx.models.open_clip_encoder import build_clip

from ..helpers import TASKS
from ..hf_tiny import make_tiny_clip, make_tiny_siglip

pytestmark = pytest.mark.usefixtures("one_thread")

PRESETS = ["attn", "mlp", "conv", "embed", "all"]
TEXTS = ["a cat photo!", "when monday hits", "lol same"]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"clip": make_tiny_clip(root / "clip"), "siglip": make_tiny_siglip(root / "siglip")}


def _model(backend: str, hf_dirs, targets: list[str]) -> ContextModel:
    if backend == "open_clip":
        encoder = EncoderConfig(arch="ximgctx-tiny")
    else:
        encoder = EncoderConfig(backend="transformers", arch=str(hf_dirs[backend]))
    torch.manual_seed(0)
    model = ContextModel(
        ModelConfig(tasks=TASKS, encoder=encoder, lora=LoraSpec(r=4, alpha=8.0, targets=targets))
    ).eval()
    with torch.no_grad():  # non-trivial adapters: B is zero at initialisation
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    return model


def _base(backend: str, hf_dirs, path):
    """The plain base model a user holds: open_clip's with the saved encoder weights, or the HF checkpoint."""
    if backend != "open_clip":
        from transformers import CLIPModel, SiglipModel

        return (CLIPModel if backend == "clip" else SiglipModel).from_pretrained(str(hf_dirs[backend])).eval()
    clip = build_clip(EncoderConfig(arch="ximgctx-tiny"))
    weights = load_file(str(path / "model.safetensors"))
    clip.load_state_dict(
        {k[len("encoder.clip.") :]: v for k, v in weights.items() if k.startswith("encoder.clip.")}
    )
    return clip.eval()


def _plain_outputs(
    backend: str, model: ContextModel, plain, pixels: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Image and text embeddings computed the way a plain open_clip / transformers user does."""
    with torch.no_grad():
        if backend == "open_clip":
            return plain.encode_image(pixels), plain.encode_text(
                open_clip.get_tokenizer("ximgctx-tiny")(TEXTS)
            )
        tok = model.encoder.hf_tokenizer(
            TEXTS, padding="max_length", max_length=model.encoder.context_length, return_tensors="pt"
        )
        image = plain.get_image_features(pixel_values=pixels).pooler_output
        return image, plain.get_text_features(input_ids=tok["input_ids"]).pooler_output


def _ours(model: ContextModel, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model.encoder.encode_image(pixels), model.encoder.encode_text(model.processor.tokenize(TEXTS))


@pytest.mark.parametrize("backend", ["open_clip", "clip", "siglip"])
@pytest.mark.parametrize("preset", PRESETS)
def test_stock_peft_reproduces_or_refuses(backend, preset, hf_dirs, tmp_path) -> None:
    model = _model(backend, hf_dirs, [preset])
    path = model.save_pretrained(tmp_path / "m")
    adapter = path / "adapter"
    torch.manual_seed(1)
    s = model.encoder.image_size
    pixels = torch.randn(2, 3, s, s)
    ours = _ours(model, pixels)
    base = _base(backend, hf_dirs, path)
    unadapted = _plain_outputs(backend, model, base, pixels)
    effect = max(float((a - b).abs().max()) for a, b in zip(ours, unadapted, strict=True))
    assert effect > 1e-3  # the adapters change the outputs, so equality below means something
    mha = backend == "open_clip" and preset in ("attn", "all")
    if mha:
        assert not (adapter / "adapter_config.json").exists()
        assert "peft#3774" in (adapter / "README.md").read_text()
        own = json.loads((adapter / "ximgctx_adapter.json").read_text())
        assert own["format"] == "ximgctx-lora" and own["base_model_name_or_path"] == "ximgctx-tiny"
        with pytest.raises(ValueError, match="adapter_config.json"):
            PeftModel.from_pretrained(base, str(adapter))
        return
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == portable_ref(model.config.encoder.arch)  # no local folder
    assert config["revision"] == model.encoder.provenance["sha256"]
    theirs = _plain_outputs(backend, model, PeftModel.from_pretrained(base, str(adapter)).eval(), pixels)
    for a, b in zip(ours, theirs, strict=True):
        assert float((a - b).abs().max()) < 1e-5


_PLAIN_SCRIPT = r"""
import sys
import open_clip, torch
from safetensors.torch import load_file, save_file
from transformers import CLIPModel, SiglipModel
inputs = load_file(sys.argv[1])
out = {}
oc = open_clip.create_model("local-dir:" + sys.argv[2]).eval()
cls = {"clip": CLIPModel, "siglip": SiglipModel}
with torch.no_grad():
    out["open_clip_image"] = oc.encode_image(inputs["open_clip_pixels"])
    out["open_clip_text"] = oc.encode_text(open_clip.get_tokenizer("local-dir:" + sys.argv[2])(%(texts)r))
    for kind, folder in (("clip", sys.argv[3]), ("siglip", sys.argv[4])):
        m = cls[kind].from_pretrained(folder).eval()
        out[kind + "_image"] = m.get_image_features(pixel_values=inputs[kind + "_pixels"]).pooler_output
        out[kind + "_text"] = m.get_text_features(input_ids=inputs[kind + "_ids"]).pooler_output
assert "ximgctx" not in sys.modules
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[5])
"""


def test_merged_export_loads_without_ximgctx(hf_dirs, tmp_path) -> None:
    inputs, expected, folders = {}, {}, {}
    for backend in ("open_clip", "clip", "siglip"):
        model = _model(backend, hf_dirs, ["all"])
        folders[backend] = model.export_encoder(tmp_path / f"export-{backend}")
        s = model.encoder.image_size
        torch.manual_seed(2)
        inputs[f"{backend}_pixels"] = torch.randn(2, 3, s, s)
        if backend != "open_clip":
            inputs[f"{backend}_ids"] = model.encoder.hf_tokenizer(
                TEXTS, padding="max_length", max_length=model.encoder.context_length, return_tensors="pt"
            )["input_ids"]
        expected[backend] = _ours(model, inputs[f"{backend}_pixels"])
    assert (folders["open_clip"] / "open_clip_config.json").is_file()
    assert (folders["clip"] / "model.safetensors").is_file() and (
        folders["clip"] / "tokenizer.json"
    ).is_file()
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    script = _PLAIN_SCRIPT % {"texts": TEXTS}
    args = [str(tmp_path / "inputs.safetensors"), *(str(folders[b]) for b in ("open_clip", "clip", "siglip"))]
    subprocess.run(
        [sys.executable, "-I", "-c", script, *args, str(tmp_path / "out.safetensors")],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    got = load_file(str(tmp_path / "out.safetensors"))
    for backend in ("open_clip", "clip", "siglip"):
        image, text = expected[backend]
        torch.testing.assert_close(got[f"{backend}_image"], image, rtol=0, atol=1e-5)
        torch.testing.assert_close(got[f"{backend}_text"], text, rtol=0, atol=1e-5)
