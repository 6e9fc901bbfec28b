"""The README's Hugging Face snippet runs as written, on tiny models (the hub id becomes a tiny local CLIP).

The snippet is the ``python`` block under README.md's "## Hugging Face models" heading.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import CLIPModel

from .hf_tiny import make_tiny_clip

pytestmark = pytest.mark.usefixtures("one_thread")


_README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet() -> str:
    text = _README.read_text(encoding="utf-8")
    found = re.search(r"^## Hugging Face models.*?```python\n(.*?)```", text, re.S | re.M)
    assert found, "README.md has no python block under '## Hugging Face models'"
    return found.group(1)


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
