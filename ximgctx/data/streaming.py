"""Posts streamed from shards, split by (rank, DataLoader worker), shuffled, and resumable exactly.

How an epoch's order is made (a function of ``seed``, ``epoch`` and the layout ``ranks x workers`` only):

1. **Shards shuffled.** The shards (sorted by name) are permuted with ``random.Random(f"{seed}:{epoch}")``.
2. **Cut into slots.** The permuted shards are laid end to end (``N`` posts, counted by the shard index) and
   cut into ``ranks x workers`` contiguous ranges of ``N // slots`` or one more posts; slot
   ``rank * workers + worker`` reads its range, which may begin or end inside a shard (read from an offset,
   which the shard reader skips without decoding images). Every post is in exactly one slot.
3. **Buffered shuffle.** Each slot streams its range through a shuffle buffer of ``buffer_size`` posts
   (webdataset's ``shuffle``): fill the buffer, then yield a random one and put the next post in its place.
   The random choices come from ``random.Random(f"{seed}:{epoch}:{slot}")`` and depend on positions only,
   never on the posts' content, so the order of positions a slot yields is known without reading anything.

**Exact resume** uses that: a slot's whole state after it has yielded ``k`` posts (which positions sit in the
buffer, how far the reader is, the RNG state) is recomputed by replaying the buffer's choices over integers
(``k`` cheap steps, no I/O), and only the posts still in the buffer are read again (a sequential read from
the oldest of them). The checkpoint therefore stores just ``k`` per (rank, worker) and which worker's batch
comes next, counted in the main process from the batches it received (each batch says which worker made
it): DataLoader workers cannot report their own state, and a saved buffer of posts would make checkpoints
grow with the buffer and hold data a checkpoint must not hold.

**Even steps.** Every rank runs the same number of batches per epoch, ``min`` over ranks of the whole
batches its workers can make (each worker drops its last partial batch), rounded down to a multiple of
``grad_accum_steps``. Truncating, like ``DistributedSampler(drop_last=True)``, rather than padding by
wrapping (Accelerate's ``even_batches``): padding would train some posts twice per epoch and need reads across
slots, and with slots within one post of each other the truncation drops at most ``batch_size`` posts per
worker plus a batch or so per rank. Because a truncated or corrupt shard can still make a rank run dry, the
loader also agrees with the other ranks before each batch (one tiny all-reduce) and all of them end the
epoch together instead of hanging in the next gradient all-reduce.

A record the reader cannot parse, or a post missing from a truncated shard, still takes its position (so
counts, order and resume stay exact) as an empty unlabeled post carrying the :class:`Problem`; its loss is
masked, and the run's data report counts it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ximgctx.data.problems import Problem
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError

__all__ = [
    "Piece",
    "ShardLike",
    "StreamCollate",
    "StreamLoader",
    "StreamPosition",
    "StreamingPosts",
    "buffer_order",
    "plan_epoch",
]


class ShardLike(Protocol):
    """What the stream needs of a shard (``ximgctx.data.shards.ShardInfo``)."""

    name: str  # unique, stable name (the shards are sorted by it)
    count: int  # records in the shard, from the shard index


#: reads one shard from a position: (position in the shard, post or problem), in stored order
ShardReader = Callable[..., Iterator[tuple[int, Any]]]


@dataclass(frozen=True)
class Piece:
    """The part of one shard a slot reads: positions ``start <= p < stop`` of ``shard``."""

    shard: Any  # a ShardLike
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def slot_sizes(total: int, slots: int) -> list[int]:
    """Posts per slot: ``total`` cut into ``slots`` contiguous ranges of ``total // slots`` or one more."""
    bounds = [i * total // slots for i in range(slots + 1)]
    return [bounds[i + 1] - bounds[i] for i in range(slots)]


def plan_epoch(shards: Sequence[ShardLike], *, seed: int, epoch: int, slots: int) -> list[list[Piece]]:
    """Each slot's pieces for ``epoch``: shards shuffled with (seed, epoch), laid end to end, cut evenly."""
    ordered = sorted(shards, key=lambda s: s.name)
    random.Random(f"{seed}:{epoch}").shuffle(ordered)
    plan: list[list[Piece]] = []
    it = iter(ordered)
    shard, used = next(it, None), 0
    for size in slot_sizes(sum(s.count for s in ordered), slots):
        pieces: list[Piece] = []
        while size > 0 and shard is not None:
            take = min(size, shard.count - used)
            if take > 0:
                pieces.append(Piece(shard, used, used + take))
            used, size = used + take, size - take
            if used >= shard.count:
                shard, used = next(it, None), 0
        plan.append(pieces)
    return plan


class buffer_order:  # noqa: N801 (an iterator used like a function)
    """Positions ``0..n-1`` in the order a shuffle buffer of ``size`` yields them, from ``rng``'s choices
    only.

    ``read`` is how many positions have entered the buffer so far and ``held`` the positions waiting in it:
    after ``k`` steps these are the state of a stream that has yielded ``k`` posts.
    """

    def __init__(self, n: int, size: int, rng: random.Random) -> None:
        self.n, self.size, self.rng = n, max(1, size), rng
        self.read = 0
        self.held: list[int] = []

    def __iter__(self) -> buffer_order:
        return self

    def __next__(self) -> int:
        while self.read < self.n and len(self.held) < self.size:
            self.held.append(self.read)
            self.read += 1
        if not self.held:
            raise StopIteration
        j = self.rng.randrange(len(self.held))
        self.held[j], self.held[-1] = self.held[-1], self.held[j]
        return self.held.pop()

    def skip(self, k: int) -> None:
        """Advance ``k`` steps without reading anything (resume)."""
        for _ in range(k):
            next(self)


@dataclass
class StreamPosition:
    """Where one rank's stream is inside an epoch: what goes into the checkpoint for it."""

    consumed: list[int]  # per DataLoader worker (logical): posts of its slot already delivered in batches
    next_worker: int = 0  # the logical worker whose batch comes next (the DataLoader's round robin)

    def to_dict(self) -> dict[str, Any]:
        return {"consumed": list(self.consumed), "next_worker": self.next_worker}

    @classmethod
    def from_dict(cls, data: Any, workers: int, where: str) -> StreamPosition:
        ok = isinstance(data, dict) and set(data) == {"consumed", "next_worker"}
        consumed = data.get("consumed") if ok else None
        nxt = data.get("next_worker") if ok else None
        ok = ok and isinstance(consumed, list) and len(consumed) == workers
        ok = ok and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in consumed or ())
        ok = ok and isinstance(nxt, int) and not isinstance(nxt, bool) and 0 <= nxt < workers
        if not ok or consumed is None or nxt is None:
            raise ConfigError(f"{where}: not a stream position for {workers} workers: {data!r}")
        return cls(list(consumed), nxt)


