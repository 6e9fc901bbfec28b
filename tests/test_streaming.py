"""Streaming ``load_posts`` holds one record at a time: reading 3x more posts costs no more memory.

A small run of the ``ximgctx bench streaming`` measurement (the benchmark reads 20k vs 200k posts, each
in a fresh process; here 20k vs 60k in this process, with the kernel's peak-RSS counter reset per read).
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from ximgctx.bench.streaming import _reset_peak, compare, make_post, write_parquet_shards
from ximgctx.data.post import load_posts


def _bytes_per_post_held() -> float:
    """What each post costs when held in a list (the thing streaming must not do)."""
    tracemalloc.start()
    held = [make_post(i) for i in range(5000)]
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(held) == 5000
    return size / 5000


def _python_peak_while_streaming(path: Path, expected: int) -> float:
    """Peak Python allocation (MiB) while streaming ``path`` end to end, holding nothing."""
    for i, _ in enumerate(load_posts(path, streaming=True)):  # warm-up: the loader's lazy imports
        if i >= 10:
            break
    gc.collect()
    tracemalloc.start()
    n = 0
    for post in load_posts(path, streaming=True):
        assert post.id == f"p{n}"
        n += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == expected
    return peak / 2**20


def test_streaming_memory_does_not_grow_with_manifest_size(tmp_path: Path) -> None:
    small, large = 2_000, 8_000
    for n in (small, large):
        write_parquet_shards(tmp_path / f"m{n}", n, shard=1_000)
    peak_small = _python_peak_while_streaming(tmp_path / f"m{small}", small)
    peak_large = _python_peak_while_streaming(tmp_path / f"m{large}", large)
    held_mib = (large - small) * _bytes_per_post_held() / 2**20  # what holding the extra posts costs
    print(
        f"streaming peak {peak_small:.1f} MiB ({small} posts) vs {peak_large:.1f} MiB ({large}); "
        f"holding the {large - small} extra posts would take {held_mib:.1f} MiB"
    )
    assert peak_large - peak_small < min(16.0, held_mib / 2)


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or not _reset_peak(),
    reason="needs Linux /proc with a resettable peak RSS",
)
def test_streaming_benchmark_runs_and_reports(tmp_path: Path) -> None:
    result = compare([2_000, 6_000], ["jsonl"], tmp_path, fresh_process=False)
    runs = result["runs"]["jsonl"]
    assert runs["2000"]["posts"] == 2_000 and runs["6000"]["posts"] == 6_000
    growth = result["growth"]["jsonl"]
    assert growth["posts_ratio"] == 3.0 and "peak_growth_during_read_delta_mib" in growth
    assert len(runs["6000"]["rss_samples_mib"]) == 10


def test_streaming_reads_parquet_shards_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    write_parquet_shards(folder, 9_000, shard=3_000)
    assert len(list(folder.glob("*.parquet"))) == 3
    it = load_posts(folder, streaming=True)
    assert not isinstance(it, list)
    ids = [p.id for p in it]
    assert ids == [f"p{i}" for i in range(9_000)]
    first = next(iter(load_posts(folder, streaming=True)))
    assert first.to_dict() == make_post(0).to_dict() | {"image": str(folder / make_post(0).image)}
