"""Model folders for the hot-swap tests: A (the tiny test model), B (A with perturbed heads: other scores,
the same embeddings), C (another seed: other embeddings too), a corrupt copy of B, and a model with other
tasks, all under one model root."""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

import torch

from ximgctx import ContextModel
from ximgctx.inference.predictor import model_digest

from .._inference_fixtures import ROOT, tiny_config, tiny_model


@cache
def model_root() -> Path:
    """``ROOT/swap-models/{a,b,c,corrupt,other-tasks}`` (built once per test session)."""
    root = ROOT / "swap-models"
    root.mkdir()
    tiny_model(0).save_pretrained(root / "a")
    b = tiny_model(0)
    with torch.no_grad():  # other weights, the same tasks: every head moves
        for head in b.heads.values():
            head.linear.weight.add_(0.5 * torch.randn_like(head.linear.weight))
            head.linear.bias.add_(0.3)
    b.save_pretrained(root / "b")
    tiny_model(1).save_pretrained(root / "c")
    shutil.copytree(root / "b", root / "corrupt")
    weights = next(p for p in (root / "corrupt").iterdir() if p.suffix == ".safetensors")
    data = bytearray(weights.read_bytes())
    data[-9] ^= 0xFF  # one flipped byte: the manifest's checksum no longer matches
    weights.write_bytes(bytes(data))
    config = tiny_config()
    config.tasks = config.tasks[:2]
    torch.manual_seed(0)
    ContextModel(config).eval().save_pretrained(root / "other-tasks")
    return root


def digest(name: str) -> str:
    found = model_digest(model_root() / name)
    assert found is not None
    return found


def served_name(name: str) -> str:
    return f"ximgctx@{digest(name)[:12]}"
