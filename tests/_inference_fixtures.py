"""Shared fixtures for the inference, moderation and search tests: a tiny saved model and small posts.

Builders are cached per test session (``lru_cache``) so the three test files share one model folder;
each test file wraps them in thin pytest fixtures. Everything is written under one temporary folder
removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ximgctx import ContextModel, DataConfig, EncoderConfig, FusionConfig, ModelConfig, Post, Reply, TaskSpec

ROOT = Path(tempfile.mkdtemp(prefix="ximgctx-inference-tests-"))
atexit.register(shutil.rmtree, ROOT, True)

#: The default tasks (as ContextBench defines them), small enough for a 2-core CPU.
TASKS = [
    TaskSpec(
        "objects",
        ["circle", "square", "star"],
        kind="multilabel",
        source="image",
        prompt="a picture of a {}.",
    ),
    TaskSpec("meaning", ["literal", "ironic", "symbolic"], kind="multiclass"),
    TaskSpec("intent", ["joke", "protest", "threat", "meme"], kind="multilabel"),
]

WORDS = [
    "monday",
    "cat",
    "crowd",
    "protest",
    "sign",
    "rain",
    "coffee",
    "train",
    "city",
    "night",
    "friends",
    "game",
    "music",
    "joke",
    "meme",
    "photo",
    "saturday",
    "march",
    "police",
    "storm",
    "sun",
    "heart",
    "star",
    "see",
    "you",
    "all",
    "there",
    "never",
    "again",
]
REPLIES = (
    "lol",
    "same",
    "this",
    "so true",
    "who else is going saturday?",
    "not again...",
    "lol",
    "ratio",
    "count me in",
    "stay safe out there",
    "this is the funniest thing i have seen all week honestly",
)


def tiny_config(fusion: str = "attention") -> ModelConfig:
    return ModelConfig(
        tasks=TASKS,
        encoder=EncoderConfig(arch="ximgctx-tiny", pretrained=None),
        fusion=FusionConfig(kind=fusion, hidden_dim=32, heads=2, layers=1, dropout=0.0, cross_dim=8),
        limits=DataConfig(max_replies=8),
    )


def tiny_model(seed: int = 0, fusion: str = "attention") -> ContextModel:
    torch.manual_seed(seed)
    model = ContextModel(tiny_config(fusion)).eval()
    with torch.no_grad():  # spread the intent scores so thresholds and decisions are not all at 0.5
        model.heads["intent"].linear.weight.mul_(6.0)
    return model


@cache
def model_dir(fusion: str = "attention") -> Path:
    """A saved tiny model folder (random weights)."""
    return tiny_model(0, fusion).save_pretrained(ROOT / f"model-{fusion}")


def _draw(path: Path, rng: np.random.Generator, size: int = 64) -> str:
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    im = Image.new("RGB", (size, size), color)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 4))):
        x, y = (int(v) for v in rng.integers(0, size - 16, 2))
        w = int(rng.integers(8, 16))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x, y, x + w, y + w], fill=fill)
    im.save(path)
    return str(path)


def make_posts(n: int, seed: int = 0, *, folder: str = "posts", with_labels: bool = True) -> list[Post]:
    """``n`` small posts with images, texts, duplicated short replies and labels."""
    rng = np.random.default_rng(seed)
    out_dir = ROOT / f"{folder}-{seed}-{n}"
    out_dir.mkdir(parents=True, exist_ok=True)
    posts = []
    for i in range(n):
        image = _draw(out_dir / f"{i:04d}.png", rng) if i % 5 != 4 else None  # every fifth post: no image
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 12))))
        replies = [Reply(text=str(rng.choice(REPLIES))) for _ in range(int(rng.integers(0, 6)))]
        labels = {}
        if with_labels:
            labels = {
                "meaning": str(rng.choice(["literal", "ironic", "symbolic"])),
                "intent": [x for x in ("joke", "protest", "threat", "meme") if rng.random() < 0.35],
            }
        posts.append(Post(id=f"p{seed}-{i:04d}", image=image, text=text, replies=replies, labels=labels))
    return posts


@cache
def bad_posts() -> list[Post]:
    """A batch with a corrupt image, a missing image file, an empty text and 1,000 replies, among good
    posts."""
    folder = ROOT / "bad"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not the rest of a png" * 4)
    good = [_draw(folder / f"good{i}.png", rng) for i in range(3)]
    return [
        Post(
            id="good-0",
            image=good[0],
            text="see you all saturday",
            replies=[Reply("count me in"), Reply("lol")],
        ),
        Post(id="corrupt-image", image=str(corrupt), text="look at this", replies=[Reply("lol")]),
        Post(id="missing-image", image=str(folder / "nowhere.png"), text="where did it go"),
        Post(id="good-1", image=good[1], text="rain again", replies=[]),
        Post(id="empty-text", image=good[2], text="", replies=[Reply("what?")]),
        Post(
            id="thousand-replies",
            image=None,
            text="ratio",
            replies=[Reply(f"reply {i}" if i % 3 else "lol") for i in range(1000)],
        ),
    ]
