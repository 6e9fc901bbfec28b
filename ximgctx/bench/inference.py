"""Inference speed: posts per second for bare open_clip, the context model run naively, and as shipped.

The same posts (JPEG files on disk, a post text of 6-24 words, ``--replies`` replies each) go through three
paths, end to end from the files. Replies follow a realistic mix: 35% stock reactions repeated across posts
("lol", "this", "same", "😂😂😂"...), 57% fresh short replies of 3-12 words, 8% (``--long-replies``) long ones
of 15-35 words.

1. ``bare_open_clip``: what a plain open_clip user runs: ``preprocess(Image.open(f).convert("RGB"))``,
   ``tokenizer(texts)`` at open_clip's fixed 77 tokens, ``encode_image`` + ``encode_text``. No replies.
2. ``naive_context``: the full context model with the two savings switched off: the post text and every
   reply copy are tokenized at 77 tokens and encoded untrimmed (``encode_text(trim=False)``), and identical
   replies are encoded once per copy (no dedupe). Otherwise the real model forward (``model(batch)``).
3. ``shipped``: :class:`ximgctx.Predictor` ``.predict(posts)``: safe decode, trimmed tokens, deduplicated
   replies, per-label scores and thresholded labels, and text-tower outputs reused across batches (its
   :class:`~ximgctx.inference.reply_cache.TextCache`, emptied at the start of every round so that a round
   never reuses what an earlier pass over the same posts computed: only repeats within the round hit).
4. ``shipped_no_cache``: the same predictor without the cache (texts grouped by length per batch).

The JSON reports the cache's hit rate and bytes, the share of reply copies whose text appeared earlier in
the posts (``reply_repeat_rate``), and checks that the cache changes no score: bit-identical to the
row-exact path without reuse (``TextCache(max_entries=0)``).

All three use the same weights (random init unless ``--pretrained``; timing does not depend on them) and
the same autocast dtype. After one warm-up batch per path, each round sends every batch through the three
paths back to back, in an order rotating with batch and round, so load from other processes on a shared
machine lands on all paths alike. The headline is the median round; beside it are the "fastest" figures
(each batch's fastest of the rounds, summed: the least disturbed runs, as ``timeit`` reports) and the
process CPU seconds per post. The JSON also checks that the naive and shipped paths compute the same scores
(the savings must not change results), and splits the shipped path into collate and model time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

#: Stock reactions, repeated across posts (the duplicates that deduplication encodes once), most common first.
_STOCK = (
    ["lol"] * 8
    + ["this"] * 4
    + ["same"] * 4
    + ["😂😂😂"] * 3
    + ["fr"] * 2
    + ["ratio", "real", "mood", "💀", "so true", "facts", "no way", "lmao", "W", "big if true"]
)
_VOCABULARY = """monday cat crowd protest sign rain coffee train city night friends game music joke meme photo
saturday march police storm sun heart star downtown everyone bring water banner tomorrow noon when the weekend
finally hits after a long week of work i you we they this that is was are not so very really just like love
hate think know see going to be at on in with for about why how who what where look face alarm boss again
never always people today yesterday news video post thread account reply read said wait stop please thanks
honestly literally actually funny sad angry scary safe careful there here now later"""
_WORDS = tuple(_VOCABULARY.split())

#: Reply mix: a stock reaction with probability ``_P_STOCK``; otherwise a fresh reply of 3-12 words, or of
#: 15-35 words with probability ``--long-replies`` (default 0.08: every batch then holds a few long replies,
#: as real threads do, and trimming pads the batch's distinct replies to the longest of them).
_P_STOCK = 0.35


def _reply(rng: np.random.Generator, p_long: float) -> str:
    u = rng.random()
    if u < _P_STOCK:
        return str(rng.choice(_STOCK))
    n = int(rng.integers(15, 36)) if u > 1 - p_long else int(rng.integers(3, 13))
    return " ".join(rng.choice(_WORDS, size=n))


def _make_posts(
    folder: Path, n: int, replies: int, image_size: int, seed: int, p_long: float = 0.08
) -> list[Any]:
    from PIL import Image, ImageDraw, ImageFilter

    from ximgctx.data.record import Post, Reply

    rng = np.random.default_rng(seed)
    posts = []
    for i in range(n):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # smooth colour field, JPEG-realistic
        im = Image.fromarray(base).resize((image_size, image_size * 3 // 4), Image.Resampling.BICUBIC)
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = (int(v) for v in rng.integers(0, image_size // 2, 2))
            d.ellipse(
                [
                    x,
                    y,
                    x + int(rng.integers(20, image_size // 3)),
                    y + int(rng.integers(20, image_size // 3)),
                ],
                fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
            )
        d.text((20, 20), "WHEN MONDAY HITS", fill=(255, 255, 255))
        im = im.filter(ImageFilter.GaussianBlur(1))
        path = folder / f"{i:05d}.jpg"
        im.save(path, quality=88)
        text = " ".join(rng.choice(_WORDS, size=int(rng.integers(6, 25))))
        posts.append(
            Post(
                id=f"b{i:05d}",
                image=str(path),
                text=text,
                replies=[Reply(_reply(rng, p_long)) for _ in range(replies)],
            )
        )
    return posts


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@contextlib.contextmanager
def _untrimmed(encoder: Any) -> Iterator[None]:
    """Make ``encoder.encode_text`` run on the full padded length (the naive path), then restore it."""
    original = encoder.encode_text

    def encode_text(tokens: Any, trim: bool = False) -> Any:
        return original(tokens, trim=False)

    encoder.encode_text = encode_text  # an instance attribute shadows the method
    try:
        yield
    finally:
        del encoder.encode_text


@dataclass
class _Setup:
    """The model under test and what the three paths share."""

    model: Any
    predictor: Any
    tasks: list[Any]
    tokenizer: Any
    device: Any
    dtype: Any


def _setup(args: argparse.Namespace) -> _Setup:
    import open_clip
    import torch

    from ximgctx.config import EncoderConfig, FusionConfig, ModelConfig, TaskSpec
    from ximgctx.inference.predictor import Predictor, resolve_device, resolve_dtype
    from ximgctx.models.context_model import ContextModel

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tasks = [
        TaskSpec("meaning", ["literal", "ironic", "symbolic"], kind="multiclass"),
        TaskSpec("intent", ["joke", "protest", "threat", "meme"], kind="multilabel"),
    ]
    torch.manual_seed(args.seed)
    config = ModelConfig(
        tasks=tasks,
        encoder=EncoderConfig(arch=args.arch, pretrained=args.pretrained),
        fusion=FusionConfig(kind=args.fusion),
    )
    config.limits.max_replies = max(config.limits.max_replies, args.replies)
    model = ContextModel(config)
    from ximgctx.inference.reply_cache import TextCache

    predictor = Predictor(
        model, device=device, dtype=dtype, batch_size=args.batch_size, text_cache=TextCache()
    )
    return _Setup(model, predictor, tasks, open_clip.get_tokenizer(args.arch), device, dtype)


def _paths(su: _Setup, batch_size: int, naive_scores: list[np.ndarray]) -> dict[str, Callable[..., Any]]:
    """The three timed paths: bare open_clip, the context model run naively (a 77-token copy per reply,
    no trimming), and the context model as shipped. ``naive(posts, keep=True)`` keeps its scores."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from ximgctx.data.text import cap_text
    from ximgctx.inference.predictor import Predictor

    model, predictor, config = su.model, su.predictor, su.model.config
    clip, preprocess = model.encoder.clip, model.processor.image_transform  # open_clip's eval transform

    def bare(posts: list[Any]) -> None:
        for chunk in _chunks(posts, batch_size):
            images = []
            for p in chunk:
                with Image.open(p.image) as im:
                    images.append(preprocess(im.convert("RGB")))
            pixels = torch.stack(images).to(su.device)  # (B, 3, S, S)
            tokens = su.tokenizer([p.text for p in chunk]).to(su.device)  # (B, 77)
            with torch.inference_mode(), predictor.autocast():
                F.normalize(clip.encode_image(pixels), dim=-1)
                F.normalize(clip.encode_text(tokens), dim=-1)

    def naive_batch(chunk: list[Any]) -> Any:
        batch = model.processor(chunk)  # images decoded exactly as shipped
        texts = [cap_text(p.text, config.limits.max_text_chars) for p in chunk]
        copies: list[str] = []
        index = torch.zeros_like(batch.reply_index)
        for i, p in enumerate(chunk):
            for j in range(batch.reply_mask.shape[1]):
                if bool(batch.reply_mask[i, j]):
                    index[i, j] = len(copies)
                    copies.append(cap_text(p.replies[j].text, config.limits.max_reply_chars))
        tokens = su.tokenizer(texts)
        return replace(batch, text_tokens=tokens, reply_tokens=su.tokenizer(copies), reply_index=index)

    plain = Predictor(model, device=su.device, dtype=su.dtype, batch_size=batch_size, text_cache=False)

    def naive(posts: list[Any], keep: bool = False) -> None:
        with _untrimmed(model.encoder):  # no text cache: every copy through the untrimmed encode_text
            for chunk in _chunks(posts, batch_size):
                s = plain.scores(plain.forward(naive_batch(chunk).to(su.device)))
                if keep:
                    naive_scores.append(np.concatenate([s[t.name].cpu().numpy() for t in su.tasks], axis=1))

    def shipped(posts: list[Any]) -> list[Any]:
        return predictor.predict(posts)

    def shipped_no_cache(posts: list[Any]) -> list[Any]:
        return plain.predict(posts)

    return {
        "bare_open_clip": bare,
        "naive_context": naive,
        "shipped": shipped,
        "shipped_no_cache": shipped_no_cache,
    }


