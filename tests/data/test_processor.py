"""The collate step's trust boundary: confined image reads, bounded decode cost, process-owned limits,
labels checked in float32, and problems as data."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ximgctx.data.images as images_module
from ximgctx.config import DataConfig, TaskSpec
from ximgctx.data.images import ImageDecodeError, ImageLimits, ImageRoot, load_image
from ximgctx.data.io import load_posts, write_posts
from ximgctx.data.problems import Problem
from ximgctx.data.processor import LabelError, PostProcessor, encode_label
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError, InputError

S = 8  # image size of the toy processor

MEANING = TaskSpec("meaning", ["literal", "ironic"], kind="multiclass")
INTENT = TaskSpec("intent", ["joke", "threat"], kind="multilabel")


def _tokenizer(texts: list[str]) -> torch.Tensor:
    out = torch.zeros(len(texts), 77, dtype=torch.long)
    for i, t in enumerate(texts):
        n = min(len(t.split()), 75)
        out[i, : n + 2] = torch.arange(1, n + 3)
    return out


def _transform(im: Image.Image) -> torch.Tensor:
    """Short side to S, then a centre crop, like open_clip's eval transform (the costly resize included)."""
    w, h = im.size
    scale = S / min(w, h)
    im = im.resize((max(S, round(w * scale)), max(S, round(h * scale))))
    left, top = (im.size[0] - S) // 2, (im.size[1] - S) // 2
    im = im.crop((left, top, left + S, top + S))
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _processor(**kwargs) -> PostProcessor:
    data = kwargs.pop("data", DataConfig())
    return PostProcessor(_tokenizer, _transform, S, data, [MEANING, INTENT], **kwargs)


