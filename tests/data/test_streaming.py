"""Streaming: ``load_posts`` holds one record at a time (reading 3x more posts costs no more memory), and
``StreamingPosts`` turns shards into a training stream split by (rank, worker), in an order that is a function
of (seed, epoch) only, resumable at any position.

The first part is a small run of the ``ximgctx bench streaming`` measurement (the benchmark reads 20k vs 200k
posts, each in a fresh process; here 20k vs 60k in this process, with the kernel's peak-RSS counter reset per
read).
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from ximgctx.bench.streaming import _reset_peak, compare, make_post, write_parquet_shards
from ximgctx.data.io import load_posts
from ximgctx.data.problems import Problem
from ximgctx.data.record import Post
from ximgctx.data.shard_formats import ShardProblem
from ximgctx.data.streaming import (
    StreamCollate,
    StreamingPosts,
    StreamLoader,
    StreamPosition,
    buffer_order,
    plan_epoch,
)


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


# ------------------------------------------------------------------ StreamingPosts: shards as a training
# stream A stand-in for ``ximgctx.data.shards`` (name, count; read from a position), so these tests need no
# format.

UNEVEN = (50, 3, 17, 1, 29)  # posts per shard: 100 in all, very unequal on purpose


@dataclass(frozen=True)
class FakeShard:
    name: str
    count: int
    stored: int | None = None  # records really present (fewer: a truncated shard)
    bad: tuple[int, ...] = ()  # positions whose record is corrupt


def fake_shards(counts=UNEVEN) -> list[FakeShard]:
    return [FakeShard(f"s{i:02d}", n) for i, n in enumerate(counts)]


def read_fake(shard: FakeShard, *, start: int = 0, mapping=None):  # noqa: ANN001, ANN201
    if shard.name == "altered":  # as read_shard does for a checksum mismatch: one problem, no records
        yield start, ShardProblem("shard", "checksum_mismatch", "altered", shard=shard.name)
        return
    for pos in range(start, shard.count if shard.stored is None else shard.stored):
        if pos in shard.bad:
            yield pos, Problem("record", "corrupt", f"{shard.name}:{pos}")
        else:
            yield pos, Post(id=f"{shard.name}-{pos}", text="t")


class FakeBatch:
    def __init__(self, posts: list[Post]) -> None:
        self.ids = [p.id for p in posts]
        self.problems: list[list[Problem]] = [[] for _ in posts]

    def to(self, device) -> FakeBatch:  # noqa: ANN001
        return self


def stream(rank=0, world=1, workers=0, seed=0, buffer=8, shards=None) -> StreamingPosts:  # noqa: ANN001
    return StreamingPosts(
        shards if shards is not None else fake_shards(),
        seed=seed,
        buffer_size=buffer,
        rank=rank,
        world_size=world,
        workers=workers,
        reader=read_fake,
    )


def loader(ds: StreamingPosts, batch: int = 4, accum: int = 1) -> StreamLoader:
    return StreamLoader(
        ds,
        StreamCollate(FakeBatch, None),
        batch_size=batch,
        grad_accum_steps=accum,
        prefetch_factor=2,
        device="cpu",
        any_done=lambda flag: flag,
    )


def epoch_ids(ld: StreamLoader, epoch: int) -> list[list[str]]:
    ld.set_epoch(epoch)
    return [b.ids for b in ld]


def test_plan_cuts_every_post_into_exactly_one_slot_nearly_evenly() -> None:
    for slots in (1, 2, 3, 4, 7):
        plan = plan_epoch(fake_shards(), seed=0, epoch=0, slots=slots)
        covered = sorted((p.shard.name, i) for pieces in plan for p in pieces for i in range(p.start, p.stop))
        assert covered == sorted((s.name, i) for s in fake_shards() for i in range(s.count))
        sizes = [sum(len(p) for p in pieces) for pieces in plan]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 100


def test_buffer_order_is_a_permutation_held_within_the_buffer() -> None:
    order = buffer_order(200, 16, random.Random(1))
    seen = []
    for pos in order:
        assert len(order.held) < 16 and pos < order.read
        seen.append(pos)
    assert sorted(seen) == list(range(200)) and seen != list(range(200))


def test_order_depends_only_on_seed_and_epoch_with_two_workers() -> None:
    a, b = loader(stream(workers=2)), loader(stream(workers=2))
    first, again = epoch_ids(a, 0), epoch_ids(b, 0)
    assert first == again  # same (seed, epoch): the same sequence, across loaders and worker processes
    assert epoch_ids(a, 1) != first  # another epoch: another order
    assert epoch_ids(loader(stream(workers=2, seed=1)), 0) != first
    assert epoch_ids(a, 0) == first  # going back to epoch 0 gives it again


def test_union_over_ranks_and_workers_is_every_post_exactly_once() -> None:
    everything = {f"{s.name}-{i}" for s in fake_shards() for i in range(s.count)}
    for world, workers in ((1, 1), (2, 2), (3, 2)):
        for epoch in (0, 1):
            got: list[str] = []
            for rank in range(world):
                ds = stream(rank=rank, world=world, workers=workers)
                ds.set_epoch(epoch)
                got += [p.id for w in range(ds.workers) for p, _ in ds.iter_slot(w)]
            assert len(got) == len(set(got)) == 100 and set(got) == everything


def test_uneven_shards_give_every_rank_the_same_number_of_batches() -> None:
    """2 ranks x 2 workers, batches of 4: each slot holds 25 posts -> 6 batches, 12 per rank; what the
    even-steps rule drops is each worker's partial batch (1 post), no duplicate, none other missing."""
    delivered = []
    seen: list[str] = []
    for rank in range(2):
        ld = loader(stream(rank=rank, world=2, workers=2))
        ids = epoch_ids(ld, 0)
        delivered.append(len(ids))
        seen += [i for b in ids for i in b]
    assert delivered == [len(ld), len(ld)] == [12, 12]
    assert len(seen) == len(set(seen)) == 96  # 100 posts - 4 workers x 1 post of their partial batch
    # a rank whose data runs dry ends the epoch on every rank instead of leaving the others in a collective
    dry = StreamLoader(
        stream(shards=[FakeShard("s00", 40, stored=9)]),
        StreamCollate(FakeBatch, None),
        batch_size=4,
        grad_accum_steps=3,
        prefetch_factor=2,
        device="cpu",
        any_done=lambda flag: True,  # another rank reports it is out of batches
    )
    assert len(dry) == 9 and epoch_ids(dry, 0) == []


