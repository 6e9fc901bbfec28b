"""Is the data pipeline the bottleneck? Posts/s it delivers from shards vs the model's training-step rate.

Generates one shard folder of small-image posts in a temporary folder (the largest ``--rss-sizes``), then:

* **pipeline**: read shards + decode images + tokenize + collate (the model's processor), through a
  ``DataLoader`` with 0, 1 and 2 workers (each worker its own shards), posts/s after the first batch;
* **step**: the model's LoRA training step (forward, masked task losses, backward, AdamW) on batches the
  pipeline made, posts/s; the ratio pipeline / step per worker count (>= 1: the pipeline keeps up);
* **memory**: peak RSS growth while streaming the first 20k, 200k and 1M posts of those shards, each in a
fresh
  Python process after the same imports (flat: the reader holds one record, not the data set).

On one machine the workers and the training step share the same cores, so with 2 cores a 2-worker pipeline
and the step cannot both run at full speed at once: the figures are each measured alone, side by side.

With ``--device cuda`` the step is timed on the GPU (bf16 autocast) while the pipeline stays on the CPU cores:
the question that matters on a training machine, where the workers must feed an accelerator.

    ximgctx bench dataloader --arch ViT-B-32 --out runs/bench_dataloader.json [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ximgctx.data.record import Post

_MIB = 1024 * 1024


def _image_pool(px: int, n: int = 64) -> list[bytes]:
    from PIL import Image, ImageDraw

    pool = []
    for i in range(n):
        im = Image.new("RGB", (px, px), (i * 37 % 256, i * 91 % 256, i * 13 % 256))
        ImageDraw.Draw(im).rectangle([i % px // 2, 2, px - 3, px // 2 + i % 5], fill=(250, 250, 250))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        pool.append(buf.getvalue())
    return pool


def generate(folder: Path, n: int, *, posts_per_shard: int, image_px: int, fmt: str = "parquet") -> float:
    """Write ``n`` deterministic posts (bench.streaming's texts, small PNGs) as shards; returns seconds."""
    from ximgctx.bench.streaming import make_post
    from ximgctx.data.shard_write import write_shards

    pool = _image_pool(image_px)

    def posts() -> Iterator[Post]:
        for i in range(n):
            p = make_post(i)
            p.image = pool[i % len(pool)]
            yield p

    if _already(folder, n, fmt, posts_per_shard):  # a --workdir from an earlier run: reuse its shards
        return 0.0
    t0 = time.perf_counter()
    write_shards(posts(), folder, format=fmt, posts_per_shard=posts_per_shard, overwrite=True)
    return time.perf_counter() - t0


def _already(folder: Path, n: int, fmt: str, posts_per_shard: int) -> bool:
    from ximgctx.data.shards import list_shards
    from ximgctx.errors import XimgctxError

    try:
        shards = list_shards(folder)
    except (XimgctxError, OSError):
        return False
    counts = [s.count for s in shards]
    return sum(counts) == n and {s.format for s in shards} == {fmt} and max(counts) == posts_per_shard


def _stream_class() -> type:
    from torch.utils.data import IterableDataset, get_worker_info

    from ximgctx.data.shards import read_shard

    class ShardStream(IterableDataset):
        """Posts of the given shards; DataLoader worker w of W reads shards w, w+W, ... (a minimal split)."""

        def __init__(self, shards: list[Any]) -> None:
            self.shards = shards

        def __iter__(self) -> Iterator[Post]:
            info = get_worker_info()
            w, n = (info.id, info.num_workers) if info is not None else (0, 1)
            for i, shard in enumerate(self.shards):
                if i % n == w:
                    for _, item in read_shard(shard, verify=False):
                        if isinstance(item, Post):
                            yield item

    return ShardStream


def _model(arch: str) -> Any:
    from dataclasses import replace

    from ximgctx import ContextModel
    from ximgctx.quickstart import _default_model

    config = _default_model()
    config = replace(config, encoder=replace(config.encoder, arch=arch, pretrained=None))
    return ContextModel(config)


def stage_rates(model: Any, shards: list[Any], posts: int) -> dict[str, Any]:
    """Where a worker's time goes: posts/s of each stage alone, in one process, over the same ``posts``."""
    from PIL import Image

    from ximgctx.data.images import from_pil, load_image
    from ximgctx.data.shards import read_shard

    proc = model.processor
    t0 = time.perf_counter()
    stream = (p for shard in shards for _, p in read_shard(shard, verify=False) if isinstance(p, Post))
    got = list(itertools.islice(stream, posts))
    timings = {"read": time.perf_counter() - t0}
    t0 = time.perf_counter()
    images = [
        from_pil(p.image, proc.limits)
        if isinstance(p.image, Image.Image)
        else load_image(p.image, proc.limits)
        for p in got
        if p.image is not None
    ]
    timings["decode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for im in images:
        proc.image_transform(im)
    timings["resize_normalize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in got:
        proc.tokenize([p.text, *(r.text for r in p.replies)])
    timings["tokenize"] = time.perf_counter() - t0
    total = sum(timings.values())
    return {
        "posts": len(got),
        "posts_per_s": {k: round(len(got) / v, 1) if v > 0 else None for k, v in timings.items()},
        "share_of_time": {k: round(v / total, 3) for k, v in timings.items()} if total > 0 else {},
    }


def pipeline_rate(model: Any, shards: list[Any], workers: int, batch_size: int, posts: int) -> dict[str, Any]:
    """Posts/s of read + decode + tokenize + collate with ``workers`` DataLoader workers (first batch
    excluded)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _stream_class()(shards),
        batch_size=batch_size,
        collate_fn=model.processor,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    t_start = time.perf_counter()
    first, n, t0 = None, 0, 0.0
    problems = 0
    for batch in loader:
        if first is None:
            first, t0 = time.perf_counter() - t_start, time.perf_counter()
            continue
        n += len(batch.ids)
        problems += sum(1 for p in batch.problems if p)
        if n >= posts:
            break
    seconds = time.perf_counter() - t0
    del loader  # stops the workers
    return {
        "workers": workers,
        "posts": n,
        "seconds": round(seconds, 3),
        "posts_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "first_batch_s": round(first or 0.0, 3),
        "posts_with_problems": problems,
    }


def step_rate(
    model: Any, shards: list[Any], batch_size: int, steps: int, device: str = "cpu"
) -> dict[str, Any]:
    """Posts/s of the training step alone (batches made beforehand, on ``device``), after one warm-up step.

    On CUDA the step runs under bf16 autocast, as training does there, and is timed to a synchronize.
    """
    import contextlib

    import torch
    from torch.utils.data import DataLoader

    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    )
    loader = DataLoader(_stream_class()(shards), batch_size=batch_size, collate_fn=model.processor)
    batches = []
    for b in loader:
        batches.append(b.to(dev))
        if len(batches) >= min(steps + 1, 4):
            break
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    cuda = dev.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def step(batch: Any) -> None:
        with autocast:
            loss = model.loss(model(batch), batch).total
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up: allocations, lazy inits
    if cuda:
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[(i + 1) % len(batches)])
    if cuda:
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    n = steps * batch_size
    return {
        "steps": steps,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / steps, 4),
        "posts_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "device": str(dev),
        "trainable_parameters": sum(p.numel() for p in params),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def stream_rss_in_process(folder: str | Path, n: int | str) -> dict[str, Any]:
    """Stream the first ``n`` posts of a shard folder in this process; RSS before, peak growth, posts/s."""
    n = int(n)  # from the command line of a fresh process (in_fresh_process)
    import gc

    from ximgctx.bench.streaming import _proc_status, _reset_peak
    from ximgctx.data.shards import list_shards, read_shards

    shards = list_shards(folder)
    for _ in zip(range(10), read_shards(shards[:1], verify=False), strict=False):  # warm-up: lazy imports
        pass
    gc.collect()
    per_read = _reset_peak()
    base = _proc_status()
    t0 = time.perf_counter()
    seen = 0
    for _, _, item in read_shards(shards, verify=False):
        if not isinstance(item, Post):
            raise AssertionError(f"bench shards hold a bad record: {item}")
        seen += 1
        if seen >= n:
            break
    seconds = time.perf_counter() - t0
    end = _proc_status()
    return {
        "posts": seen,
        "seconds": round(seconds, 3),
        "posts_per_s": round(seen / seconds) if seconds else None,
        "rss_before_mib": round(base["VmRSS"] / _MIB, 1),
        "peak_rss_mib": round(end["VmHWM"] / _MIB, 1),
        "peak_growth_mib": round((end["VmHWM"] - base["VmRSS"]) / _MIB, 1),
        "peak_is_per_read": per_read,
    }


def stream_rss(folder: Path, n: int) -> dict[str, Any]:
    """:func:`stream_rss_in_process` in a fresh interpreter, so every size starts from the same imports."""
    from ximgctx.bench import in_fresh_process

    return in_fresh_process("ximgctx.bench.dataloader:stream_rss_in_process", folder, n)


def _sizes(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    if args.quick:
        args.n, args.steps, args.batch_size, args.posts_per_shard = 64, 2, 16, 500
        args.rss_sizes = "1000,2000"
    rss = sorted(int(s) for s in str(args.rss_sizes).split(",") if s.strip())
    workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if len(rss) < 2 or min(rss) < 1 or not workers or min(workers) < 0:
        raise SystemExit("--rss-sizes needs two or more positive sizes, --workers one or more counts >= 0")
    return rss, workers


def compare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch

    from ximgctx.data.shards import list_shards
    from ximgctx.quickstart import ARCH

    rss_sizes, workers = _sizes(args)
    arch = args.arch or ARCH
    folder = workdir / "shards"
    write_s = generate(
        folder,
        max(rss_sizes),
        posts_per_shard=args.posts_per_shard,
        image_px=args.image_px,
        fmt=args.shard_format,
    )
    shards = list_shards(folder)
    model = _model(arch)
    # enough shards that every worker has its own and none runs dry before `posts` are timed
    need = math.ceil((args.n + args.batch_size) * 2 / args.posts_per_shard) + max(workers)
    timed = shards[: max(need, 1)]
    pipeline = [pipeline_rate(model, timed, w, args.batch_size, args.n) for w in workers]
    stages = stage_rates(model, timed, args.n)
    step = step_rate(model, timed, args.batch_size, args.steps, args.device)
    memory = {str(n): stream_rss(folder, n) for n in rss_sizes}
    small, large = memory[str(rss_sizes[0])], memory[str(rss_sizes[-1])]
    best = max(p["posts_per_s"] or 0.0 for p in pipeline)
    return {
        "arch": arch,
        "image_size": model.processor.image_size,
        "format": args.shard_format,
        "quick": bool(args.quick),
        "torch_threads": torch.get_num_threads(),
        "generated": {
            "posts": max(rss_sizes),
            "shards": len(shards),
            "seconds": round(write_s, 2),
            "image_px": args.image_px,
        },
        "pipeline": pipeline,
        "stages": stages,
        "step": step,
        "ratio_pipeline_to_step": {
            str(p["workers"]): round((p["posts_per_s"] or 0) / step["posts_per_s"], 2) for p in pipeline
        },
        "bottleneck": "data pipeline" if best < (step["posts_per_s"] or 0) else "model step",
        "memory": memory,
        "memory_growth": {
            "posts_ratio": rss_sizes[-1] / rss_sizes[0],
            "peak_rss_ratio": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
            "peak_growth_delta_mib": round(large["peak_growth_mib"] - small["peak_growth_mib"], 1),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        return compare(args, Path(args.workdir))
    with tempfile.TemporaryDirectory(prefix="ximgctx-bench-dataloader-") as d:
        return compare(args, Path(d))
