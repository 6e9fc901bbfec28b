"""Dynamic batching: concurrent requests coalesced into model batches, run off the event loop.

Each request's posts stay together and in order. The first request of a batch waits at most ``max_wait_ms``
for others to join it, up to ``max_batch_size`` posts, but only while requests are coming in together: when
the previous batch held one request and nothing else is queued (one client, or a quiet moment), the request
runs at once, since no other is likely to join it (the fast path that keeps a single request's latency at
the model's own). Batches also form by themselves while the model is busy: requests queue meanwhile. The
batch runs on the model's single worker thread (one batch at a time: the model's own threads use the
cores), and every request gets its own slice of the results. A batch that fails is retried request by
request, so one bad request fails alone. When more than
``max_queue`` posts wait, :class:`QueueFull` is raised at once (the app answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Batcher", "QueueFull"]


class QueueFull(Exception):
    """More posts are waiting than the server queues."""


@dataclass
class _Job:
    items: list[Any]
    future: asyncio.Future


class Batcher:
    """Coalesces ``submit`` calls into calls of ``fn(items) -> results`` (one result per item)."""

    def __init__(
        self,
        name: str,
        fn: Callable[[list[Any]], Sequence[Any]],
        executor: Executor,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[str, int], None] | None = None,
        on_depth: Callable[[str, int], None] | None = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.pending = 0  # posts submitted and not answered yet
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._on_batch = on_batch or (lambda name, n: None)
        self._on_depth = on_depth or (lambda name, n: None)
        self._alone = True  # the previous batch held one request and none waited behind it

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self, timeout: float = 30.0) -> None:
        """Answer what is queued, then stop."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.pending and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, items: list[Any]) -> list[Any]:
        """The results for ``items``, in order, once the batch holding them has run."""
        assert self._queue is not None, "Batcher.start() was not called"
        if self.pending + len(items) > self.max_queue and self.pending:
            raise QueueFull(f"{self.pending} posts are waiting for the model (limit {self.max_queue})")
        job = _Job(list(items), asyncio.get_running_loop().create_future())
        self.pending += len(items)
        self._on_depth(self.name, self.pending)
        self._queue.put_nowait(job)
        try:
            return await job.future
        finally:
            self.pending -= len(items)
            self._on_depth(self.name, self.pending)

    async def _collect(self) -> list[_Job]:
        assert self._queue is not None
        jobs = [await self._queue.get()]
        n = len(jobs[0].items)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        wait = not (self._alone and self._queue.empty())
        while n < self.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0 or not wait:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            jobs.append(job)
            n += len(job.items)
        self._alone = len(jobs) == 1 and self._queue.empty()
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [j for j in await self._collect() if not j.future.done()]  # drop cancelled requests
            if not jobs:
                continue
            items = [x for j in jobs for x in j.items]
            self._on_batch(self.name, len(items))
            try:
                results = await loop.run_in_executor(self.executor, self.fn, items)
                if len(results) != len(items):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
            except Exception:
                if len(jobs) == 1:
                    self._fail(jobs[0], *_exc())
                    continue
                for job in jobs:  # one bad request must not fail the others: run each alone
                    try:
                        self._answer(job, await loop.run_in_executor(self.executor, self.fn, job.items))
                    except Exception:
                        self._fail(job, *_exc())
                continue
            start = 0
            for job in jobs:
                self._answer(job, list(results[start : start + len(job.items)]))
                start += len(job.items)

    @staticmethod
    def _answer(job: _Job, results: Sequence[Any]) -> None:
        if not job.future.done():
            job.future.set_result(results)

    def _fail(self, job: _Job, exc: BaseException, _tb: Any) -> None:
        logger.error("%s batch failed: %s", self.name, exc, exc_info=(type(exc), exc, _tb))
        if not job.future.done():
            job.future.set_exception(exc)


def _exc() -> tuple[BaseException, Any]:
    import sys

    _, exc, tb = sys.exc_info()
    assert exc is not None
    return exc, tb
