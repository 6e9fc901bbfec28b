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
* **Aspect ratio bounded before** ``load()`` (``ImageLimits.max_aspect_ratio``): a 2 KB PNG of 1 x 1,000,000
  pixels is under the pixel limit, but resizing its short side to the model's 224 pixels would allocate a
  224 x 224,000,000 grid (tens of gigabytes). The ratio of the long side to the short side is read from the
  header and a strip beyond the bound is refused with ``"too_elongated"``, so the cost of every later
  resize is bounded by ``image_size**2 * max_aspect_ratio`` pixels.
* **Reads confined to a root** (:class:`ImageRoot` with ``confine=True``, always on in the service): the
  real path, symlinks resolved, must lie inside the root; ``..`` out of it, absolute paths elsewhere and
  symlinks out are refused with ``"outside_root"`` before anything is opened, with the same message
  whether or not the target exists, and messages name the path relative to the root only. A NUL byte or
  a path the OS cannot represent is ``"invalid_path"``, never an exception from ``os``.
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

Text capping lives in :mod:`ximgctx.data.text`.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import BinaryIO, Union

from PIL import Image, UnidentifiedImageError

from ximgctx.data._pixels import apply_exif_orientation, to_rgb
from ximgctx.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_FORMATS",
    "DECODE_REASONS",
    "ImageDecodeError",
    "ImageLimits",
    "ImageRoot",
    "ImageSource",
    "from_pil",
    "load_image",
]

#: The only formats Pillow is allowed to parse (Pillow's format names).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

#: Every ``ImageDecodeError.reason`` this module produces.
DECODE_REASONS: tuple[str, ...] = (
    "missing",
    "too_many_pixels",
    "too_many_bytes",
    "too_elongated",
    "outside_root",
    "invalid_path",
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
    "too_elongated": "crop the image, or raise ImageLimits.max_aspect_ratio for images from a trusted source",
    "outside_root": "image paths must stay inside the image root",
    "invalid_path": "image paths are plain relative file names",
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


class ImageDecodeError(InputError):
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
        where = f"image {self.path!r}" if self.path is not None else "the image"
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
    # long side / short side allowed (header); at 224 px a resize makes <= 224x22400
    max_aspect_ratio: int = 100

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_bytes", "max_aspect_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"ImageLimits.{name} must be a positive integer, got {value!r}")
        formats = self.formats
        if isinstance(formats, (str, bytes)) or not isinstance(formats, (tuple, list)):
            raise ConfigError(
                "ImageLimits.formats must be a tuple of format names such as ('JPEG', 'PNG'), got "
                f"{formats!r}"
            )
        if not formats:
            raise ConfigError(f"ImageLimits.formats must name at least one of {ALLOWED_FORMATS}, got ()")
        normalised = []
        for fmt in formats:
            upper = fmt.upper() if isinstance(fmt, str) else fmt
            if upper not in ALLOWED_FORMATS:
                raise ConfigError(
                    f"ImageLimits.formats may only contain {ALLOWED_FORMATS} (the design's allowlist), "
                    f"got {fmt!r}"
                )
            normalised.append(upper)
        # Frozen dataclass: normalise case and list-vs-tuple once, here.
        object.__setattr__(self, "formats", tuple(dict.fromkeys(normalised)))

    def tightened(self, *, max_pixels: int | None = None, max_bytes: int | None = None) -> ImageLimits:
        """These limits lowered to the values given where those are smaller, never raised.

        This is how a model folder's ``data.image_max_pixels`` / ``image_max_bytes`` apply: they can make the
        process stricter, but a folder claiming ``1e12`` pixels leaves the process's limit as it is.
        """
        lowered = {}
        for name, value in (("max_pixels", max_pixels), ("max_bytes", max_bytes)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"image limit {name} must be a positive number, got {value!r}")
            lowered[name] = min(getattr(self, name), int(value))
        return replace(self, **lowered)