@pytest.mark.parametrize("stop", [3, 4, 7])  # odd: the worker whose turn is next is the second one
def test_loader_resume_continues_the_same_sequence_with_two_workers(stop: int) -> None:
    straight = epoch_ids(loader(stream(workers=2)), 1)
    first = loader(stream(workers=2))
    first.set_epoch(1)
    head = []
    for batch in first:
        head.append(batch.ids)
        if len(head) == stop:
            break
    saved = StreamPosition.from_dict(first.position().to_dict(), 2, "test")
    assert sum(saved.consumed) == 4 * stop
    again = loader(stream(workers=2))
    again.set_epoch(1)
    again.set_position(saved, delivered=stop)
    assert head + [b.ids for b in again] == straight


def test_slot_resume_at_every_position_matches_the_uninterrupted_slot() -> None:
    ds = stream(buffer=5)
    full = [p.id for p, _ in ds.iter_slot(0)]
    for k in (0, 1, 4, 5, 6, 37, 99, 100):
        ds.set_position(StreamPosition([k]))
        assert [p.id for p, _ in ds.iter_slot(0)] == full[k:], k


def test_corrupt_and_missing_records_keep_their_position_as_problem_posts() -> None:
    shards = [FakeShard("a", 10, bad=(2,)), FakeShard("b", 10, stored=6)]
    ds = stream(shards=shards, buffer=1)  # buffer 1: stored order
    out = list(ds.iter_slot(0))
    assert len(out) == 20  # every indexed position, whatever the shards hold
    problems = {p.id: pr.key for p, pr in out if pr is not None}
    assert problems == {"a:2": "record: corrupt", **{f"b:{i}": "shard: truncated" for i in range(6, 10)}}
    # a shard the reader refuses whole (checksum mismatch) keeps its positions, each naming that problem
    altered = list(stream(shards=[FakeShard("altered", 5)], buffer=1).iter_slot(0))
    assert [(p.id, pr.key) for p, pr in altered] == [
        (f"altered:{i}", "shard: checksum_mismatch") for i in range(5)
    ]
    first_of_a = [(0, p, pr) for p, pr in out if p.id.startswith("a")][:4]  # holds a:2
    batch = StreamCollate(FakeBatch, None)(first_of_a)
    assert batch[1] == 4 and [str(p[0].kind) for p in batch[2].problems if p] == ["corrupt"]
    # a check that refuses a post (no governance marker) replaces it by an empty post with the problem
    refuse = StreamCollate(FakeBatch, lambda post: Problem("meta", "ungoverned"))
    _, _, b = refuse([(0, Post(id="x", text="secret"), None)])
    assert b.ids == ["x"] and b.problems == [[Problem("meta", "ungoverned")]]
