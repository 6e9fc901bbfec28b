"""The README's Hugging Face snippet runs as written, on tiny models (the hub id becomes a tiny local CLIP).

The snippet below is the one proposed for README.md's "Hugging Face models" section; once the README has that
section (a ``python`` block under a heading starting "## Hugging Face models"), the test runs the README's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import CLIPModel

from .hf_tiny import make_tiny_clip

pytestmark = pytest.mark.usefixtures("one_thread")

SNIPPET = """
from ximgctx import ContextModel, EncoderConfig, LoraSettings, ModelConfig, Post, TaskSpec

tasks = [TaskSpec("intent", ["joke", "protest", "threat", "meme"], kind="multilabel")]
# open_clip: an architecture name and a pretrained tag or weights file
open_clip_encoder = EncoderConfig(arch="ximgctx-tiny")  # or arch="ViT-B-32", pretrained="laion2b_s34b_b79k"
# transformers: a CLIPModel or SiglipModel checkpoint (hub id or folder) with its own tokenizer and processor
hf_encoder = EncoderConfig(backend="transformers", arch="openai/clip-vit-base-patch32")
for encoder in (open_clip_encoder, hf_encoder):  # same LoRA presets, fusions, heads, training, inference
    model = ContextModel(ModelConfig(tasks=tasks, encoder=encoder, lora=LoraSettings(targets=["attn", "mlp"])))
    batch = model.processor([Post("p1", text="when monday hits", labels={"intent": ["joke"]})])
    loss = model.loss(model(batch), batch).total
model.save_pretrained("my-model", metadata={"license": "mit"})  # self-contained: loads with no hub
model.export_encoder("my-clip")  # LoRA merged: transformers.CLIPModel.from_pretrained("my-clip"), no ximgctx
# model.push_to_hub("me/my-model")  # a private repo holding exactly the verified files
# model = ContextModel.from_pretrained("me/my-model", revision="main")  # via the HF cache, HF_HUB_OFFLINE honoured
"""

_README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet() -> str:
    text = _README.read_text(encoding="utf-8") if _README.is_file() else ""
    found = re.search(r"^## Hugging Face models.*?```python\n(.*?)```", text, re.S | re.M)
    return found.group(1) if found else SNIPPET


def test_readme_hf_snippet_runs(tmp_path, monkeypatch) -> None:
    tiny = make_tiny_clip(tmp_path / "tiny-clip")
    code = readme_snippet()
    assert 'backend="transformers"' in code and "export_encoder" in code
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may reach the network
    scope: dict = {}
    exec(compile(code.replace("openai/clip-vit-base-patch32", str(tiny)), "README.md", "exec"), scope)
    assert scope["model"].config.encoder.backend == "transformers"
    assert float(scope["loss"].detach()) > 0
    assert (tmp_path / "my-model" / "hf" / "config.json").is_file()
    assert CLIPModel.from_pretrained(str(tmp_path / "my-clip")).config.projection_dim == 24
