"""Safe image decoding and text capping for untrusted social-media posts.

Post images come from strangers, so every file is treated as hostile until Pillow has decoded it under
limits. Each rule below exists because of a concrete failure:

* **Byte limit before reading** (``ImageLimits.max_bytes``): the size is taken from ``fstat`` for a path,
  ``len`` for bytes and a seek to the end for a stream, so a multi-gigabyte upload is refused without being
  read into memory.
* **Format allowlist** (``ImageLimits.formats``): ``Image.open(..., formats=...)`` only tries the JPEG, PNG,
  WebP, GIF and BMP parsers. A PDF, EPS (which Pillow would hand to Ghostscript), TIFF, PSD or SVG never
  reaches a parser; it is refused with reason ``"format_not_allowed"`` and the message names the format
  found, so a data owner knows to convert rather than re-download.
* **Pixel limit before** ``load()`` (``ImageLimits.max_pixels``): Pillow reads only the header on open, so
  width x height is known before a single pixel is allocated. A 50-byte PNG can claim 100,000 x 100,000
  pixels (a decompression bomb); it is refused in microseconds. Pillow's own bomb check fires first for
  headers above twice ``Image.MAX_IMAGE_PIXELS``; its ``DecompressionBombError`` becomes
  ``"too_many_pixels"`` and its ``DecompressionBombWarning`` is silenced locally, since our stricter limit
  already decides.
* **Pillow globals are never touched**: not ``ImageFile.LOAD_TRUNCATED_IMAGES`` (which would turn a
  truncated file into a silently grey-padded pixel grid) and not ``Image.MAX_IMAGE_PIXELS``. Other code in
  the same process keeps Pillow's defaults.
* **First frame of animations**: a GIF or animated WebP is one image for the model, and always the same
  one, so the embedding of a post does not depend on which frame a decoder happened to stop at.
* **EXIF orientation applied**: phones store pixels sideways and set an Orientation tag; without it the
  model would see a rotated photo. A broken EXIF block must not cost the image, so a failure there falls
  back to reading only the Orientation tag, then to the stored pixels.
* **Every mode to RGB, correctly**: transparent pixels are composited onto white (dropping alpha would show
  whatever RGB hides under transparency, usually black); 16-bit grayscale is scaled, not clipped (Pillow's
  ``convert("L")`` clips ``I;16`` at 255, which makes a normal 16-bit PNG almost entirely white).
* **One exception type**: anything wrong with the bytes becomes :class:`ImageDecodeError` with a short
  ``reason`` code that training counts and inference reports, never a crash with an exception type the
  caller did not expect.

Text is capped in characters before BPE (:func:`cap_text`) so that a 1 MB reply cannot make the tokenizer
do unbounded work.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_FORMATS",
    "DECODE_REASONS",
    "ImageDecodeError",
    "ImageLimits",
    "ImageSource",
    "cap_text",
    "load_image",
]

#: The only formats Pillow is allowed to parse (Pillow's format names).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

#: Every ``ImageDecodeError.reason`` this module produces.
DECODE_REASONS: tuple[str, ...] = (
    "missing",
    "too_many_pixels",
    "too_many_bytes",
    "format_not_allowed",
    "truncated",
    "corrupt",
    "unreadable",
)

#: What load_image accepts: a path, the encoded bytes, or a binary stream (read from its beginning).
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]

_HINTS = {
    "missing": "check the path relative to the dataset root",
    "too_many_pixels": "raise ImageLimits.max_pixels only for images from a trusted source",
    "too_many_bytes": "raise ImageLimits.max_bytes only for images from a trusted source",
    "format_not_allowed": "convert the file to JPEG, PNG, WebP, GIF or BMP",
    "truncated": "the file ends early; re-download or re-export it",
    "corrupt": "the bytes are not a decodable image; re-download or re-export it",
    "unreadable": "check file permissions and that the path is a regular file",
}

# Exceptions Pillow's parsers and decoders raise on malformed input. Caught only around Pillow calls.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    Image.DecompressionBombError,
)

# Substrings of Pillow error messages that mean "the data stopped before the image did".
_TRUNCATION_MARKERS = ("truncated", "incomplete", "requires a buffer", "unexpected end", "premature end")

# Signatures of common non-image or non-allowed files that Pillow has no opener for (checked on the head).
_EXTRA_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "PDF"),
    (b"%!PS", "PostScript"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"<svg", "SVG"),
    (b"<!doctype html", "HTML"),
    (b"<html", "HTML"),
)

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


class ImageDecodeError(ValueError):
    """Raised for an image that must not or cannot be decoded.

    The message names the path (when there is one), what was wrong and what to do. ``reason`` is a short
    code from :data:`DECODE_REASONS` for counting failures in a training report.

    Attributes:
        reason: Machine-friendly reason code, e.g. ``"truncated"`` or ``"too_many_pixels"``.
        detail: Human-readable description of the problem.
        path: The file path, or the stream's ``name``, or None for in-memory bytes.
    """

    def __init__(self, reason: str, detail: str, path: str | None = None) -> None:
        # All three go to args so the exception pickles (DataLoader workers send exceptions across processes).
        super().__init__(reason, detail, path)
        self.reason = reason
        self.detail = detail
        self.path = path

    def __str__(self) -> str:
        where = f"image {self.path!r}" if self.path is not None else "in-memory image"
        hint = _HINTS.get(self.reason)
        suffix = f"; {hint}" if hint else ""
        return f"cannot decode {where}: {self.detail} (reason: {self.reason}){suffix}"


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every decoded image.

    Pillow's own check still applies on top: a header above ``2 * Image.MAX_IMAGE_PIXELS`` is refused
    with ``"too_many_pixels"`` whatever ``max_pixels`` says.
    """

    max_pixels: int = 40_000_000  # width * height allowed, checked from the header before any pixel is read
    max_bytes: int = 64 * 1024 * 1024  # encoded size allowed, checked before the file is read
    formats: tuple[str, ...] = ALLOWED_FORMATS  # Pillow format names tried; a subset of ALLOWED_FORMATS

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ImageLimits.{name} must be a positive integer, got {value!r}")
        formats = self.formats
        if isinstance(formats, (str, bytes)) or not isinstance(formats, (tuple, list)):
            raise ValueError(
                f"ImageLimits.formats must be a tuple of format names such as ('JPEG', 'PNG'), got {formats!r}"
            )
        if not formats:
            raise ValueError(f"ImageLimits.formats must name at least one of {ALLOWED_FORMATS}, got ()")
        normalised = []
        for fmt in formats:
            upper = fmt.upper() if isinstance(fmt, str) else fmt
            if upper not in ALLOWED_FORMATS:
                raise ValueError(
                    f"ImageLimits.formats may only contain {ALLOWED_FORMATS} (the design's allowlist), "
                    f"got {fmt!r}"
                )
            normalised.append(upper)
        # Frozen dataclass: normalise case and list-vs-tuple once, here.
        object.__setattr__(self, "formats", tuple(dict.fromkeys(normalised)))


