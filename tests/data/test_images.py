"""Tests for ximgctx.data.images: safe decoding under limits, and text capping.

Every image is generated in ``tmp_path`` or in memory; the whole file runs in a couple of seconds.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageFile, ImageOps

from ximgctx.data._pixels import to_rgb
from ximgctx.data.images import (
    ALLOWED_FORMATS,
    DECODE_REASONS,
    ImageDecodeError,
    ImageLimits,
    load_image,
)
from ximgctx.data.text import cap_text

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
_PILLOW_DEFAULTS = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)


# ---------------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(autouse=True)
def _pillow_globals_untouched():
    """Every test, pass or fail, must leave Pillow's process-wide settings exactly as it found them."""
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    yield
    assert before == (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A valid-looking 8-bit RGB PNG whose IHDR claims width x height, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _noise(width: int = 256, height: int = 256) -> Image.Image:
    """Incompressible pixels, so the pixel data (not the header) is most of the encoded file."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _px(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(im)[xy[1], xy[0]])


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _reason(source, limits: ImageLimits = ImageLimits()) -> str:
    with pytest.raises(ImageDecodeError) as info:
        load_image(source, limits)
    assert info.value.reason in DECODE_REASONS
    return info.value.reason


# ---------------------------------------------------------------------------------------------------------
# 1. Decompression bombs and the pixel limit


def test_png_bomb_is_refused_fast_without_allocating_pixels(tmp_path, monkeypatch):
    path = _write(tmp_path, "bomb.png", _png_header_only(100_000, 100_000))  # 10^10 pixels in ~70 bytes
    assert path.stat().st_size < 200
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))

    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError) as info:
            load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert info.value.reason == "too_many_pixels"
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert peak < 50 * 1024 * 1024
    assert loads == []  # refused from the header: no decoder ever ran (Pillow's pixel buffers are C memory)


def test_custom_pixel_limit_applies_below_pillows_own_limit(tmp_path, monkeypatch):
    # 8000 x 8000 = 64M pixels: under Pillow's MAX_IMAGE_PIXELS (so Pillow says nothing), over ours.
    assert Image.MAX_IMAGE_PIXELS > 8000 * 8000
    path = _write(tmp_path, "big.png", _png_header_only(8000, 8000))
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    with pytest.raises(ImageDecodeError, match="max_pixels=40000000") as info:
        load_image(path)
    assert info.value.reason == "too_many_pixels"
    assert loads == []


def test_pixel_limit_boundary_on_a_real_image(tmp_path):
    path = _write(tmp_path, "a.png", _encode(Image.new("RGB", (100, 100), RED), "PNG"))
    assert load_image(path, ImageLimits(max_pixels=10_000)).size == (100, 100)
    assert _reason(path, ImageLimits(max_pixels=9_999)) == "too_many_pixels"


def test_pillow_bomb_warning_is_not_leaked(tmp_path):
    # 100M pixels: above MAX_IMAGE_PIXELS (Pillow warns) but below 2x (Pillow does not raise).
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS
    path = _write(tmp_path, "warn.png", _png_header_only(10_000, 10_000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _reason(path) == "too_many_pixels"
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    # ... and the suppression was local: Pillow still warns for direct use afterwards.
    with pytest.warns(Image.DecompressionBombWarning), Image.open(path):
        pass


# ---------------------------------------------------------------------------------------------------------
# 2. Truncated, corrupt, missing, empty, unreadable


def test_truncated_jpeg(tmp_path):
    data = _encode(_noise(), "JPEG", quality=90)
    path = _write(tmp_path, "half.jpg", data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated") as info:
        load_image(path)
    assert info.value.reason == "truncated"
    assert isinstance(info.value.__cause__, OSError)  # Pillow's error is chained, not swallowed


def test_truncated_png(tmp_path):
    # Pillow opens the half PNG fine (IHDR is intact) and load() raises OSError("image file is truncated"),
    # so a cut PNG gets "truncated", not "corrupt".
    data = _encode(_noise(), "PNG")
    assert _reason(_write(tmp_path, "half.png", data[: len(data) // 2])) == "truncated"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP"])
def test_truncated_other_allowed_formats(tmp_path, fmt):
    # WebP is the odd one: libwebp only says "could not create decoder object"; the RIFF length tells.
    data = _encode(_noise(64, 64), fmt)
    assert _reason(data[: len(data) // 2]) == "truncated"


def test_png_with_damaged_pixel_data_is_corrupt():
    data = bytearray(_encode(_noise(64, 64), "PNG"))
    idat = data.index(b"IDAT") + 4
    data[idat + 20 : idat + 60] = b"\xff" * 40  # zlib stream broken, file length unchanged
    assert _reason(bytes(data)) == "corrupt"


def test_random_bytes_are_corrupt(tmp_path):
    data = random.Random(0).randbytes(4096)
    path = _write(tmp_path, "noise.jpg", data)  # the extension must not matter
    with pytest.raises(ImageDecodeError, match="not a recognised image format") as info:
        load_image(path)
    assert info.value.reason == "corrupt"


def test_allowed_signature_with_unparseable_header_is_corrupt():
    assert _reason(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30) == "corrupt"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageDecodeError, match="nope.png") as info:
        load_image(path)
    assert info.value.reason == "missing"
    assert info.value.path == str(path)


def test_empty_file_and_empty_bytes(tmp_path):
    assert _reason(_write(tmp_path, "empty.png", b"")) == "corrupt"
    assert _reason(b"") == "corrupt"


def test_directory_and_fifo_are_unreadable(tmp_path):
    with pytest.raises(ImageDecodeError, match="directory") as info:
        load_image(tmp_path)
    assert info.value.reason == "unreadable"
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.png"
        os.mkfifo(fifo)
        assert _reason(fifo) == "unreadable"  # refused before open(), which would block forever


def test_decode_error_is_a_value_error_and_pickles():
    err = ImageDecodeError("truncated", "image file is truncated", "a/b.jpg")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))  # DataLoader workers send exceptions between processes
    assert (back.reason, back.detail, back.path, str(back)) == (err.reason, err.detail, err.path, str(err))
    assert "a/b.jpg" in str(err) and "truncated" in str(err)


# ---------------------------------------------------------------------------------------------------------
# 3. EXIF orientation


def _upright() -> Image.Image:
    """40x20, left half red, right half blue: what an upright viewer sees."""
    im = Image.new("RGB", (40, 20), RED)
    im.paste(BLUE, (20, 0, 40, 20))
    return im


# Orientation tag -> how the camera stored the upright picture (the inverse of what the viewer applies).
_STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


def _exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(_upright().transpose(_STORED[orientation]), "JPEG", quality=95, exif=exif)


def _assert_upright(im: Image.Image) -> None:
    assert im.mode == "RGB"
    assert im.size == (40, 20)
    for y in (3, 10, 16):
        assert _close(_px(im, (5, y)), RED, 40), _px(im, (5, y))
        assert _close(_px(im, (34, y)), BLUE, 40), _px(im, (34, y))


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied(tmp_path, orientation):
    path = _write(tmp_path, f"o{orientation}.jpg", _exif_jpeg(orientation))
    with Image.open(path) as raw:  # the file really is stored sideways / upside down
        assert raw.size == (20, 40) if orientation != 3 else raw.size == (40, 20)
        assert raw.getexif()[0x0112] == orientation
    _assert_upright(load_image(path))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_broken_exif_block_does_not_crash():
    # Orientation 6 followed by an IFD pointer far past the end of the block.
    ifd = struct.pack("<H", 2) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    ifd += struct.pack("<HHII", 0x8769, 4, 1, 999_999)
    data = _encode(
        _upright().transpose(Image.Transpose.ROTATE_90), "JPEG", exif=b"Exif\0\0II*\0\x08\0\0\0" + ifd
    )
    _assert_upright(load_image(data))
    garbage = _encode(_upright(), "JPEG", exif=b"Exif\0\0" + b"\x13\x37" * 20)
    _assert_upright(load_image(garbage))


def test_exif_transpose_failure_falls_back_to_the_orientation_tag(monkeypatch):
    # Older Pillows crash inside exif_transpose (re-serialising odd EXIF); the tag alone still rotates.
    def boom(*args, **kwargs):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(ImageOps, "exif_transpose", boom)
    _assert_upright(load_image(_exif_jpeg(6)))


def test_unreadable_exif_keeps_stored_pixels(monkeypatch):
    def boom(*args, **kwargs):
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(ImageOps, "exif_transpose", boom)
    monkeypatch.setattr(Image.Image, "getexif", boom)
    out = load_image(_exif_jpeg(6))
    assert out.mode == "RGB" and out.size == (20, 40)  # untransposed, but decoded


# ---------------------------------------------------------------------------------------------------------
# 4. Every mode to RGB


def test_rgba_png_composites_onto_white():
    rgba = np.array([[[0, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 128], [0, 0, 255, 0]]], dtype=np.uint8)
    out = load_image(_encode(Image.fromarray(rgba), "PNG"))
    assert out.mode == "RGB"
    assert _px(out, (0, 0)) == WHITE  # transparent black must not stay black
    assert _px(out, (1, 0)) == RED
    assert _close(_px(out, (2, 0)), (127, 127, 127), 1)  # half-transparent black -> mid grey
    assert _px(out, (3, 0)) == WHITE


def test_la_png_composites_onto_white():
    la = Image.fromarray(np.array([[[0, 0], [0, 255], [200, 255]]], dtype=np.uint8), mode="LA")
    out = load_image(_encode(la, "PNG"))
    assert [_px(out, (x, 0)) for x in range(3)] == [WHITE, BLACK, (200, 200, 200)]


def _palette_image() -> Image.Image:
    im = Image.new("P", (3, 1), 0)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.putpixel((1, 0), 1)
    im.putpixel((2, 0), 2)
    return im


def test_palette_png_without_transparency():
    out = load_image(_encode(_palette_image(), "PNG"))
    assert out.mode == "RGB"
    assert [_px(out, (x, 0)) for x in range(3)] == [BLACK, RED, GREEN]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_composites_onto_white(fmt):
    data = _encode(_palette_image(), fmt, transparency=0)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    out = load_image(data)
    assert [_px(out, (x, 0)) for x in range(3)] == [WHITE, RED, GREEN]


def test_rgb_png_with_trns_colour_composites_onto_white():
    im = Image.new("RGB", (2, 1), (1, 2, 3))
    im.putpixel((1, 0), GREEN)
    out = load_image(_encode(im, "PNG", transparency=(1, 2, 3)))
    assert [_px(out, (x, 0)) for x in range(2)] == [WHITE, GREEN]


def test_grayscale_l():
    im = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    out = load_image(_encode(im, "PNG"))
    assert [_px(out, (x, 0)) for x in range(3)] == [BLACK, (77, 77, 77), WHITE]


def test_16bit_grayscale_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))  # (4, 256)
    data = _encode(Image.fromarray(ramp), "PNG")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "I;16"
        # Pillow's own conversion clips at 255: almost the whole ramp comes out white. That is the bug.
        assert (np.asarray(raw.convert("L")) == 255).mean() > 0.9
    out = np.asarray(load_image(data))  # (4, 256, 3)
    row = out[0, :, 0].astype(int)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 1
    assert (np.diff(row) >= 0).all()
    assert len(np.unique(row)) > 200  # a gradient, not saturation
    assert (row == 255).sum() <= 2


def test_16bit_grayscale_transparent_value_becomes_white():
    ramp = np.array([[0, 30000, 65535]], dtype=np.uint16)
    out = load_image(_encode(Image.fromarray(ramp), "PNG", transparency=0))
    assert [_px(out, (x, 0))[0] for x in range(3)] == [255, 30000 >> 8, 255]


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("F", [0.0, 0.5, 1.0], [0, 128, 255]),  # float in 0..1
        ("F", [-1.0, 0.0, 1.0], [0, 128, 255]),  # arbitrary range: stretched
        ("I", [0, 100, 255], [0, 100, 255]),  # 8-bit values in a 32-bit container
        ("I", [0, 32896, 65535], [0, 128, 255]),  # 16-bit values in a 32-bit container
    ],
)
def test_int_and_float_modes_are_scaled(mode, values, expected):
    # No allowed format decodes to I or F today, so the converter is checked directly.
    dtype = np.float32 if mode == "F" else np.int32
    im = Image.fromarray(np.array([values], dtype=dtype))
    assert im.mode == mode
    out = to_rgb(im)  # the conversion moved to ximgctx.data._pixels
    assert out.mode == "RGB"
    assert [_px(out, (x, 0))[0] for x in range(3)] == expected


def test_cmyk_jpeg():
    data = _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "CMYK"
    out = load_image(data)
    assert out.mode == "RGB"
    assert _close(_px(out, (8, 8)), RED, 10)


def test_one_bit_bmp_and_png():
    im = Image.new("1", (2, 1), 0)
    im.putpixel((1, 0), 1)
    for fmt in ("PNG", "BMP"):
        out = load_image(_encode(im, fmt))
        assert out.mode == "RGB"
        assert [_px(out, (x, 0)) for x in range(2)] == [BLACK, WHITE], fmt


def test_webp_with_alpha_composites_onto_white():
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    im.paste((0, 0, 255, 255), (4, 0, 8, 8))
    out = load_image(_encode(im, "WEBP", lossless=True))
    assert _px(out, (1, 1)) == WHITE and _px(out, (6, 6)) == BLUE


# ---------------------------------------------------------------------------------------------------------
# 5. Animations: the first frame


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_returns_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim.{fmt.lower()}"
    params = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **params)
    with Image.open(path) as raw:
        assert raw.n_frames == 3
        raw.seek(2)  # a stream left on a later frame must not change the answer
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (8, 8)
    assert _close(_px(out, (4, 4)), RED, 2)


# ---------------------------------------------------------------------------------------------------------
# 6. Formats outside the allowlist


def test_pdf_is_not_allowed(tmp_path):
    path = tmp_path / "doc.pdf"
    Image.new("RGB", (10, 10), RED).save(path, "PDF")
    with pytest.raises(ImageDecodeError, match="PDF") as info:
        load_image(path)
    assert info.value.reason == "format_not_allowed"


def test_eps_is_not_allowed_and_its_parser_never_runs(tmp_path, monkeypatch):
    def must_not_run(self):
        raise AssertionError("the EPS parser (a Ghostscript front end) was tried")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", must_not_run)
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n"
    )
    path = _write(tmp_path, "fig.jpg", eps)  # a lying extension changes nothing
    with pytest.raises(ImageDecodeError, match="EPS|PostScript") as info:
        load_image(path)
    assert info.value.reason == "format_not_allowed"


@pytest.mark.parametrize(
    ("name", "make", "found"),
    [
        ("TIFF", lambda: _encode(Image.new("RGB", (10, 10), RED), "TIFF"), "TIFF"),
        ("SVG", lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        ("HTML", lambda: b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        ("ICO", lambda: _encode(Image.new("RGB", (16, 16), RED), "ICO"), "ICO"),
    ],
)
def test_other_formats_are_not_allowed(name, make, found):
    with pytest.raises(ImageDecodeError, match=found) as info:
        load_image(make())
    assert info.value.reason == "format_not_allowed", name


def test_formats_restriction():
    png = _encode(Image.new("RGB", (4, 4), GREEN), "PNG")
    assert _px(load_image(png), (0, 0)) == GREEN
    with pytest.raises(ImageDecodeError, match="PNG is not an allowed") as info:
        load_image(png, ImageLimits(formats=("JPEG",)))
    assert info.value.reason == "format_not_allowed"
    assert _px(load_image(png, ImageLimits(formats=("png",))), (0, 0)) == GREEN


# ---------------------------------------------------------------------------------------------------------
# 8. Sources, byte limit, independence of the result


class _CountingStream(io.BytesIO):
    """A binary stream that records how many bytes were read from it."""

    def __init__(self, data: bytes, seekable: bool = True) -> None:
        super().__init__(data)
        self._seekable = seekable
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        return super().seek(offset, whence)


def test_bytes_bytearray_memoryview_and_stream_sources(tmp_path):
    data = _encode(Image.new("RGB", (6, 4), BLUE), "PNG")
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data), _CountingStream(data, False)):
        out = load_image(source)
        assert out.mode == "RGB" and out.size == (6, 4) and _px(out, (0, 0)) == BLUE, type(source)


def test_stream_is_read_from_start_and_left_open(tmp_path):
    path = _write(tmp_path, "b.png", _encode(Image.new("RGB", (3, 3), RED), "PNG"))
    with open(path, "rb") as fh:
        fh.read(5)
        out = load_image(fh)
        assert not fh.closed
    assert _px(out, (1, 1)) == RED


def test_result_is_loaded_and_independent_of_the_file(tmp_path):
    path = _write(tmp_path, "c.png", _encode(Image.new("RGB", (3, 3), GREEN), "PNG"))
    out = load_image(path)
    path.unlink()
    assert not isinstance(out, ImageFile.ImageFile)
    assert _px(out, (2, 2)) == GREEN
    assert _px(out.resize((6, 6)), (5, 5)) == GREEN


def test_max_bytes_is_checked_before_reading(tmp_path):
    data = _encode(_noise(64, 64), "PNG")
    limits = ImageLimits(max_bytes=len(data) - 1)

    stream = _CountingStream(data)
    assert _reason(stream, limits) == "too_many_bytes"
    assert stream.bytes_read == 0  # refused from its length alone

    unseekable = _CountingStream(data, seekable=False)
    assert _reason(unseekable, limits) == "too_many_bytes"
    assert unseekable.bytes_read == len(data)  # at most max_bytes + 1 read, never more

    assert _reason(data, limits) == "too_many_bytes"
    assert load_image(data, ImageLimits(max_bytes=len(data))).size == (64, 64)


def test_huge_file_is_refused_from_its_size(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    with open(path, "wb") as fh:
        fh.write(_encode(Image.new("RGB", (2, 2)), "PNG"))
        fh.truncate(1 << 30)  # sparse: 1 GiB on paper, nothing on disk
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match="max_bytes") as info:
            load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "too_many_bytes"
    assert opened == []  # refused from its size: Pillow never saw it
    assert peak < 16 * 1024 * 1024  # and the 1 GiB was never read


def test_wrong_source_types_are_type_errors():
    with pytest.raises(TypeError, match="source must be"):
        load_image(12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ImageLimits"):
        load_image(b"", limits={"max_pixels": 1})  # type: ignore[arg-type]


def test_text_mode_stream_is_unreadable(tmp_path):
    path = _write(tmp_path, "t.txt", b"hello")
    with open(path) as fh, pytest.raises(ImageDecodeError, match="'rb'") as info:  # text mode
        load_image(fh)
    assert info.value.reason == "unreadable"


# ---------------------------------------------------------------------------------------------------------
# 9. cap_text


def test_cap_text_caps_exact_length_and_leaves_short_text_alone():
    assert cap_text("hello world", 5) == "hello"
    text = "short"
    assert cap_text(text, 5) is text
    assert cap_text(text, 500) is text
    assert len(cap_text("x" * 10_000, 77)) == 77


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, None, "5"])
def test_cap_text_rejects_bad_max_chars(bad):
    with pytest.raises(ValueError, match="max_chars"):
        cap_text("abc", bad)  # type: ignore[arg-type]


def test_cap_text_keeps_combining_marks_with_their_base():
    text = "cafe\u0301 au lait"  # e + combining acute
    assert cap_text(text, 4) == "caf"  # not "cafe" stripped of its accent
    assert cap_text(text, 5) == "cafe\u0301"


def test_cap_text_does_not_split_emoji_sequences():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: 5 code points
    assert cap_text("hi " + family + "!", 6) == "hi "
    assert cap_text("hi " + family + "!", 8) == "hi " + family
    thumbs = "\U0001f44d\U0001f3fd"  # thumbs up + skin tone
    assert cap_text("ok" + thumbs, 3) == "ok"
    flags = "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea"  # FR DE
    assert cap_text(flags, 3) == flags[:2]
    assert cap_text("\u2764\ufe0f!", 1) == "\u2764"  # one cluster longer than the cap: hard cut, never ""


def test_cap_text_never_splits_a_surrogate_pair_or_returns_invalid_text():
    assert cap_text("a\ud83d\ude00b", 2) == "a"  # a pair left in a str by a lax decoder
    zalgo = "a" + "\u0301" * 50
    assert cap_text(zalgo, 5) == zalgo[:5]
    mixed = (
        "Ne\u0301e \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1eb\U0001f1f7 \U0001f44d\U0001f3fd "
        "\u0928\u093f x" * 3
    )
    for n in range(1, len(mixed) + 2):
        out = cap_text(mixed, n)
        assert mixed.startswith(out) and 0 < len(out) <= n
        out.encode("utf-8")  # strict: raises on a lone surrogate
        assert not out.endswith("\u200d")


def test_cap_text_rejects_non_str():
    with pytest.raises(TypeError):
        cap_text(b"bytes", 3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# 10. ImageLimits validation


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"max_pixels": 0}, r"max_pixels .* got 0"),
        ({"max_pixels": -5}, r"max_pixels .* got -5"),
        ({"max_pixels": True}, r"max_pixels .* got True"),
        ({"max_bytes": 1.5}, r"max_bytes .* got 1.5"),
        ({"formats": ("TIFF",)}, r"got 'TIFF'"),
        ({"formats": ("PNG", "PDF")}, r"got 'PDF'"),
        ({"formats": ()}, r"at least one"),
        ({"formats": "PNG"}, r"got 'PNG'"),
    ],
)
def test_image_limits_validation_names_the_bad_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ImageLimits(**kwargs)


def test_image_limits_defaults_and_normalisation():
    limits = ImageLimits()
    assert (limits.max_pixels, limits.max_bytes, limits.formats) == (
        40_000_000,
        64 * 1024 * 1024,
        ALLOWED_FORMATS,
    )
    assert ImageLimits(formats=["png", "JPEG", "png"]).formats == ("PNG", "JPEG")  # type: ignore[arg-type]
    assert hash(ImageLimits()) == hash(ImageLimits())


# ---------------------------------------------------------------------------------------------------------
# 7. Pillow's globals (also checked after every test by the autouse fixture)


def test_pillow_globals_are_still_defaults():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS) == _PILLOW_DEFAULTS
