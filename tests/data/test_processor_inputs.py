"""What the processor and ``Predictor`` take as a post: a Post, a plain dict in the README's record format, a
PIL image or encoded bytes as ``image``, one string as one reply; wrong types are an InputError naming the
post and the field. ``Predictor.from_pretrained`` takes a hub id (from a pre-filled Hugging Face cache,
offline)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from ximgctx import Post, Reply
from ximgctx._artifacts import artifact_digest
from ximgctx.data.images import ImageLimits
from ximgctx.data.processor import PostBatch, PostProcessor, as_post
from ximgctx.errors import ArtifactError, InputError
from ximgctx.inference.predictor import Predictor
from ximgctx.models.hub import HubModelError

from .._offline import watch_network
from ..helpers import tiny_model
from ..models.test_hf_hub import REV, fill_cache


@pytest.fixture(scope="module")
def model():
    return tiny_model("attention")


def assert_same_batch(a: PostBatch, b: PostBatch) -> None:
    for f in dataclasses.fields(PostBatch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f.name
        elif isinstance(x, dict):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f.name
        else:
            assert x == y, f.name


def as_dict(post: Post, image) -> dict:
    return {**post.to_dict(), "image": image}


def test_dicts_pil_images_and_bytes_give_the_tensors_of_posts_with_files(model, posts) -> None:
    reference = model.processor(posts)
    assert reference.image_mask.sum() == 4  # four real image files (PNG and JPEG)
    opened = [None if p.image is None else Image.open(p.image) for p in posts]  # lazy: not decoded yet
    variants = {
        "dict, path": [p.to_dict() for p in posts],
        "dict, lazy PIL": [as_dict(p, im) for p, im in zip(posts, opened, strict=True)],
        "dict, loaded PIL": [
            as_dict(p, None if p.image is None else Image.open(p.image).copy()) for p in posts
        ],
        "dict, bytes": [as_dict(p, None if p.image is None else Path(p.image).read_bytes()) for p in posts],
        "Post, bytes": [
            dataclasses.replace(p, image=None if p.image is None else Path(p.image).read_bytes())
            for p in posts
        ],
        "Post, PIL": [
            dataclasses.replace(p, image=None if p.image is None else Image.open(p.image)) for p in posts
        ],
    }
    for name, inputs in variants.items():
        assert_same_batch(model.processor(inputs), reference), name
    assert opened[0].mode == "RGB" and isinstance(opened[0], Image.Image)  # the caller's object, untouched


def test_a_string_of_replies_is_one_reply_and_none_text_is_empty(model) -> None:
    one = model.processor([{"id": "a", "text": None, "replies": "count me in"}])
    listed = model.processor([Post("a", replies=[Reply("count me in")])])
    assert_same_batch(one, listed)
    assert one.text_mask.tolist() == [False] and one.reply_mask.tolist() == [[True]]
    assert as_post(Post("b", replies="lol")).replies == [Reply("lol")]  # type: ignore[arg-type]
    assert as_post({"text": "no id"}, 7).id == "input-7"


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (
            {"id": "p1", "image": 123},
            r"post 'p1' field 'image': an image is a path, the encoded bytes or a PIL",
        ),
        (Post("p2", image=123), r"post 'p2' field 'image'"),  # type: ignore[arg-type]
        ({"id": "p3", "replies": [None]}, r"post 'p3' field 'replies\[0\]'"),
        (Post("p4", replies=[None]), r"post 'p4' field 'replies\[0\]': a reply is a string or a Reply"),  # type: ignore[list-item]
        (Post("p5", replies=[Reply(None)]), r"post 'p5' field 'replies\[0\]'"),  # type: ignore[arg-type]
        (Post("p6", replies=5), r"post 'p6' field 'replies': replies are a list"),  # type: ignore[arg-type]
        ({"id": "p7", "text": 5}, r"post 'p7' field 'text'"),
        (Post("p8", text=["a"]), r"post 'p8' field 'text'"),  # type: ignore[arg-type]
        ({"id": "p9", "labels": "joke"}, r"post 'p9' field 'labels'"),
        (Post("p10", labels="joke"), r"post 'p10' field 'labels'"),  # type: ignore[arg-type]
        ({"id": "p11", "caption": "x"}, r"post 'p11': unknown fields \['caption'\]"),
        (42, r"post at position 1: a post is a Post or a dict"),
        (Post(None), r"field 'id'"),  # type: ignore[arg-type]
    ],
)
def test_wrong_types_are_an_input_error_naming_the_post_and_field(model, item, match) -> None:
    with pytest.raises(InputError, match=match):
        model.processor([Post("ok", text="fine"), item])


def test_pil_images_get_the_decoder_limits(model, tmp_path) -> None:
    processor = PostProcessor(
        model.processor.tokenizer,
        model.processor.image_transform,
        model.processor.image_size,
        model.config.limits,
        model.config.tasks,
        limits=ImageLimits(max_pixels=1000),
    )
    big = Image.new("RGBA", (40, 40), (1, 2, 3, 0))
    strip = Image.new("RGB", (1, 500))
    tiff = tmp_path / "a.tiff"
    Image.new("RGB", (8, 8)).save(tiff)
    batch = processor(
        [
            {"id": "big", "image": big},
            {"id": "strip", "image": strip},
            {"id": "tiff", "image": Image.open(tiff)},
        ]
    )
    assert batch.image_mask.tolist() == [False, False, False]
    kinds = [[(p.field, p.kind) for p in plist] for plist in batch.problems]
    assert kinds == [
        [("image", "too_many_pixels")],
        [("image", "too_elongated")],
        [("image", "format_not_allowed")],
    ]
    small = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # transparent: composited onto white, as from a file
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    assert_same_batch(
        processor([{"id": "s", "image": small}]), processor([{"id": "s", "image": buf.getvalue()}])
    )
    assert small.mode == "RGBA"  # not converted in place


def test_pil_images_truncated_or_animated_decode_like_their_files(model, tmp_path) -> None:
    whole = tmp_path / "whole.png"
    Image.effect_noise((64, 64), 40).convert("RGB").save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:-300])
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    third = Image.open(gif)
    third.seek(2)  # the caller left the animation on its last frame
    batch = model.processor([{"id": "cut", "image": Image.open(cut)}, {"id": "gif", "image": third}])
    by_path = model.processor([Post("cut", image=str(cut)), Post("gif", image=str(gif))])
    assert [[(p.field, p.kind) for p in plist] for plist in batch.problems] == [[("image", "truncated")], []]
    assert [[p.kind for p in plist] for plist in by_path.problems] == [["truncated"], []]
    assert torch.equal(batch.pixels, by_path.pixels) and batch.image_mask.tolist() == [False, True]


def test_predictor_takes_dicts_and_numbers_them_across_batches(model, posts) -> None:
    predictor = Predictor(model, device="cpu", dtype=None, batch_size=4)
    expected = predictor.predict(posts)
    got = predictor.predict([as_dict(p, None if p.image is None else Image.open(p.image)) for p in posts])
    assert [p.to_dict() for p in got] == [p.to_dict() for p in expected]
    anonymous = predictor.predict([{"text": t} for t in "abcdef"])
    assert [p.id for p in anonymous] == [f"input-{i}" for i in range(6)]  # not restarted per batch of 4
    with pytest.raises(InputError, match="post 'x' field 'image'"):
        predictor.predict([{"id": "x", "image": 1.5}])


def test_predictor_from_a_hub_id_in_the_cache_offline(tmp_path, monkeypatch, posts) -> None:
    model = tiny_model("concat")
    folder = model.save_pretrained(tmp_path / "model")
    repo = fill_cache(tmp_path / "cache", "org/tiny", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    digest = artifact_digest(folder)
    local = Predictor.from_pretrained(folder, device="cpu", dtype=None).predict(posts)
    for revision in (None, REV):
        predictor = Predictor.from_pretrained(
            "org/tiny", cache_dir=tmp_path / "cache", revision=revision, expected_sha256=digest, device="cpu"
        )
        assert predictor.model_dir == (repo / "snapshots" / REV).resolve()
        assert predictor.model_digest == Predictor.from_pretrained(folder, device="cpu").model_digest
        assert [p.to_dict() for p in predictor.predict(posts)] == [p.to_dict() for p in local]
    with pytest.raises(ArtifactError, match="does not match the expected"):
        Predictor.from_pretrained("org/tiny", cache_dir=tmp_path / "cache", expected_sha256="0" * 64)
    network = watch_network(monkeypatch)
    with pytest.raises(HubModelError) as err:
        Predictor.from_pretrained("org/missing", cache_dir=tmp_path / "cache")
    assert network.connects == [] and network.sleeps == []  # no download tried, no retry waited for
    assert "'org/missing'" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
