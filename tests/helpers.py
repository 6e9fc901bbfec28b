"""Tiny models and images for tests (import as ``from .helpers import ...``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from ximgctx import ContextModel, FusionConfig, LoraSpec, ModelConfig, TaskSpec

TASKS = [
    TaskSpec("objects", ["circle", "square", "star"], "multilabel", "image", "a picture of a {}."),
    TaskSpec("meaning", ["literal", "ironic", "symbolic"], "multiclass"),
    TaskSpec("intent", ["joke", "protest", "threat", "meme"], "multilabel"),
]


def tiny_config(kind: str = "attention", lora: bool = True, **fusion) -> ModelConfig:
    return ModelConfig(
        tasks=[TaskSpec(**{**t.__dict__}) for t in TASKS],
        fusion=FusionConfig(kind=kind, hidden_dim=64, heads=4, layers=2, dropout=0.0, cross_dim=16, **fusion),
        lora=LoraSpec(r=4, alpha=8.0) if lora else None,
    )


def tiny_model(kind: str = "attention", lora: bool = True, seed: int = 0, **fusion) -> ContextModel:
    torch.manual_seed(seed)
    return ContextModel(tiny_config(kind, lora, **fusion)).eval()


def write_image(path: Path, color: tuple[int, int, int], size: int = 48) -> str:
    img = Image.new("RGB", (size, size), color)
    img.paste((255 - color[0], color[1], 255 - color[2]), (size // 4, size // 4, size // 2, size // 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return str(path)


def missing_service(why: str) -> None:
    """A test that needs a real outside program (PostgreSQL, Chromium) skips where it is missing, naming what;
    under CI (``CI=true``, where ``.ci/services.sh`` installs them) the same absence fails the test instead,
    so a broken install can never pass as a skip."""
    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {why}")
    pytest.skip(why)