def _inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` when it lies inside it (both absolute and normalised), else None."""
    try:
        if os.path.commonpath([path, root]) != root:
            return None
    except ValueError:  # another drive (Windows)
        return None
    return os.path.relpath(path, root)


@dataclass(frozen=True)
class ImageRoot:
    """The folder image paths are read from, and whether reads must stay inside it.

    With ``confine=True`` a path is accepted only when it is inside the root both as written (``..`` is
    resolved on the string, before any file system call) and as the real path with every symlink resolved.
    An absolute path is accepted only when it already lies inside the root (what
    :func:`ximgctx.data.io.load_posts` makes of a relative path); any other is refused. Refusals say
    ``"outside_root"`` and never whether the target exists. The final open uses ``O_NOFOLLOW``, so a symlink
    swapped in after the check is not followed.
    """

    path: str  # folder relative image paths are resolved against
    confine: bool = True  # True: nothing outside `path` is opened and messages name root-relative paths only

    def __post_init__(self) -> None:
        path = os.fspath(self.path)
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ConfigError(f"image root must be a folder path, got {self.path!r}")
        if not os.path.isdir(path):
            raise ConfigError(f"image root {path!r} is not a folder")
        object.__setattr__(self, "path", os.path.abspath(path))

    def resolve(self, image: str) -> tuple[str, str]:
        """``(path to open, name for messages)`` for one post's image path.

        Raises:
            ImageDecodeError: ``"invalid_path"`` (a NUL byte, not a string) or ``"outside_root"``.
        """
        if not isinstance(image, str) or not image or "\x00" in image:
            raise ImageDecodeError("invalid_path", "the image path is empty, not text or holds a NUL byte")
        joined = os.path.normpath(os.path.join(self.path, image))  # an absolute `image` replaces the root
        if not self.confine:
            return joined, joined
        real_root = os.path.realpath(self.path)
        rel = _inside(joined, self.path)
        if rel is None and real_root != self.path:
            rel = _inside(joined, real_root)
        if rel is None:
            raise ImageDecodeError("outside_root", "the image path leads outside the image root")
        try:
            real = os.path.realpath(os.path.join(real_root, rel))
        except (OSError, ValueError) as e:  # a symlink loop, a path the OS cannot encode
            raise ImageDecodeError("invalid_path", "the image path cannot be resolved") from e
        if _inside(real, real_root) is None:
            raise ImageDecodeError("outside_root", "the image path leads outside the image root")
        return real, rel


def load_image(
    source: ImageSource, limits: ImageLimits = ImageLimits(), *, root: ImageRoot | None = None
) -> Image.Image:
    """Decode an untrusted image safely to an RGB PIL image.

    Args:
        source: A path (``str`` or ``os.PathLike``), the encoded bytes, or a binary stream. Bytes are
            always image content, never a path. A stream is read from its beginning (Pillow seeks to 0)
            and is not closed; a stream that cannot seek is read up to ``limits.max_bytes + 1`` bytes.
        limits: Pixel, byte, aspect-ratio and format limits.
        root: Where relative paths are read from and, when it confines, the only folder read from.

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
    with _open_source(source, limits, root) as (fp, size, path), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _decode(fp, size, path, limits)


def from_pil(image: Image.Image, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """An image a caller already holds as a PIL object, through the same rules as :func:`load_image`.

    The pixel and aspect limits are checked on its size before anything is decoded; one that Pillow has opened
    but not yet loaded (``Image.open(...)``) must be of an allowed format; the first frame of an animation,
    EXIF orientation and RGB conversion are applied as for a file, so ``Image.open(path)`` and ``path`` give
    the same pixels. The caller's object is never returned nor converted in place (an animation is seeked to
    its first frame, a lazily opened one loaded).

    Raises:
        ImageDecodeError: too many pixels, too elongated, a format not allowed, or pixels that fail to decode.
    """
    name = getattr(image, "filename", None) or None
    path = name if isinstance(name, str) else None
    _check_pixels(image.size, limits, path, when="the PIL image")
    _check_aspect(image.size, limits, path)
    pending = bool(getattr(image, "tile", None))  # opened lazily: Pillow still has to parse and decode it
    if pending and image.format not in limits.formats:
        raise ImageDecodeError("format_not_allowed", f"the PIL image holds a {image.format} file", path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            if getattr(image, "is_animated", False) and image.tell() != 0:
                image.seek(0)  # the first frame, as load_image decodes it
            image.load()
        except _DECODE_ERRORS as e:
            message = str(e) or type(e).__name__
            truncated = isinstance(e, EOFError) or any(m in message.lower() for m in _TRUNCATION_MARKERS)
            raise ImageDecodeError("truncated" if truncated else "corrupt", message, path) from e
    _check_pixels(image.size, limits, path, when="decoded frame")  # a GIF frame can grow on load
    _check_aspect(image.size, limits, path)
    try:
        rgb = to_rgb(apply_exif_orientation(image))
    except _DECODE_ERRORS as e:
        raise ImageDecodeError("corrupt", f"cannot convert {image.mode} pixels to RGB ({e})", path) from e
    return rgb.copy() if rgb is image else rgb


# ---------------------------------------------------------------------------------------------------------
# Source handling


def _open_path(path: str, name: str, *, nofollow: bool) -> BinaryIO:
    """Open a regular file for reading; ``name`` is what messages show. ``nofollow``: a symlink in the last
    part is refused (a confining root passes the real path, so one there was swapped in after the check)."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        _require_regular_file(os.stat(path).st_mode, name)  # open() on a FIFO would block forever
        return os.fdopen(os.open(path, flags), "rb")
    except ImageDecodeError:
        raise
    except FileNotFoundError as e:
        raise ImageDecodeError("missing", "no such file", name) from e
    except OSError as e:
        raise ImageDecodeError("unreadable", f"cannot open the file ({e.strerror or e})", name) from e
    except ValueError as e:  # a NUL byte, a lone surrogate the file system encoding cannot hold
        raise ImageDecodeError("invalid_path", "the image path cannot be used as a file name", name) from e


@contextmanager
def _open_source(
    source: ImageSource, limits: ImageLimits, root: ImageRoot | None
) -> Iterator[tuple[BinaryIO, int, str | None]]:
    """Yield ``(seekable binary stream, size in bytes, path for messages)`` after the byte limit check."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not isinstance(path, str):
            raise TypeError(f"image paths must be str or os.PathLike[str], got {path!r}")
        path, name = root.resolve(path) if root is not None else (path, path)
        fh = _open_path(path, name, nofollow=root is not None and root.confine)
        path = name
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
    stream_name = getattr(source, "name", None)
    stream_path = stream_name if isinstance(stream_name, str) else None
    try:
        if not isinstance(source.read(0), (bytes, bytearray)):
            raise ImageDecodeError(
                "unreadable", "the stream is not in binary mode (open it with 'rb')", stream_path
            )
        seekable = bool(source.seekable()) if hasattr(source, "seekable") else False
        if seekable:
            size = source.seek(0, io.SEEK_END)
            _check_bytes(size, limits, stream_path)
            source.seek(0)
            stream: BinaryIO = source
        else:
            data = source.read(limits.max_bytes + 1)
            size = len(data)
            _check_bytes(size, limits, stream_path)
            stream = io.BytesIO(data)
    except ImageDecodeError:
        raise
    except (OSError, ValueError) as e:  # closed file, broken pipe, ...
        raise ImageDecodeError("unreadable", f"cannot read the stream ({e})", stream_path) from e
    yield stream, size, stream_path


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
        _check_aspect(im.size, limits, path)
        try:
            im.seek(0)  # first frame of an animation; the frame decoded is always the same one
            im.load()
        except _DECODE_ERRORS as e:
            raise _classify(e, fp, size, path) from e
        # Some formats (GIF frames larger than the logical screen) can grow on load: check again.
        _check_pixels(im.size, limits, path, when="decoded frame")
        _check_aspect(im.size, limits, path)
        try:
            upright = apply_exif_orientation(im)
            rgb = to_rgb(upright)
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


def _check_aspect(size: tuple[int, int], limits: ImageLimits, path: str | None) -> None:
    long_side, short_side = max(size), min(size)
    if long_side > short_side * limits.max_aspect_ratio:
        raise ImageDecodeError(
            "too_elongated",
            f"header declares {size[0]}x{size[1]} pixels, a side ratio over "
            f"ImageLimits.max_aspect_ratio={limits.max_aspect_ratio} (resizing it would cost "
            f"{long_side // short_side}x a square image)",
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