def _placeholder(shard: Any, pos: int, problem: Problem) -> tuple[Post, Problem]:
    """An empty unlabeled post standing in for a record that could not be read (its loss is masked)."""
    return Post(id=f"{shard.name}:{pos}"), problem


class StreamingPosts(IterableDataset):
    """Posts of shards for one rank, split over its DataLoader workers (see the module docstring).

    Yields ``(logical worker, post, problem or None)``; :class:`StreamCollate` makes the batches, in the
    workers. Call :meth:`set_epoch` before each epoch and :meth:`set_position` to resume inside one.

    Args:
        shards: the shards (``list_shards(root)``), each with its record count.
        seed: the run's seed; the order is a function of (seed, epoch, layout) only.
        buffer_size: posts held by each worker's shuffle buffer (1: no shuffle inside a slot).
        rank / world_size: this process and how many there are.
        workers: DataLoader workers per process (0 reads in the process itself: one slot).
        reader: ``read_shard(shard, start=...)`` (default: ``ximgctx.data.shards.read_shard``).
        mapping: column/field mapping passed to the reader.
    """

    def __init__(
        self,
        shards: Sequence[ShardLike],
        *,
        seed: int,
        buffer_size: int,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        reader: ShardReader | None = None,
        mapping: Any = None,
    ) -> None:
        self.shards = sorted(shards, key=lambda s: s.name)
        self.seed, self.buffer_size = seed, buffer_size
        self.rank, self.world_size = rank, world_size
        self.dataloader_workers = workers  # DataLoader worker processes (0: read in the process itself)
        self.workers = max(1, workers)  # logical workers (slots) of this rank
        self.reader, self.mapping = reader, mapping
        self.epoch = 0
        self.position = StreamPosition([0] * self.workers)

    @property
    def slots(self) -> int:
        return self.world_size * self.workers

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning."""
        self.epoch, self.position = epoch, StreamPosition([0] * self.workers)

    def set_position(self, position: StreamPosition) -> None:
        """Continue the current epoch from ``position`` (taken from a checkpoint)."""
        self.position = StreamPosition(list(position.consumed), position.next_worker)

    def slot_sizes(self) -> list[int]:
        """Posts per slot over every rank (the same in every epoch)."""
        return slot_sizes(sum(s.count for s in self.shards), self.slots)

    def __iter__(self) -> Iterator[tuple[int, Post, Problem | None]]:
        info = get_worker_info()
        index, count = (info.id, info.num_workers) if info is not None else (0, 1)
        if count != self.workers:
            raise ConfigError(
                f"the stream was planned for {self.workers} workers, the DataLoader has {count}"
            )
        worker = (self.position.next_worker + index) % self.workers  # logical worker (resume rotation)
        for post, problem in self.iter_slot(worker):
            yield worker, post, problem

    def iter_slot(self, worker: int) -> Iterator[tuple[Post, Problem | None]]:
        """The posts logical ``worker`` of this rank yields in the current epoch, from its position on."""
        slot = self.rank * self.workers + worker
        pieces = plan_epoch(self.shards, seed=self.seed, epoch=self.epoch, slots=self.slots)[slot]
        rng = random.Random(f"{self.seed}:{self.epoch}:{slot}")
        order = buffer_order(sum(len(p) for p in pieces), self.buffer_size, rng)
        order.skip(self.position.consumed[worker])
        yield from self._emit(pieces, order)

    def _emit(self, pieces: list[Piece], order: buffer_order) -> Iterator[tuple[Post, Problem | None]]:
        """Read the slot's pieces sequentially and yield the posts in ``order``; after a resume only the posts
        still in the buffer (and everything from the reader's position on) are kept."""
        resumed_from = order.read
        wanted = set(order.held)
        first = min([*wanted, resumed_from])
        records = self._records(pieces, first)
        cache: dict[int, tuple[Post, Problem | None]] = {}
        read = first
        for pos in order:
            while read < order.read:
                local, item = next(records)
                if local >= resumed_from or local in wanted:
                    cache[local] = item
                read = local + 1
            yield cache.pop(pos)

    def _records(self, pieces: list[Piece], first: int) -> Iterator[tuple[int, tuple[Post, Problem | None]]]:
        """(slot-local position, (post, problem)) from ``first`` on, every position exactly once: a record the
        reader skips or never reaches (a truncated shard) becomes a placeholder with its problem."""
        reader = self.reader
        if reader is None:
            from ximgctx.data.shards import read_shard  # noqa: PLC0415 (the shard format, lazily)

            reader = read_shard
        offset = 0
        for piece in pieces:
            if offset + len(piece) <= first:
                offset += len(piece)
                continue
            start = piece.start + max(0, first - offset)
            expected = start
            stream = reader(piece.shard, start=start, mapping=self.mapping)
            whole: Problem | None = None  # a problem of the whole shard (truncated, altered): names the rest
            try:
                for pos, item in stream:
                    if pos >= piece.stop:
                        break
                    if isinstance(item, Problem) and getattr(item, "position", 0) is None:
                        whole = item
                    while expected < pos:  # records the reader could not return at all
                        detail = f"{piece.shard.name}: record {expected} unreadable"
                        missing = Problem("record", "missing", detail)
                        yield offset + expected - piece.start, _placeholder(piece.shard, expected, missing)
                        expected += 1
                    if pos < expected:
                        continue
                    entry = (item, None) if isinstance(item, Post) else _placeholder(piece.shard, pos, item)
                    yield offset + pos - piece.start, entry
                    expected = pos + 1
            finally:
                getattr(stream, "close", lambda: None)()
            while expected < piece.stop:  # the shard ended before its index said
                detail = f"{piece.shard.name}: no record {expected} (index count {piece.shard.count})"
                cut = Problem("shard", "truncated", detail) if whole is None else whole
                yield offset + expected - piece.start, _placeholder(piece.shard, expected, cut)
                expected += 1
            offset += len(piece)


class StreamCollate:
    """Batches of one worker: ``(logical worker, records covered, PostBatch)``; runs in the DataLoader
    workers.

    Args:
        processor: the model's processor (posts -> :class:`PostBatch`).
        check: a post -> a problem that keeps it out of training (e.g. no governance marker), or None.
    """

    def __init__(
        self, processor: Callable[[list[Post]], Any], check: Callable[[Post], Problem | None] | None
    ) -> None:
        self.processor, self.check = processor, check

    def __call__(self, items: list[tuple[int, Post, Problem | None]]) -> tuple[int, int, Any]:
        posts: list[Post] = []
        extra: list[Problem | None] = []
        for _, post, problem in items:
            refused = self.check(post) if problem is None and self.check is not None else None
            if refused is not None:
                post, problem = Post(id=post.id), refused  # its content never reaches the model
            posts.append(post)
            extra.append(problem)
        batch = self.processor(posts)
        for i, problem in enumerate(extra):
            if problem is not None:
                batch.problems[i].append(problem)
        return items[0][0], len(items), batch


class StreamLoader:
    """One rank's training batches from a :class:`StreamingPosts`: a DataLoader with workers and prefetch,
    the same number of batches on every rank, and the position kept for checkpoints.

    Args:
        dataset: this rank's stream.
        collate: :class:`StreamCollate`.
        batch_size: posts per batch (per process).
        grad_accum_steps: batches per epoch are rounded down to a multiple of this.
        prefetch_factor: batches each worker prepares ahead (with workers).
        device: where batches go.
        any_done: a collective ``flag -> True if any rank's flag is True``
        (``ximgctx._distributed.any_process``).
    """

    def __init__(
        self,
        dataset: StreamingPosts,
        collate: StreamCollate,
        *,
        batch_size: int,
        grad_accum_steps: int,
        prefetch_factor: int,
        device: Any,
        any_done: Callable[[bool], bool],
    ) -> None:
        self.dataset, self.batch_size, self.device, self.any_done = dataset, batch_size, device, any_done
        workers = dataset.dataloader_workers
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            drop_last=True,
            collate_fn=collate,
            num_workers=workers,
            prefetch_factor=prefetch_factor if workers else None,
            persistent_workers=False,
            # its own generator: making the workers' seeds must not draw from the global torch RNG (dropout)
            generator=torch.Generator().manual_seed(dataset.seed),
        )
        sizes = dataset.slot_sizes()
        per_rank = [
            sum(n // batch_size for n in sizes[r * dataset.workers : (r + 1) * dataset.workers])
            for r in range(dataset.world_size)
        ]
        self.steps = min(per_rank) // grad_accum_steps * grad_accum_steps
        self.delivered = 0  # batches of this epoch delivered so far (before a resume included)
        self._running: Any = None  # the epoch's batch generator, while it runs

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.delivered = 0

    def set_position(self, position: StreamPosition, delivered: int) -> None:
        """Resume the current epoch after ``delivered`` batches, at ``position``."""
        self.dataset.set_position(position)
        self.delivered = delivered

    def position(self) -> StreamPosition:
        p = self.dataset.position
        return StreamPosition(list(p.consumed), p.next_worker)

    def __iter__(self) -> Iterator[Any]:
        self._running = self._batches()
        return self._running

    def end(self) -> None:
        """Stop the epoch's workers now (the loop leaves mid-epoch: a stop, the last step)."""
        running, self._running = self._running, None
        if running is not None:
            running.close()

    def _batches(self) -> Iterator[Any]:
        it = iter(self.loader)
        try:
            while self.delivered < self.steps:
                item = next(it, None)
                if self.any_done(item is None):  # collective: a rank that ran dry ends the epoch everywhere
                    return
                assert item is not None  # this rank's own flag was False
                worker, covered, batch = item
                pos = self.dataset.position
                pos.consumed[worker] += covered
                pos.next_worker = (worker + 1) % self.dataset.workers
                self.delivered += 1
                yield batch.to(self.device)
        finally:
            del it  # shuts the workers down when leaving mid-epoch