def _time_interleaved(
    paths: dict[str, Callable[..., Any]],
    batches: list[list[Any]],
    rounds: int,
    sync: Callable[[], None],
    on_round: Callable[[], None] = lambda: None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Wall and process-CPU seconds per (round, batch) of each path. Interleaved per batch: every batch goes
    through the paths back to back, in an order that rotates with the batch and the round, so a burst of load
    from other processes lands on all of them. ``on_round`` runs before each round (untimed)."""
    names = list(paths)
    wall = {name: np.zeros((rounds, len(batches))) for name in names}
    cpu = {name: np.zeros((rounds, len(batches))) for name in names}
    for r in range(rounds):
        on_round()
        for b, chunk in enumerate(batches):
            k = (r + b) % len(names)
            for name in names[k:] + names[:k]:
                start, start_cpu = time.perf_counter(), time.process_time()
                paths[name](chunk)
                sync()
                wall[name][r, b] = time.perf_counter() - start
                cpu[name][r, b] = time.process_time() - start_cpu
    return wall, cpu


def _breakdown(su: _Setup, posts: list[Any], batch_size: int, sync: Callable[[], None]) -> dict[str, Any]:
    """Where the shipped path spends its time (collate vs model) and the text-tower tokens it saves."""
    collate_s, model_s = 0.0, 0.0
    for chunk in _chunks(posts, batch_size):
        start = time.perf_counter()
        batch = su.predictor.collate(chunk)
        collate_s += time.perf_counter() - start
        start = time.perf_counter()
        su.predictor.forward(batch)
        sync()
        model_s += time.perf_counter() - start
    n = len(posts)
    post_tokens = int((su.tokenizer([p.text for p in posts]) != 0).sum())
    reply_copies = [r.text for p in posts for r in p.replies if r.text.strip()]
    batches = [su.model.processor(chunk, invalid_labels="drop") for chunk in _chunks(posts, batch_size)]
    shipped_text = sum(b.text_tokens.numel() + b.reply_tokens.numel() for b in batches)
    unique = sum(b.reply_tokens.shape[0] for b in batches)
    return {
        "shipped_breakdown_seconds": {"collate": round(collate_s, 3), "model": round(model_s, 3)},
        "text_tower_tokens_per_post": {
            "bare_open_clip": 77,
            "naive_context": 77 * (1 + len(reply_copies) / n),
            "shipped": round(shipped_text / n, 1),
            "real_post_text_tokens": round(post_tokens / n, 1),
        },
        "distinct_replies_per_post_in_batch": round(unique / n, 2),
    }


def _figures(wall: dict[str, np.ndarray], cpu: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    seconds = {name: w.sum(axis=1).tolist() for name, w in wall.items()}  # per round, all posts
    cpu_seconds = {name: c.sum(axis=1).tolist() for name, c in cpu.items()}
    pps = {name: n / statistics.median(s) for name, s in seconds.items()}
    best = {name: n / float(w.min(axis=0).sum()) for name, w in wall.items()}  # each batch's fastest run
    bare_pps, bare_cpu = pps["bare_open_clip"], statistics.median(cpu_seconds["bare_open_clip"])
    return {
        "posts_per_second": {k: round(v, 3) for k, v in pps.items()},
        "seconds_per_round": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "cpu_seconds_per_post_median": {
            k: round(statistics.median(v) / n, 3) for k, v in cpu_seconds.items()
        },
        "ratio_to_bare_cpu_time": {
            k: round(bare_cpu / statistics.median(v), 3) for k, v in cpu_seconds.items()
        },
        "ratio_to_bare": {k: round(v / bare_pps, 3) for k, v in pps.items()},
        "posts_per_second_fastest": {k: round(v, 3) for k, v in best.items()},
        "ratio_to_bare_fastest": {k: round(v / best["bare_open_clip"], 3) for k, v in best.items()},
        "target": "shipped >= 1.0 x bare_open_clip posts/s with 8 replies, >= 1.3 x with none (ViT-B-32, "
        "2 CPU cores, median round)",
        "meets_target": pps["shipped"] >= 1.0 * bare_pps,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    su = _setup(args)
    naive_scores: list[np.ndarray] = []
    paths = _paths(su, args.batch_size, naive_scores)

    def sync() -> None:
        if su.device.type == "cuda":
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory(prefix="ximgctx-bench-inference-") as tmp:
        posts = _make_posts(Path(tmp), args.n, args.replies, args.image_size, args.seed, args.long_replies)
        load_before = os.getloadavg()
        for fn in paths.values():  # warm-up: one batch each
            fn(posts[: args.batch_size])
        sync()
        cache = su.predictor.text_cache
        assert cache is not None
        cache.clear()  # nothing from the warm-up
        rounds_info: list[dict[str, Any]] = []

        def on_round() -> None:  # keep the last round's counters, then start empty
            if cache.stats.lookups:
                rounds_info.append(cache.info())
            cache.clear()

        batches = list(_chunks(posts, args.batch_size))
        wall, cpu = _time_interleaved(paths, batches, args.repeats, sync, on_round)
        on_round()
        exact = _cache_exactness(su, batches)
        # Same results with and without the savings (checked once, outside the timed runs).
        paths["naive_context"](posts, keep=True)
        shipped_scores = np.array(
            [
                [s for t in su.tasks for s in p.tasks[t.name].scores.values()]
                for p in su.predictor.predict(posts)
            ]
        )
        max_diff = float(np.abs(np.concatenate(naive_scores) - shipped_scores).max())
        breakdown = _breakdown(su, posts, args.batch_size, sync)
        load_after = os.getloadavg()
    return {
        "arch": args.arch,
        "pretrained": args.pretrained,
        "fusion": args.fusion,
        "device": str(su.device),
        "dtype": str(su.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "posts": args.n,
        "replies_per_post": args.replies,
        "long_reply_share": args.long_replies,
        "batch_size": args.batch_size,
        "rounds": args.repeats,
        **_figures(wall, cpu, args.n),
        **breakdown,
        "naive_vs_shipped_max_abs_score_diff": max_diff,
        "reply_repeat_rate": _repeat_rate(posts),
        "text_cache_per_round": rounds_info,
        "text_cache": exact,
    }


def _repeat_rate(posts: list[Any]) -> float:
    """Share of non-empty reply copies whose text appeared earlier in the posts (what a cache can reuse)."""
    seen: set[str] = set()
    copies = repeats = 0
    for p in posts:
        for r in p.replies:
            if r.text.strip():
                copies += 1
                repeats += r.text in seen
                seen.add(r.text)
    return round(repeats / copies, 4) if copies else 0.0


def _cache_exactness(su: _Setup, batches: list[list[Any]]) -> dict[str, Any]:
    """Scores with a warm cache, over the batches in reverse order, against the row-exact path without
    reuse (``TextCache(max_entries=0)``): must be equal bit for bit."""
    import torch

    from ximgctx.inference.predictor import Predictor
    from ximgctx.inference.reply_cache import TextCache

    cache = TextCache()
    cached = Predictor(su.model, device=su.device, dtype=su.dtype, text_cache=cache)
    bare = Predictor(su.model, device=su.device, dtype=su.dtype, text_cache=TextCache(max_entries=0))
    identical = True
    for chunk in list(batches) + list(reversed(batches)):
        a, b = cached.run_batch(chunk).scores, bare.run_batch(chunk).scores
        identical &= all(torch.equal(a[k], b[k]) for k in a)
    return {"scores_bit_identical_with_and_without_cache": bool(identical), **cache.info()}
