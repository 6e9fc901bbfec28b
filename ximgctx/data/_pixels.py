"""Pixel fix-ups after a safe decode: EXIF orientation, and every Pillow mode to RGB without losing data.

Used by :func:`ximgctx.data.images.load_image`; the reasons for each rule are in that module's docstring.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import ExifTags, Image, ImageOps

logger = logging.getLogger("ximgctx.data.images")

__all__ = ["apply_exif_orientation", "to_rgb"]

# Same table as ImageOps.exif_transpose, used when that function fails on a broken EXIF block.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def apply_exif_orientation(im: Image.Image) -> Image.Image:
    """Return ``im`` upright per its EXIF Orientation; a broken EXIF block never costs the image."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception as e:  # EXIF parsing/re-serialising raises a zoo of types on malformed blocks
        logger.debug("exif_transpose failed (%s: %s); reading the Orientation tag alone", type(e).__name__, e)
    try:
        orientation = int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception as e:
        logger.debug("unreadable EXIF (%s: %s); keeping the stored orientation", type(e).__name__, e)
        return im
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return im.transpose(method) if method is not None else im


def _has_transparency(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode.endswith("A")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to RGB: transparency onto white, high bit depths scaled to 0..255."""
    if im.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(im)
    if _has_transparency(im):
        rgba = im.convert("LA").convert("RGBA") if im.mode == "La" else im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBX, ...: Pillow's conversions are exact here


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float grayscale to 8 bits instead of clipping at 255."""
    raw = np.asarray(im)  # (H, W): uint16 for I;16*, int32 for I, float32 for F
    if im.mode.startswith("I;16"):
        gray = (raw >> 8).astype(np.uint8)  # full 16-bit range, like libpng's strip_16
    else:
        values = np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = values * 255.0  # float images in 0..1
        elif lo >= 0.0 and hi <= 255.0:
            scaled = values  # already 8-bit range
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = values / 257.0  # 16-bit data in a 32-bit container (older Pillow's 16-bit PNGs)
        else:
            scaled = (values - lo) * (255.0 / (hi - lo))  # arbitrary range: stretch min..max
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    transparent = im.info.get("transparency")
    if isinstance(transparent, int) and not isinstance(transparent, bool):
        gray = np.where(raw == transparent, np.uint8(255), gray)  # tRNS grey value -> white
    return Image.fromarray(gray).convert("RGB")