def _png(path: Path, color=(200, 30, 30), size=(16, 16)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def _strip_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of width x height, all black: a few KB for millions of pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    raw = zlib.compress(row * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------------------
# Problems are data


def test_problems_are_problem_objects_with_field_and_kind(tmp_path):
    long_text = "word " * 1000
    posts = [
        Post("ok", str(_png(tmp_path / "a.png")), "fine"),
        Post("gone", str(tmp_path / "missing.png"), "x"),
        Post("long", None, long_text, labels={"meaning": "sarcastic"}),
    ]
    batch = _processor(data=DataConfig(max_text_chars=100))(posts, invalid_labels="drop")
    assert batch.problems[0] == []
    assert [(p.field, p.kind) for p in batch.problems[1]] == [("image", "missing")]
    assert [(p.field, p.kind) for p in batch.problems[2]] == [
        ("text", "capped"),
        ("labels.meaning", "invalid_label"),
    ]
    assert all(isinstance(p, Problem) for plist in batch.problems for p in plist)
    assert str(batch.problems[2][0]) == f"text: capped: capped from {len(long_text)} to 100 characters"
    assert batch.image_mask.tolist() == [True, False, False]


# ---------------------------------------------------------------------------------------------------------
# Confined reads


@pytest.fixture
def outside_and_root(tmp_path):
    """A decodable PNG outside the root, and a root with one good image and a symlink out."""
    secret = _png(tmp_path / "secret.png", color=(1, 2, 3))
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    _png(root / "images" / "good.png")
    os.symlink(secret, root / "images" / "link.png")
    os.symlink(tmp_path, root / "images" / "up")  # a folder symlink out of the root
    return secret, root


def _spy_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images_module.os, "open", spy)
    return opened


def test_confined_reads_refuse_traversal_absolute_and_symlinks_without_opening(outside_and_root, monkeypatch):
    secret, root = outside_and_root
    assert load_image(secret).size == (16, 16)  # the file outside would decode
    opened = _spy_opens(monkeypatch)
    posts = [
        Post("good", "images/good.png"),
        Post("dotdot", "../secret.png"),
        Post("deep-dotdot", "images/../../secret.png"),
        Post("absolute", str(secret)),
        Post("symlink", "images/link.png"),
        Post("dir-symlink", "images/up/secret.png"),
        Post("nul", "images/good.png\x00.txt"),
        Post("nowhere", "../does-not-exist.png"),
    ]
    processor = _processor(image_root=ImageRoot(str(root), confine=True))
    batch = processor(posts)
    assert batch.image_mask.tolist() == [True] + [False] * 7
    kinds = {
        pid: [(p.field, p.kind) for p in plist] for pid, plist in zip(batch.ids, batch.problems, strict=True)
    }
    for pid in ("dotdot", "deep-dotdot", "absolute", "symlink", "dir-symlink", "nowhere"):
        assert kinds[pid] == [("image", "outside_root")], pid
    assert kinds["nul"] == [("image", "invalid_path")]
    # nothing outside the root was opened: only the good image was
    assert [os.path.realpath(p) for p in opened] == [os.path.realpath(root / "images" / "good.png")]
    texts = {pid: str(plist[0]) for pid, plist in zip(batch.ids, batch.problems, strict=True) if plist}
    for pid, text in texts.items():
        assert f"post {pid!r} field 'image'" in text
        assert str(root.parent) not in text and "secret" not in text, text  # no server path
    # an existing and a missing target outside read the same: no existence oracle
    assert texts["dotdot"].replace("'dotdot'", "X") == texts["nowhere"].replace("'nowhere'", "X")


def test_confined_root_accepts_what_load_posts_resolved_inside_it(outside_and_root, tmp_path):
    _, root = outside_and_root
    manifest = root / "posts.jsonl"
    write_posts([Post("a", "images/good.png"), Post("b", "../secret.png")], manifest)
    posts = load_posts(manifest, image_root=root)
    batch = _processor(image_root=ImageRoot(str(root)))(posts)
    assert batch.image_mask.tolist() == [True, False]
    assert [p.kind for p in batch.problems[1]] == ["outside_root"]


def test_unconfined_nul_byte_is_a_per_post_problem(tmp_path):
    good = _png(tmp_path / "good.png")
    batch = _processor()([Post("a", str(good) + "\x00x"), Post("b", str(good))])
    assert batch.image_mask.tolist() == [False, True]
    assert [p.kind for p in batch.problems[0]] == ["invalid_path"]


def test_image_root_must_be_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        ImageRoot(str(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------------------
# Bounded decode cost


@pytest.mark.parametrize("length", [1_000_000, 10_000_000])
def test_extreme_strips_are_refused_from_the_header_before_load(tmp_path, length, monkeypatch):
    strip = tmp_path / "strip.png"
    strip.write_bytes(_strip_png(1, length))
    assert strip.stat().st_size < 40_000  # a few KB for millions of pixels
    loaded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(self.size))  # never reached
    with pytest.raises(ImageDecodeError) as info:
        load_image(strip)
    assert info.value.reason == "too_elongated" and loaded == []
    assert "max_aspect_ratio=100" in str(info.value)


def test_batch_with_strips_gives_every_post_a_result(tmp_path):
    for name, (w, h) in {"wide.png": (1_000_000, 1), "tall.png": (1, 10_000_000)}.items():
        (tmp_path / name).write_bytes(_strip_png(w, h))
    posts = [
        Post("good-0", str(_png(tmp_path / "g0.png"))),
        Post("wide", str(tmp_path / "wide.png")),
        Post("tall", str(tmp_path / "tall.png")),
        Post("good-1", str(_png(tmp_path / "g1.png", size=(300, 100)))),  # 3:1 is fine
    ]
    batch = _processor()(posts)
    assert batch.ids == ["good-0", "wide", "tall", "good-1"]
    assert batch.image_mask.tolist() == [True, False, False, True]
    assert [[(p.field, p.kind) for p in plist] for plist in batch.problems] == [
        [],
        [("image", "too_elongated")],
        [("image", "too_elongated")],
        [],
    ]


def test_aspect_ratio_limit_is_inclusive_and_configurable():
    data = _strip_png(400, 4)  # 100:1
    assert load_image(data).size == (400, 4)
    with pytest.raises(ImageDecodeError, match="too_elongated"):
        load_image(data, ImageLimits(max_aspect_ratio=99))
    with pytest.raises(ConfigError, match="max_aspect_ratio"):
        ImageLimits(max_aspect_ratio=0)


# ---------------------------------------------------------------------------------------------------------
# Decode limits belong to the process


def test_model_config_can_only_lower_the_process_limits():
    generous = DataConfig(image_max_pixels=10**12, image_max_bytes=10**15)
    assert _processor(data=generous).limits == ImageLimits()  # the folder cannot raise the default
    process = ImageLimits(max_pixels=1_000, max_bytes=5_000)
    assert _processor(data=generous, limits=process).limits == process
    strict = DataConfig(image_max_pixels=100, image_max_bytes=900)
    assert _processor(data=strict, limits=process).limits == ImageLimits(max_pixels=100, max_bytes=900)


def test_build_processor_takes_process_limits_tightened_by_the_model_config():
    from tests.helpers import tiny_config
    from ximgctx.models.context_model import ContextModel

    config = tiny_config("concat", lora=False)
    config.limits = DataConfig(image_max_pixels=10**12)
    model = ContextModel(config)
    assert model.processor.limits.max_pixels == ImageLimits().max_pixels
    processor = model.build_processor(limits=ImageLimits(max_pixels=5_000))
    assert processor.limits.max_pixels == 5_000
    big = Image.new("RGB", (100, 100))  # 10,000 pixels: over the process's limit
    assert processor.limits.max_pixels < big.width * big.height


# ---------------------------------------------------------------------------------------------------------
# Labels in float32


def test_soft_labels_are_checked_in_float32():
    assert encode_label({"literal": 3.0, "ironic": 1.0}, MEANING).tolist() == [0.75, 0.25]
    with pytest.raises(LabelError, match="overflows float32"):
        encode_label({"literal": 1e39}, MEANING)  # finite as a Python float, inf in float32
    with pytest.raises(LabelError, match="overflows float32"):
        encode_label({"literal": 3e38, "ironic": 3e38}, MEANING)  # the sum overflows: all-zero target
    with pytest.raises(LabelError, match="overflows float32"):
        encode_label({"joke": 1e39}, INTENT)
    with pytest.raises(LabelError, match="sum to > 0"):
        encode_label({"literal": 1e-46}, MEANING)  # a float64 positive that float32 flushes to zero
    assert issubclass(LabelError, InputError)


def test_overflowing_soft_label_is_a_per_post_problem_and_the_task_is_masked():
    posts = [
        Post("big", None, "a", labels={"meaning": {"literal": 1e39}, "intent": ["joke"]}),
        Post("pair", None, "b", labels={"meaning": {"literal": 3e38, "ironic": 3e38}}),
        Post("ok", None, "c", labels={"meaning": {"literal": 1.0, "ironic": 1.0}}),
    ]
    with pytest.raises(LabelError, match="post 'big': task 'meaning': the label distribution"):
        _processor()(posts)
    batch = _processor()(posts, invalid_labels="drop")
    assert batch.label_mask["meaning"].tolist() == [False, False, True]
    assert batch.label_mask["intent"].tolist() == [True, False, False]
    assert bool(torch.isfinite(batch.targets["meaning"]).all())
    assert batch.targets["meaning"][2].tolist() == [0.5, 0.5]
    assert [[(p.field, p.kind) for p in plist] for plist in batch.problems] == [
        [("labels.meaning", "invalid_label")],
        [("labels.meaning", "invalid_label")],
        [],
    ]


def test_data_error_classes_derive_from_input_error():
    from ximgctx.adapters import AdapterError
    from ximgctx.data.record import PostValidationError

    for cls in (PostValidationError, ImageDecodeError, LabelError, AdapterError):
        assert issubclass(cls, InputError) and issubclass(cls, ValueError), cls