def load_image(source: ImageSource, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode an untrusted image safely to an RGB PIL image.

    Args:
        source: A path (``str`` or ``os.PathLike``), the encoded bytes, or a binary stream. Bytes are
            always image content, never a path. A stream is read from its beginning (Pillow seeks to 0)
            and is not closed; a stream that cannot seek is read up to ``limits.max_bytes + 1`` bytes.
        limits: Pixel, byte and format limits.

    Returns:
        A fully loaded ``"RGB"`` image, upright per EXIF, first frame of an animation, with transparency
        composited onto white. It holds no file handle and does not depend on ``source``.

    Raises:
        ImageDecodeError: The image is missing, too large, not an allowed format, truncated, corrupt or
            unreadable; ``reason`` says which.
        TypeError: ``source`` or ``limits`` has the wrong type (a programming error, not bad data).
    """
    if not isinstance(limits, ImageLimits):
        raise TypeError(f"limits must be an ImageLimits, got {type(limits).__name__}")
    # catch_warnings silences only Pillow's bomb *warning* (our max_pixels decides). Like every warnings
    # filter before Python 3.14 it is process-wide while active, but it only ever hides that one category.
    with _open_source(source, limits) as (fp, size, path), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _decode(fp, size, path, limits)


def cap_text(text: str, max_chars: int) -> str:
    """Cap text to at most ``max_chars`` characters (code points), keeping the start.

    Applied before BPE so tokenizer work is bounded. The cut never separates a character from the
    combining marks, variation selectors, emoji modifiers or zero-width joiners that follow it, nor splits
    a surrogate pair or a flag's pair of regional indicators: it backs off to the start of that sequence,
    so the result can be shorter than ``max_chars``. A single sequence longer than ``max_chars`` (e.g.
    "zalgo" text) is cut hard rather than dropped.

    Args:
        text: The text to cap.
        max_chars: Maximum length in code points; must be positive.

    Returns:
        ``text`` itself when it is short enough, otherwise a prefix of it.

    Raises:
        ValueError: ``max_chars`` is not a positive integer.
        TypeError: ``text`` is not a str.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0:
        raise ValueError(f"max_chars must be a positive integer, got {max_chars!r}")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(text) <= max_chars:
        return text
    cut = max_chars
    while cut > 0 and _continues_cluster(text, cut):
        cut -= 1
    return text[:cut] if cut > 0 else text[:max_chars]


# ---------------------------------------------------------------------------------------------------------
# Source handling


@contextmanager
def _open_source(source: ImageSource, limits: ImageLimits) -> Iterator[tuple[BinaryIO, int, str | None]]:
    """Yield ``(seekable binary stream, size in bytes, path for messages)`` after the byte limit check."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not isinstance(path, str):
            raise TypeError(f"image paths must be str or os.PathLike[str], got {path!r}")
        try:
            _require_regular_file(os.stat(path).st_mode, path)  # open() on a FIFO would block forever
            fh = open(path, "rb")  # noqa: SIM115 - closed by the with-block below
        except FileNotFoundError as e:
            raise ImageDecodeError("missing", "no such file", path) from e
        except OSError as e:
            raise ImageDecodeError("unreadable", f"cannot open the file ({e.strerror or e})", path) from e
        with fh:
            try:
                st = os.fstat(fh.fileno())  # of the opened file, so it cannot change under us
            except OSError as e:
                raise ImageDecodeError("unreadable", f"cannot stat the file ({e})", path) from e
            _require_regular_file(st.st_mode, path)
            _check_bytes(st.st_size, limits, path)
            yield fh, st.st_size, path
        return

    if isinstance(source, (bytes, bytearray, memoryview)):
        size = memoryview(source).nbytes
        _check_bytes(size, limits, None)
        yield io.BytesIO(bytes(source)), size, None
        return

    if not callable(getattr(source, "read", None)):
        raise TypeError(f"source must be a path, bytes or a binary file object, got {type(source).__name__}")
    name = getattr(source, "name", None)
    path = name if isinstance(name, str) else None
    try:
        if not isinstance(source.read(0), (bytes, bytearray)):
            raise ImageDecodeError("unreadable", "the stream is not in binary mode (open it with 'rb')", path)
        seekable = bool(source.seekable()) if hasattr(source, "seekable") else False
        if seekable:
            size = source.seek(0, io.SEEK_END)
            _check_bytes(size, limits, path)
            source.seek(0)
            stream: BinaryIO = source
        else:
            data = source.read(limits.max_bytes + 1)
            size = len(data)
            _check_bytes(size, limits, path)
            stream = io.BytesIO(data)
    except ImageDecodeError:
        raise
    except (OSError, ValueError) as e:  # closed file, broken pipe, ...
        raise ImageDecodeError("unreadable", f"cannot read the stream ({e})", path) from e
    yield stream, size, path


def _require_regular_file(mode: int, path: str) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (device, FIFO or socket)"
        raise ImageDecodeError("unreadable", f"the path is {kind}", path)


def _check_bytes(size: int, limits: ImageLimits, path: str | None) -> None:
    if size > limits.max_bytes:
        raise ImageDecodeError(
            "too_many_bytes", f"{size} bytes exceeds ImageLimits.max_bytes={limits.max_bytes}", path
        )


# ---------------------------------------------------------------------------------------------------------
# Decoding


def _decode(fp: BinaryIO, size: int, path: str | None, limits: ImageLimits) -> Image.Image:
    """Open, check, load and convert; every Pillow failure leaves as an ImageDecodeError."""
    if size == 0:
        raise ImageDecodeError("corrupt", "the file is empty (0 bytes)", path)
    try:
        opened = Image.open(fp, formats=list(limits.formats))
    except Image.DecompressionBombError as e:
        raise ImageDecodeError("too_many_pixels", str(e), path) from e
    except UnidentifiedImageError as e:
        reason, detail = _diagnose_unidentified(fp, limits.formats)
        raise ImageDecodeError(reason, detail, path) from e
    except _DECODE_ERRORS as e:
        raise _classify(e, fp, size, path) from e

    # ``with`` (not close()) so a caller's stream is left open: ImageFile.close() would close it.
    with opened as im:
        _check_pixels(im.size, limits, path, when="header")
        try:
            im.seek(0)  # first frame of an animation; the frame decoded is always the same one
            im.load()
        except _DECODE_ERRORS as e:
            raise _classify(e, fp, size, path) from e
        # Some formats (GIF frames larger than the logical screen) can grow on load: check again.
        _check_pixels(im.size, limits, path, when="decoded frame")
        try:
            upright = _apply_exif_orientation(im)
            rgb = _to_rgb(upright)
        except _DECODE_ERRORS as e:
            raise ImageDecodeError("corrupt", f"cannot convert {im.mode} pixels to RGB ({e})", path) from e
    if rgb is im:  # never hand back the file-backed object
        rgb = rgb.copy()
    return rgb


def _check_pixels(size: tuple[int, int], limits: ImageLimits, path: str | None, *, when: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("corrupt", f"{when} declares an empty image of {width}x{height} pixels", path)
    if width * height > limits.max_pixels:
        raise ImageDecodeError(
            "too_many_pixels",
            f"{when} declares {width}x{height} = {width * height} pixels, over "
            f"ImageLimits.max_pixels={limits.max_pixels}",
            path,
        )


def _classify(e: BaseException, fp: BinaryIO, size: int, path: str | None) -> ImageDecodeError:
    """Turn a Pillow exception into an ImageDecodeError with the right reason."""
    if isinstance(e, Image.DecompressionBombError):
        return ImageDecodeError("too_many_pixels", str(e), path)
    message = str(e) or type(e).__name__
    lowered = message.lower()
    if isinstance(e, EOFError) or any(marker in lowered for marker in _TRUNCATION_MARKERS):
        return ImageDecodeError("truncated", message, path)
    if _riff_shorter_than_declared(fp, size):
        # libwebp only says "could not create decoder object"; the RIFF header says how long it should be.
        return ImageDecodeError(
            "truncated", f"{message}; the WebP file is shorter than its header declares", path
        )
    return ImageDecodeError("corrupt", message, path)


def _riff_shorter_than_declared(fp: BinaryIO, size: int) -> bool:
    try:
        fp.seek(0)
        head = fp.read(12)
    except (OSError, ValueError):
        return False
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return False
    return struct.unpack("<I", head[4:8])[0] + 8 > size


def _diagnose_unidentified(fp: BinaryIO, formats: tuple[str, ...]) -> tuple[str, str]:
    """Say why no allowed parser accepted the file: a refused format, or bytes that are no image at all."""
    try:
        fp.seek(0)
        head = fp.read(512)
    except (OSError, ValueError) as e:
        return "unreadable", f"cannot re-read the file header ({e})"
    prefix = head[:16]  # what Pillow's signature checks are written for
    allowed = ", ".join(formats)
    for fmt in formats:
        if _signature_matches(fmt, prefix):
            return "corrupt", f"starts like a {fmt} file but its header cannot be parsed"
    found = _sniff_other_format(head, formats)
    if found is not None:
        return "format_not_allowed", f"{found} is not an allowed image format (allowed: {allowed})"
    return "corrupt", f"not a recognised image format (allowed: {allowed})"


def _signature_matches(fmt: str, prefix: bytes) -> bool:
    """Run Pillow's signature check for one format on the first 16 bytes; never parses the file."""
    entry = Image.OPEN.get(fmt)
    if entry is None:
        return False
    accept = entry[1]
    if accept is None:  # formats without a signature would claim everything
        return False
    try:
        return bool(accept(prefix))  # a str result means "this format, but its codec is missing"
    except Exception:  # a buggy signature check is not evidence either way
        return False


def _sniff_other_format(head: bytes, formats: tuple[str, ...]) -> str | None:
    """Name the format of a file no allowed parser accepted, from its signature only."""
    lowered = head.lstrip().lower()
    for signature, name in _EXTRA_SIGNATURES:
        if head.startswith(signature) or lowered.startswith(signature):
            return name
    if lowered.startswith(b"<?xml") and b"<svg" in lowered:
        return "SVG"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        return f"ISO media ({brand}, e.g. HEIC or AVIF)"
    Image.init()  # registers every Pillow plugin's signature check; changes no setting
    for fmt in Image.ID:
        if fmt not in formats and _signature_matches(fmt, head[:16]):
            return fmt
    return None


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
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


def _to_rgb(im: Image.Image) -> Image.Image:
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


# ---------------------------------------------------------------------------------------------------------
# Text


def _continues_cluster(text: str, i: int) -> bool:
    """True when ``text[i]`` belongs to the same user-perceived character as ``text[i - 1]``."""
    ch, prev = text[i], text[i - 1]
    cp, prev_cp = ord(ch), ord(prev)
    if 0xDC00 <= cp <= 0xDFFF and 0xD800 <= prev_cp <= 0xDBFF:
        return True  # surrogate pair left in a str by a lax decoder
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Mc", "Me"):
        return True  # combining marks (accents, Indic vowel signs, enclosing keycaps)
    if cp == 0x200D or prev_cp == 0x200D:
        return True  # zero-width joiner and the character it joins (family and profession emoji)
    if (
        0xFE00 <= cp <= 0xFE0F
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF
        or 0xE0020 <= cp <= 0xE007F
    ):
        return True  # variation selectors, skin-tone modifiers, emoji tag sequences (subdivision flags)
    if _is_regional_indicator(cp) and _is_regional_indicator(prev_cp):
        run = 0  # regional indicators pair up into flags from the start of the run
        j = i - 1
        while j >= 0 and _is_regional_indicator(ord(text[j])):
            run += 1
            j -= 1
        return run % 2 == 1
    return False


def _is_regional_indicator(cp: int) -> bool:
    return 0x1F1E6 <= cp <= 0x1F1FF
