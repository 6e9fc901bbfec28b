"""Refusals cost less than the work they refuse: image bombs and offline hub names beside the real thing.

Unit tests check that a refusal does no work (no decoder run, no file read, no connection, no retry wait);
this benchmark measures how long it takes, side by side in one run, as ratios:

* **images**: refusing a PNG header claiming 10^10 pixels, a header over ``ImageLimits.max_pixels`` (64 M
  pixels) and a 1 GiB file (sparse, refused from its size) against decoding one small real PNG;
* **offline**: an uncached hub name under ``HF_HUB_OFFLINE=1`` (a model id, an open_clip pretrained tag, a
  dataset id) against loading a tiny model from a local folder.

Each round runs every path once, in turn, so a busy machine slows all of them alike; medians over rounds.
"""

from __future__ import annotations

import io
import os
import statistics
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["image_refusals", "offline_refusals", "refusals"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """An 8-bit RGB PNG whose IHDR claims ``width`` x ``height``, with a tiny IDAT: a decompression bomb's
    shape in ~70 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _outcome(fn: Callable[[], Any], expected: type[BaseException] | None) -> str:
    """Run ``fn``; the refusal's reason (or error class) when it raised ``expected``, ``"ok"`` when it was
    expected to succeed and did. Anything else propagates: timing the wrong path is worse than no figure."""
    if expected is None:
        fn()
        return "ok"
    try:
        fn()
    except expected as e:
        return str(getattr(e, "reason", None) or type(e).__name__)
    raise AssertionError(f"{getattr(fn, '__name__', fn)} did not raise {expected.__name__}")


def _figure(x: float) -> float:
    """Four significant digits: refusals take microseconds, a model load a fraction of a second."""
    return float(f"{x:.4g}")


def _side_by_side(
    paths: dict[str, tuple[Callable[[], Any], type[BaseException] | None]], baseline: str, rounds: int
) -> dict[str, Any]:
    """Median seconds of each path over ``rounds`` interleaved rounds (after one untimed warm-up round), each
    path's outcome, and each path's ratio to ``baseline``."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    outcomes = {name: _outcome(fn, expected) for name, (fn, expected) in paths.items()}  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, (fn, expected) in paths.items():
            start = time.perf_counter()
            _outcome(fn, expected)
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    base = median[baseline]
    return {
        "rounds": rounds,
        "baseline": baseline,
        "outcome": outcomes,
        "median_seconds": {name: _figure(s) for name, s in median.items()},
        "ratio_to_baseline": {
            name: _figure(s / base) if base > 0 else None for name, s in median.items() if name != baseline
        },
    }


def image_refusals(workdir: str | Path, *, rounds: int = 20, image_px: int = 64) -> dict[str, Any]:
    """Refusing three oversized images beside decoding one ``image_px`` x ``image_px`` PNG."""
    import numpy as np
    from PIL import Image

    from ximgctx.data.images import ImageDecodeError, load_image

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (image_px, image_px, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")  # noise: a photo's worth of work for the decoder
    small = buf.getvalue()
    bomb, over_limit = png_header(100_000, 100_000), png_header(8_000, 8_000)
    huge = workdir / "huge.png"
    with open(huge, "wb") as fh:
        fh.write(small)
        fh.truncate(1 << 30)  # sparse: 1 GiB on paper, nothing on disk
    try:
        result = _side_by_side(
            {
                "decode_small_png": (lambda: load_image(small), None),
                "refuse_bomb_header": (lambda: load_image(bomb), ImageDecodeError),
                "refuse_over_max_pixels": (lambda: load_image(over_limit), ImageDecodeError),
                "refuse_huge_file": (lambda: load_image(huge), ImageDecodeError),
            },
            "decode_small_png",
            rounds,
        )
    finally:
        huge.unlink()
    return {"image_px": image_px, **result}


@contextmanager
def _hub_offline() -> Iterator[None]:
    was = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if was is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = was


def _tiny_model_folder(folder: Path) -> Path:
    """A tiny concat model (no pretrained weights) saved to ``folder``: the local load the refusals are
    weighed against."""
    import torch

    from ximgctx.config import EncoderConfig, FusionConfig, ModelConfig, TaskSpec
    from ximgctx.models.context_model import ContextModel

    torch.manual_seed(0)
    config = ModelConfig(
        tasks=[TaskSpec(name="meaning", labels=["literal", "ironic"])],
        encoder=EncoderConfig(arch="ximgctx-tiny"),
        fusion=FusionConfig(kind="concat", hidden_dim=32, dropout=0.0),
    )
    return ContextModel(config).save_pretrained(folder, overwrite=True)


def offline_refusals(workdir: str | Path, *, rounds: int = 3) -> dict[str, Any]:
    """Failing on three uncached hub names under ``HF_HUB_OFFLINE=1`` beside loading a tiny model from
    disk."""
    from ximgctx.config import EncoderConfig
    from ximgctx.data.hf_datasets import HubDatasetError
    from ximgctx.data.io import load_posts
    from ximgctx.models.context_model import ContextModel
    from ximgctx.models.encoder import PretrainedWeightsError
    from ximgctx.models.hub import HubModelError
    from ximgctx.models.open_clip_encoder import ClipEncoder

    workdir = Path(workdir)
    folder = _tiny_model_folder(workdir / "tiny-model")
    cache = workdir / "empty-hub-cache"
    cache.mkdir(parents=True, exist_ok=True)
    with _hub_offline():
        result = _side_by_side(
            {
                "load_local_tiny_model": (lambda: ContextModel.from_pretrained(folder), None),
                "refuse_model_id": (
                    lambda: ContextModel.from_pretrained("org/missing", cache_dir=cache),
                    HubModelError,
                ),
                "refuse_pretrained_tag": (
                    lambda: ClipEncoder(
                        EncoderConfig(arch="ViT-B-32", pretrained="openai", cache_dir=str(cache))
                    ),
                    PretrainedWeightsError,
                ),
                "refuse_dataset_id": (
                    lambda: load_posts("org/missing-posts", split="train", cache_dir=cache),
                    HubDatasetError,
                ),
            },
            "load_local_tiny_model",
            rounds,
        )
    return result


def refusals(workdir: str | Path, *, image_rounds: int = 20, offline_rounds: int = 3) -> dict[str, Any]:
    """Both measurements and the environment, as one JSON-able dict (``ximgctx bench refusals``)."""
    from ximgctx.bench import environment

    workdir = Path(workdir)
    return {
        "benchmark": "refusals",
        "environment": environment(),
        "images": image_refusals(workdir / "images", rounds=image_rounds),
        "offline": offline_refusals(workdir / "offline", rounds=offline_rounds),
    }
