"""The text cache: row-exact text embeddings, reuse that changes no score, memory bounds, keys by model; the
service's batching fast path."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from ximgctx.config import EncoderConfig
from ximgctx.inference import Predictor
from ximgctx.inference.reply_cache import ENTRY_OVERHEAD_BYTES, TextCache
from ximgctx.models.open_clip_encoder import ClipEncoder
from ximgctx.serve.batching import Batcher

from .._inference_fixtures import make_posts, tiny_model

WORDS = ["monday", "cat", "crowd", "protest", "sign", "rain", "coffee", "train", "city", "lol", "same"]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 30)))) for _ in range(n)]


def test_rowwise_text_embeddings_do_not_depend_on_batch_mates() -> None:
    torch.manual_seed(0)
    encoder = ClipEncoder(EncoderConfig(arch="ximgctx-tiny")).eval()
    tokens = encoder.tokenizer(_texts(40, 0))
    rng = np.random.default_rng(1)
    with torch.inference_mode():
        reference = encoder.encode_text_rowwise(tokens)
        np.testing.assert_allclose(reference, encoder.encode_text(tokens), rtol=0, atol=1e-5)
        for trial in range(8):
            rows = rng.choice(len(tokens), size=int(rng.integers(1, len(tokens))), replace=False)
            part = tokens[torch.as_tensor(rows)]
            if trial % 2:  # trimmed to the subset's longest row, as the processor hands it over
                part = part[:, : int((part != 0).sum(1).max())]
            out = encoder.encode_text_rowwise(part)
            for k, i in enumerate(rows):
                assert torch.equal(out[k], reference[i]), (trial, int(i))


def _batches(posts: list, sizes: list[int]) -> list[list]:
    out, start = [], 0
    for size in sizes:
        out.append(posts[start : start + size])
        start += size
    return out


def test_cache_changes_no_score_across_batch_orders_and_sizes() -> None:
    model = tiny_model(0)
    posts = make_posts(30, seed=3)
    cache = TextCache()
    cached = Predictor(model, device="cpu", text_cache=cache)
    exact = Predictor(model, device="cpu", text_cache=TextCache(max_entries=0))
    plain = Predictor(model, device="cpu", text_cache=False)
    plans = [_batches(posts, [7, 5, 9, 9]), _batches(posts[::-1], [1, 12, 17]), _batches(posts, [30])]
    for plan in plans:
        for chunk in plan:
            with_cache, without = cached.run_batch(chunk), exact.run_batch(chunk)
            for task in with_cache.scores:
                assert torch.equal(with_cache.scores[task], without.scores[task])
            assert torch.equal(with_cache.output.fused, without.output.fused)
            # the grouped path without row-exact calls agrees up to float rounding
            grouped = plain.run_batch(chunk).scores
            for task in grouped:
                np.testing.assert_allclose(with_cache.scores[task], grouped[task], rtol=0, atol=1e-5)
    info = cache.info()
    assert info["hits"] > 0 and info["hit_rate"] > 0.5  # the second and third passes reuse everything

    assert len(exact.text_cache or []) == 0


def test_cache_stays_within_entries_and_bytes() -> None:
    model = tiny_model(0)
    encoder = model.encoder
    tokens = encoder.tokenizer(_texts(60, 5))
    dim = encoder.embed_dim
    per_entry_min = dim * 4 + ENTRY_OVERHEAD_BYTES
    by_entries = TextCache(max_entries=7, max_bytes=1 << 30)
    by_bytes = TextCache(max_entries=1000, max_bytes=5 * per_entry_min + 50)
    with torch.inference_mode():
        reference = encoder.encode_text_rowwise(tokens)
        for cache in (by_entries, by_bytes):
            for start in range(0, 60, 9):
                out = cache.encode(encoder, tokens[start : start + 9])
                assert torch.equal(out, reference[start : start + 9])
                assert len(cache) <= cache.max_entries
                assert cache.nbytes <= cache.max_bytes
                counted = sum(
                    v.numel() * v.element_size() + len(k[1]) + ENTRY_OVERHEAD_BYTES
                    for k, v in cache._entries.items()
                )
                assert cache.nbytes == counted
    assert len(by_entries) == 7 and by_entries.stats.evicted == by_entries.stats.encoded - 7
    assert 1 <= len(by_bytes) <= 5
    nothing = TextCache(max_entries=5, max_bytes=10)  # smaller than one entry: keeps none, still exact
    with torch.inference_mode():
        assert torch.equal(nothing.encode(encoder, tokens[:4]), reference[:4])
    assert len(nothing) == 0 and nothing.nbytes == 0
    with pytest.raises(Exception, match="bounds"):
        TextCache(max_entries=-1)


def test_cache_is_keyed_by_model_and_weights() -> None:
    first, second = tiny_model(0), tiny_model(1)
    posts = make_posts(12, seed=4)
    shared = TextCache()
    a = Predictor(first, device="cpu", text_cache=shared)
    b = Predictor(second, device="cpu", text_cache=shared)
    a.run_batch(posts)
    entries = len(shared)
    got = b.run_batch(posts).scores
    want = Predictor(second, device="cpu", text_cache=TextCache(max_entries=0)).run_batch(posts).scores
    for task in want:
        assert torch.equal(got[task], want[task])
    assert len(shared) == 2 * entries  # the second model reused none of the first one's entries
    # weights changed in place (a training step, load_state_dict): the old entries are not read
    with torch.no_grad():
        for p in first.encoder.parameters():
            p.mul_(1.01)
    hits = shared.stats.hits
    after = a.run_batch(posts).scores
    assert shared.stats.hits == hits
    fresh = Predictor(first, device="cpu", text_cache=TextCache(max_entries=0)).run_batch(posts).scores
    for task in fresh:
        assert torch.equal(after[task], fresh[task])


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


def test_batcher_runs_a_lone_request_at_once_and_still_batches_concurrent_ones() -> None:
    """A lone request does not wait ``max_wait_ms`` (here a minute: the test would time out); requests
    arriving while the model is busy are still coalesced, and every request gets its own results."""
    release = threading.Event()
    sizes: list[int] = []

    def fn(items: list[int]) -> list[int]:
        if items[0] == 0:
            release.wait(60)  # hold the model while the next requests queue up
        return [x * 10 for x in items]

    async def main() -> list[list[int]]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            batcher = Batcher(
                "t",
                fn,
                pool,
                max_batch_size=16,
                max_wait_ms=60_000,
                max_queue=100,
                on_batch=lambda _, n: sizes.append(n),
            )
            batcher.start()
            first = asyncio.ensure_future(batcher.submit([0]))
            while not sizes:  # the lone request was dispatched without waiting
                await asyncio.sleep(0.001)
            rest = [asyncio.ensure_future(batcher.submit([i, i + 1])) for i in (1, 3, 5)]
            await asyncio.sleep(0.05)
            release.set()
            out = [await first] + [await r for r in rest]
            await batcher.stop()
            return out

    out = _run(main())
    assert out == [[0], [10, 20], [30, 40], [50, 60]]
    assert sizes[:2] == [1, 6]  # the lone one at once; the three queued meanwhile in one batch
