"""A shard folder as a map-style dataset whose image bytes stay in the shards until a post is asked for.

Evaluation and calibration index posts by position (every post exactly once across processes), so they need a
map-style dataset; holding every post's image bytes would make memory grow with the data set (50 KB a post is
50 GB at a million). :class:`ShardPostDataset` keeps each post without its image and the (shard, position)
it came from; ``dataset[i]`` reads that record's image again through a cursor that moves forward through the
shard, so reading in order (``shuffle=False``, what evaluation does) reads each shard once more, sequentially.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ximgctx.data.dataset import PostDataset
from ximgctx.data.record import LoadReport, Post, PostValidationError
from ximgctx.data.shards import ShardMapping, ShardProblem, list_shards, read_shard

__all__ = ["ShardPostDataset"]

logger = logging.getLogger("ximgctx.data")


class ShardPostDataset(PostDataset):
    """Posts of a shard folder, images read lazily (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        *,
        mapping: ShardMapping | None = None,
        on_error: str = "skip",
        report: LoadReport | None = None,
    ) -> None:
        self.shards = list_shards(root)
        self.mapping = mapping
        self.posts: list[Post] = []
        self._where: list[tuple[int, int]] = []  # per post: (shard index, position in the shard)
        self._has_image: list[bool] = []
        self._cursor: tuple[int, int, Iterator[tuple[int, Post | ShardProblem]]] | None = None
        report = report if report is not None else LoadReport()
        for si, shard in enumerate(self.shards):
            for pos, item in read_shard(shard, mapping=mapping):
                report.read += 1
                if not isinstance(item, Post):
                    e = PostValidationError(
                        f"{item.kind}: {item.detail}", source=str(shard.path), line=pos + 1, field=item.field
                    )
                    report.skip(e, on_error, logger)
                    continue
                self._has_image.append(item.image is not None)
                self.posts.append(replace(item, image=None))
                self._where.append((si, pos))

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers under spawn: a generator does not pickle
        return {**self.__dict__, "_cursor": None}

    def _record(self, si: int, pos: int) -> Post | ShardProblem:
        c = self._cursor
        if c is None or c[0] != si or c[1] > pos:  # another shard, or backwards: seek there
            c = (si, pos, read_shard(self.shards[si], start=pos, mapping=self.mapping, verify=False))
        si, _, it = c
        for p, item in it:
            if p >= pos:
                self._cursor = (si, p + 1, it)
                return item
        self._cursor = None
        return ShardProblem("shard", "truncated", "the record is gone", self.shards[si].name, pos)

    def __getitem__(self, i: int) -> Post:
        post = self.posts[i]
        if not self._has_image[i]:
            return post
        si, pos = self._where[i]
        item = self._record(si, pos)
        if not isinstance(item, Post) or item.id != post.id:  # the shard changed since it was listed
            raise PostValidationError(
                f"the shard no longer holds post {post.id!r} here; it changed while being read",
                source=str(self.shards[si].path),
                line=pos + 1,
            )
        return replace(post, image=item.image)
