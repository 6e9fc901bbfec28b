"""Render a post's image with Pillow from its image latents.

Recognition is meant to be easy, so that the benchmark measures fusion, not vision: each glyph is a large
filled shape (at least about a quarter of the side) with a dark outline and its own hue range; the scene
is a global colour (bright and warm, or dark grey with rain streaks); the meme format adds white caption
bands with black word blocks. Small thin distractor marks and mild pixel noise keep it from being trivial.
Drawing happens at ``SUPERSAMPLE`` times the size and is box-filtered down, for clean edges.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 2
NOISE = 6  # pixel noise amplitude, uniform in [-NOISE, NOISE] per channel (0-255 scale)
BAND = 0.16  # meme caption band height, as a fraction of the side

#: hue (degrees) of each glyph; drawn within +-HUE_JITTER, saturated and bright.
GLYPH_HUES: dict[str, float] = {
    "circle": 0,
    "star": 55,
    "triangle": 120,
    "arrow": 180,
    "square": 225,
    "cross": 280,
    "heart": 330,
}
HUE_JITTER = 8.0
#: largest rotation (degrees) per glyph; circles are not rotated, arrows point anywhere.
GLYPH_ROTATION: dict[str, float] = {
    "circle": 0,
    "square": 20,
    "triangle": 20,
    "star": 36,
    "cross": 20,
    "heart": 15,
    "arrow": 180,
}


def _star(n: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + k * math.pi / n
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _heart(n: int = 36) -> list[tuple[float, float]]:
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -(y + 2.5) / 17.0))
    return pts


#: unit polygons centred on 0 with radius about 1 (y points down); the circle is drawn as an ellipse.
SHAPES: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(),
    # fmt: off
    "cross": [
        (-0.3, -1),
        (0.3, -1),
        (0.3, -0.3),
        (1, -0.3),
        (1, 0.3),
        (0.3, 0.3),
        (0.3, 1),
        (-0.3, 1),
        (-0.3, 0.3),
        (-1, 0.3),
        (-1, -0.3),
        (-0.3, -0.3),
    ],
    # fmt: on
    "heart": _heart(),
    "arrow": [(-1, -0.25), (0.15, -0.25), (0.15, -0.7), (1, 0), (0.15, 0.7), (0.15, 0.25), (-1, 0.25)],
}


def _hsv(h_deg: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360) / 360.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: np.random.Generator, scene: str, w: int) -> Image.Image:
    """A vertical two-colour gradient: pale sky over warm light (sunny) or dark slate (stormy)."""
    if scene == "sunny":
        top = _hsv(rng.uniform(190, 215), rng.uniform(0.25, 0.45), rng.uniform(0.93, 1.0))
        bottom = _hsv(rng.uniform(35, 50), rng.uniform(0.3, 0.5), rng.uniform(0.95, 1.0))
    else:
        top = _hsv(rng.uniform(200, 230), rng.uniform(0.05, 0.2), rng.uniform(0.18, 0.28))
        bottom = _hsv(rng.uniform(200, 230), rng.uniform(0.05, 0.2), rng.uniform(0.3, 0.4))
    t = np.linspace(0.0, 1.0, w, dtype=np.float32)[:, None]  # (W, 1)
    col = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t  # (W, 3)
    arr = np.broadcast_to(col[:, None, :], (w, w, 3)).astype(np.uint8)  # (W, W, 3)
    return Image.fromarray(arr, "RGB")


def _rain(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int) -> None:
    for _ in range(int(rng.integers(14, 22))):
        x, y = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * w
        length = rng.uniform(0.08, 0.16) * w
        shade = int(rng.integers(150, 200))
        draw.line(
            [(x, y), (x + 0.3 * length, y + length)], fill=(shade, shade, shade + 20), width=SUPERSAMPLE
        )


def _distractors(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int) -> None:
    """A few small thin strokes and dots in dull colours: nothing like a glyph."""
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.uniform(0, w), rng.uniform(0, w)
        colour = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.35, 0.75))
        if rng.random() < 0.6:
            a, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.04, 0.1) * w
            draw.line(
                [(x, y), (x + length * math.cos(a), y + length * math.sin(a))], fill=colour, width=SUPERSAMPLE
            )
        else:
            r = rng.uniform(0.01, 0.025) * w
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _meme_bands(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int) -> int:
    """White caption bands with black word blocks, top and bottom; returns the band height."""
    band = int(round(BAND * w))
    for y0 in (0, w - band):
        draw.rectangle([0, y0, w - 1, y0 + band - 1], fill=(255, 255, 255))
        n_words = int(rng.integers(2, 5))
        widths = rng.uniform(0.08, 0.2, size=n_words) * w
        gap = 0.04 * w
        x = (w - widths.sum() - gap * (n_words - 1)) / 2
        yc, h = y0 + band / 2, 0.35 * band
        for wd in widths:
            draw.rectangle([x, yc - h / 2, x + wd, yc + h / 2], fill=(0, 0, 0))
            x += wd + gap
    return band


def _glyph(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, name: str, cx: float, cy: float, size: float
) -> None:
    colour = _hsv(
        GLYPH_HUES[name] + rng.uniform(-HUE_JITTER, HUE_JITTER), rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0)
    )
    outline, width = (25, 25, 25), SUPERSAMPLE
    r = size / 2
    if name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour, outline=outline, width=width)
        return
    a = math.radians(rng.uniform(-GLYPH_ROTATION[name], GLYPH_ROTATION[name]))
    ca, sa = math.cos(a), math.sin(a)
    pts = [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in SHAPES[name]]
    draw.polygon(pts, fill=colour, outline=outline, width=width)


def render(rng: np.random.Generator, *, scene: str, fmt: str, objects: list[str], size: int) -> Image.Image:
    """The RGB image (``size`` x ``size``) of a post with these image latents."""
    w = size * SUPERSAMPLE
    img = _background(rng, scene, w)
    draw = ImageDraw.Draw(img)
    if scene == "stormy":
        _rain(draw, rng, w)
    _distractors(draw, rng, w)
    band = _meme_bands(draw, rng, w) if fmt == "meme" else 0
    # objects side by side in random order, one per column of the free area, sized to their column
    k = len(objects)
    top, height = band, w - 2 * band
    col = w / k
    largest = {1: 0.6, 2: 0.46, 3: 0.33}[k] * w
    for c, name in enumerate(rng.permutation(objects)):
        s = min(largest, 0.95 * col, 0.95 * height) * rng.uniform(0.8, 1.0)
        cx = c * col + col / 2 + rng.uniform(-0.5, 0.5) * (col - s)
        cy = top + height / 2 + rng.uniform(-0.5, 0.5) * (height - s)
        _glyph(draw, rng, str(name), cx, cy, s)
    img = img.resize((size, size), Image.Resampling.BOX)
    noise = rng.integers(-NOISE, NOISE + 1, size=(size, size, 3), dtype=np.int16)  # (S, S, 3)
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")
