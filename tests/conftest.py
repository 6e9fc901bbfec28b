"""Shared fixtures: posts with real image files, generated per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ximgctx import Post, Reply

from .helpers import write_image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (a busy 2-core machine punishes two); restored after.
    Test modules that train opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def posts(tmp_path: Path) -> list[Post]:
    """Six varied posts: images, empty text, no replies, duplicate replies, partial labels."""
    return [
        Post(
            "p0",
            write_image(tmp_path / "p0.png", (200, 30, 30)),
            "when monday hits",
            [Reply("lol", "u1"), Reply("lol", "u2"), Reply("so true")],
            {"meaning": "ironic", "intent": ["joke"]},
        ),
        Post(
            "p1",
            write_image(tmp_path / "p1.png", (30, 200, 30)),
            "see you all saturday",
            [Reply("count me in"), Reply("lol")],
            {"intent": ["protest"], "objects": ["square"]},
        ),
        Post("p2", None, "nothing to see", [], {"meaning": {"literal": 0.7, "ironic": 0.3}}),
        Post("p3", write_image(tmp_path / "p3.png", (30, 30, 200)), "", [Reply("stay safe")], {}),
        Post(
            "p4",
            write_image(tmp_path / "p4.jpg", (120, 120, 20)),
            "a very long post text " * 5,
            [Reply("what"), Reply("lol"), Reply("")],
            {"meaning": "symbolic", "intent": ["meme", "joke"]},
        ),
        Post("p5", None, "", [], {}),
    ]
