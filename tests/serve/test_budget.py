"""The decode budget: pixels counted from image headers before decoding, per request and per API key (a
token bucket); over it a 429 with Retry-After in OpenAI's error shape, and the model never sees the
request."""

from __future__ import annotations

import base64
import io
import re

import httpx
import openai
import pytest
from PIL import Image

from ximgctx.errors import ConfigError, InputError
from ximgctx.serve import ServeConfig, create_app
from ximgctx.serve.budget import PixelBudget, image_pixels
from ximgctx.serve.errors import ServiceError

from .._inference_fixtures import model_dir
from .._serve_fixtures import running

pytestmark = pytest.mark.usefixtures("one_thread")
ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdefgh"


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _body(png: bytes) -> dict:
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return {"input": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}]}


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pixels_come_from_the_header_without_decoding():
    big = _png(6000, 6000)
    assert len(big) < 200_000  # one colour: a small file of 36 Mpx
    assert image_pixels(big, ("PNG",)) == 36_000_000
    assert image_pixels(big, ("JPEG",)) == 0  # not an allowed format: the decoder refuses it unread
    assert image_pixels(b"not an image") == 0


def test_a_token_bucket_per_key():
    clock, seen = _Clock(), []
    budget = PixelBudget(
        max_request_pixels=4_000, rate=1_000, burst=10_000, clock=clock, on_charge=lambda *a: seen.append(a)
    )
    budget.charge("a", 4_000)
    budget.charge("a", 4_000)
    with pytest.raises(ServiceError) as e:
        budget.charge("a", 4_000)  # 2,000 left: 2 s until 4,000
    assert (e.value.status, e.value.code, e.value.headers) == (
        429,
        "rate_limit_exceeded",
        {"Retry-After": "2"},
    )
    assert "2000 of its 10000 left" in e.value.message
    budget.charge("b", 4_000)  # another key's bucket is full
    clock.now += 1.0
    with pytest.raises(ServiceError) as e:
        budget.charge("a", 4_000)  # nothing was spent on the refusal: 3,000 left now, 1 s to go
    assert e.value.headers == {"Retry-After": "1"}
    clock.now += 1.0
    budget.charge("a", 4_000)
    clock.now += 1000.0
    budget.charge("a", 4_000)  # refilled to the burst, never beyond it
    budget.charge("a", 4_000)
    with pytest.raises(ServiceError):
        budget.charge("a", 4_000)
    with pytest.raises(InputError, match="4001 pixels in one request, over the server's limit of 4000"):
        budget.charge("c", 4_001)
    assert [s[1] for s in seen].count("admitted") == 6
    assert [s[1] for s in seen].count("over_rate") == 3 and seen[-1] == ("c", "over_request", 4_001)


def test_the_burst_must_hold_one_request_at_the_limit():
    with pytest.raises(ConfigError, match="pixel_burst"):
        ServeConfig(no_auth=True, max_request_pixels=10, pixel_burst=5)
    with pytest.raises(ConfigError, match="pixel_rate"):
        ServeConfig(no_auth=True, pixel_rate=-1)


@pytest.fixture(scope="module")
def server():
    config = ServeConfig(
        api_keys=[f"{ALICE} moderate name=alice", f"{BOB} moderate name=bob"],
        max_request_pixels=4_000_000,
        pixel_burst=5_000_000,
        pixel_rate=100_000,
    )
    with running(create_app(model_dir(), config=config)) as url:
        yield url


def _batches(server: str) -> float:
    text = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {ALICE}"}).text
    m = re.search(r'^ximgctx_batch_posts_count\{batcher="moderations"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_over_budget_is_a_429_the_model_never_sees(server):
    image = _png(2000, 2000)  # 4 Mpx
    alice = openai.OpenAI(api_key=ALICE, base_url=f"{server}/v1", max_retries=0, timeout=120)
    first = httpx.post(
        f"{server}/v1/moderations",
        json=_body(image),
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=120,
    )
    assert first.status_code == 200, first.text
    batches = _batches(server)
    with pytest.raises(openai.RateLimitError) as e:  # the official client reads it as a rate limit
        alice.moderations.create(input=_body(image)["input"])
    resp = e.value.response
    assert resp.status_code == 429 and 25 <= int(resp.headers["retry-after"]) <= 40
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "rate_limit_exceeded"
    assert "4000000 pixels" in err["message"]
    assert _batches(server) == batches  # refused before the queue: no model time spent on it
    bob = httpx.post(
        f"{server}/v1/moderations", json=_body(image), headers={"Authorization": f"Bearer {BOB}"}, timeout=120
    )
    assert bob.status_code == 200  # bob's budget is his own
    text = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {ALICE}"}).text
    assert 'ximgctx_decode_pixels_total{key="alice",outcome="admitted"} 4e+06' in text
    assert 'ximgctx_decode_pixels_total{key="alice",outcome="over_rate"} 4e+06' in text
    assert 'ximgctx_decode_pixels_total{key="bob",outcome="admitted"} 4e+06' in text
    assert 'ximgctx_decode_budget_pixels{key="alice"}' in text


def test_one_request_over_the_pixel_limit_is_a_400(server):
    resp = httpx.post(
        f"{server}/v1/moderations",
        json=_body(_png(2001, 2000)),
        headers={"Authorization": f"Bearer {BOB}"},
        timeout=120,
    )
    assert resp.status_code == 400
    assert (
        "4002000 pixels in one request, over the server's limit of 4000000" in resp.json()["error"]["message"]
    )


# ------------------------------------------------------------------------------------ large images
def _busy_png(width: int, height: int) -> bytes:
    """A PNG with detail (a resize that skipped a step would change its pixels)."""
    import numpy as np

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 50, width // 50, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_large_images_are_decoded_off_the_model_thread_with_the_same_pixels():
    import asyncio

    import torch

    from ximgctx.data.record import Post

    app = create_app(model_dir(), config=ServeConfig(no_auth=True, large_image_pixels=1_000_000))
    service = app.state.service
    processor = service.predictor.model.processor
    large, small = _busy_png(2500, 2000), _busy_png(500, 400)
    truncated = large[: len(large) // 3]
    posts = [Post(id=str(i), image=x) for i, x in enumerate((large, small, truncated))]
    try:
        prepared = asyncio.run(service.large_images.prepare(posts))
    finally:
        service.large_images.shutdown()
    assert posts[0].image is large  # the request's post keeps its bytes (queue, store); the model gets a copy
    posts = prepared
    assert isinstance(posts[0].image, Image.Image)
    assert min(posts[0].image.size) == processor.image_size  # resized by the transform's own first step
    assert posts[1].image is small  # under the threshold: decoded in the batch, as before
    assert posts[2].image is truncated  # not decodable: the processor reports it, as for any image
    lane = processor(posts)
    direct = processor([Post(id=str(i), image=x) for i, x in enumerate((large, small, truncated))])
    assert torch.equal(lane.pixels, direct.pixels) and lane.image_mask.tolist() == [True, True, False]
    assert [p.kind for p in lane.problems[2]] == [p.kind for p in direct.problems[2]] == ["truncated"]
