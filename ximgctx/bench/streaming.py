"""Streaming a large manifest: memory must not grow with its size.

Writes manifests of several sizes (default 20,000, 100,000 and 200,000 posts; JSONL files and folders of
Parquet shards of 20,000 posts) into a temporary folder, then reads each end to end with ``load_posts(...,
streaming=True)`` in a fresh Python process, so that each figure starts from the same imports and nothing
from writing or from an earlier read is counted. The child reports its resident memory (``/proc/self/status``
VmRSS after the imports, VmHWM = peak) and samples VmRSS every 10% of the read. The headline figure is the
peak growth between the smallest and the largest manifest: constant-memory streaming keeps it small and
flat once a manifest is larger than the loader's read chunk (``datasets`` reads JSONL in 10 MiB chunks,
so a 20k-post file, ~7 MiB, is read in one smaller chunk), while holding the posts would cost hundreds
of MiB.

    ximgctx bench streaming --out runs/bench_streaming.json [--sizes 20000,100000,200000]
        [--formats jsonl,parquet]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from ximgctx.data.record import Post, Reply

_WORDS = [
    "monday",
    "cat",
    "crowd",
    "protest",
    "sign",
    "rain",
    "coffee",
    "train",
    "city",
    "night",
    "friends",
    "game",
    "music",
    "joke",
    "meme",
    "photo",
    "weekend",
    "street",
    "beach",
    "dog",
    "lol",
    "same",
    "wow",
    "sure",
    "great",
    "ok",
    "nope",
]
_SHARD = 20_000  # posts per Parquet shard


def make_post(i: int) -> Post:
    """A deterministic, realistically sized post (~400 bytes of JSON)."""
    w = _WORDS
    text = " ".join(w[(i * k + 3) % len(w)] for k in range(1, 13))
    replies = [
        Reply(text=" ".join(w[(i + j * k) % len(w)] for k in range(5)), author=f"u{(i * 7 + j) % 5000}")
        for j in range(i % 4)
    ]
    return Post(
        id=f"p{i}",
        image=f"images/p{i % 1000}.png",
        text=text,
        replies=replies,
        labels={"intent": ["joke"] if i % 2 else ["protest", "meme"], "meaning": "literal"},
        meta={"visibility": "public", "opt_out": False, "author": f"u{i % 5000}", "lang": "en"},
    )


def write_jsonl(path: Path, n: int) -> None:
    from ximgctx.data.io import write_posts

    write_posts((make_post(i) for i in range(n)), path)


def write_parquet_shards(folder: Path, n: int, *, shard: int = _SHARD) -> None:
    from ximgctx.adapters._common import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    for s, start in enumerate(range(0, n, shard)):
        stop = min(n, start + shard)
        write_manifest((make_post(i) for i in range(start, stop)), folder / f"shard-{s:05d}.parquet")


def _proc_status() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024  # kB -> bytes
    return out


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_in_process(path: str | Path, expected: int | str) -> dict[str, Any]:
    """Read ``path`` streaming in this process and return memory and speed figures.

    The peak is this read's own when the kernel lets us reset VmHWM (``peak_is_per_read``); otherwise it
    is the process's peak so far, which is why :func:`measure` runs each read in a fresh process.
    """
    expected = int(expected)  # from the command line of a fresh process (in_fresh_process)
    import gc

    import datasets

    from ximgctx.data.io import load_posts

    datasets.disable_progress_bars()
    for i, _ in enumerate(load_posts(path, streaming=True)):  # warm-up: the loader's lazy imports
        if i >= 10:
            break
    gc.collect()
    per_read = _reset_peak()
    base = _proc_status()
    t0 = time.perf_counter()
    n = 0
    samples: list[tuple[int, int]] = []
    step = max(1, expected // 10)
    for post in load_posts(path, streaming=True):
        n += 1
        if post.id != f"p{n - 1}":  # order and content survive the round trip
            raise AssertionError(f"post {n} has id {post.id!r}")
        if n % step == 0:
            samples.append((n, _proc_status()["VmRSS"]))
    seconds = time.perf_counter() - t0
    end = _proc_status()
    mib = 1024 * 1024
    return {
        "posts": n,
        "seconds": round(seconds, 3),
        "posts_per_s": round(n / seconds) if seconds else None,
        "rss_before_read_mib": round(base["VmRSS"] / mib, 1),
        "peak_rss_mib": round(end["VmHWM"] / mib, 1),
        "rss_at_end_mib": round(end["VmRSS"] / mib, 1),
        "peak_growth_during_read_mib": round((end["VmHWM"] - base["VmRSS"]) / mib, 1),
        "peak_is_per_read": per_read,
        "rss_samples_mib": [[k, round(v / mib, 1)] for k, v in samples],
    }


def measure(path: Path, expected: int) -> dict[str, Any]:
    """Read ``path`` in a fresh interpreter (after the same imports) and return its figures."""
    from ximgctx.bench import in_fresh_process

    result = in_fresh_process("ximgctx.bench.streaming:measure_in_process", path, expected)
    if result["posts"] != expected:
        raise AssertionError(f"{path}: read {result['posts']} posts, wrote {expected}")
    return result


def compare(
    sizes: list[int], formats: list[str], workdir: Path, *, fresh_process: bool = True
) -> dict[str, Any]:
    """Write and read every (format, size); the growth figures compare the smallest and largest size.

    ``fresh_process=False`` reads in this process (a test's cheap mode: no second interpreter start),
    which needs a resettable peak (``/proc/self/clear_refs``) to mean anything.
    """
    out: dict[str, Any] = {
        "sizes": sizes,
        "formats": formats,
        "runs": {},
        "growth": {},
        "fresh_process": fresh_process,
    }
    for fmt in formats:
        runs = {}
        for n in sizes:
            target = workdir / (f"posts_{n}.jsonl" if fmt == "jsonl" else f"parquet_{n}")
            t0 = time.perf_counter()
            (write_jsonl if fmt == "jsonl" else write_parquet_shards)(target, n)
            written = time.perf_counter() - t0
            r = measure(target, n) if fresh_process else measure_in_process(target, n)
            r["write_seconds"] = round(written, 3)
            r["bytes"] = (
                target.stat().st_size if target.is_file() else sum(p.stat().st_size for p in target.iterdir())
            )
            runs[str(n)] = r
        out["runs"][fmt] = runs
        small, large = runs[str(min(sizes))], runs[str(max(sizes))]
        growth = {
            "peak_growth_during_read_mib_by_size": {
                n: r["peak_growth_during_read_mib"] for n, r in runs.items()
            },
            "posts_ratio": max(sizes) / min(sizes),
            "bytes_ratio": round(large["bytes"] / small["bytes"], 2),
            # the headline: how much more memory reading the largest manifest took than the smallest
            "peak_growth_during_read_delta_mib": round(
                large["peak_growth_during_read_mib"] - small["peak_growth_during_read_mib"], 1
            ),
        }
        if fresh_process:  # whole-process peaks are comparable only between equal fresh processes
            growth["peak_rss_delta_mib"] = round(large["peak_rss_mib"] - small["peak_rss_mib"], 1)
        out["growth"][fmt] = growth
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(int(s) for s in str(args.sizes).split(",") if s.strip())
    formats = [f.strip() for f in str(args.formats).split(",") if f.strip()]
    for f in formats:
        if f not in ("jsonl", "parquet"):
            raise SystemExit(f"--formats: unknown format {f!r}; use jsonl and/or parquet")
    if len(sizes) < 2:
        raise SystemExit("--sizes: give at least two sizes to compare")
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        return compare(sizes, formats, Path(args.workdir))
    with tempfile.TemporaryDirectory(prefix="ximgctx-bench-streaming-") as d:
        return compare(sizes, formats, Path(d))
