"""Saved artifacts name their sources portably: no file of a saved model holds the saving machine's folders
(``push_to_hub`` would publish them), and the model still reloads from the artifact alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ximgctx import ContextModel, EncoderConfig, LoraSpec, ModelConfig
from ximgctx.models.encoder import portable_ref

from ..helpers import TASKS
from ..hf_tiny import make_tiny_clip

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("given", "saved"),
    [
        ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch32"),
        ("ViT-B-32", "ViT-B-32"),
        ("/home/alice/models/clip-small/", "clip-small"),
        ("./runs/pre/encoder.safetensors", "encoder.safetensors"),
        ("~/ckpt.bin", "ckpt.bin"),
        ("local-dir:/srv/arch", "local-dir:/srv/arch"),
        (None, None),
    ],
)
def test_portable_ref(given, saved):
    assert portable_ref(given) == saved


def test_a_saved_model_holds_no_absolute_path_and_reloads(tmp_path: Path) -> None:
    src = make_tiny_clip(tmp_path / "machine-specific" / "clip")
    config = ModelConfig(
        tasks=TASKS,
        encoder=EncoderConfig(backend="transformers", arch=str(src), cache_dir=str(tmp_path / "cache")),
        lora=LoraSpec(r=4, alpha=8.0, targets=["attn"]),
    )
    model = ContextModel(config).eval()
    out = model.save_pretrained(tmp_path / "saved")
    leaked = [
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and (str(tmp_path).encode() in p.read_bytes() or b"machine-specific" in p.read_bytes())
    ]
    assert leaked == []
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["encoder"]["arch"] == "clip" and saved["model"]["encoder"]["cache_dir"] is None
    again = ContextModel.from_pretrained(out)
    pixels = torch.rand(2, 3, model.encoder.image_size, model.encoder.image_size)
    with torch.no_grad():
        assert torch.equal(model.encoder.encode_image(pixels), again.encoder.encode_image(pixels))
