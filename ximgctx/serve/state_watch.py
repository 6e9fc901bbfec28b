"""How a server replica follows the loop store: erasures and acknowledgements (used by
:class:`ximgctx.serve.app.Service`).

Each poll (``ServeConfig.state_poll_s``) that finds the store's generation moved runs
:meth:`StateWatch.refresh` on the model thread: the authors erased since the last poll (their keyed
digests, recorded by ``ximgctx purge --loop-db`` before it rewrites any file) are removed from the served
search index and from the label memory loaded from files, the memory is rebuilt from the store's effective
labels (without any post of theirs), and the replica records in the store that it applied that generation
(``purge`` waits for it). The replica also re-marks itself alive every
:data:`~ximgctx.queue.erasure.HEARTBEAT_S` seconds and says goodbye when it stops. Nothing here writes a
file: the index and memory folders are ``purge``'s to rewrite.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["StateWatch", "replica_id"]


def replica_id(configured: str, port: int) -> str:
    """The id a replica acknowledges under: the configured one, else ``host:port:pid``."""
    return configured or f"{socket.gethostname()}:{port}:{os.getpid()}"


class StateWatch:
    """One replica's view of the store's erasures and its acknowledgements."""

    def __init__(self, service: Any) -> None:
        from ximgctx.inference._authors import AuthorKey

        self.service = service
        self.store = service.loop.store
        self.id = replica_id(service.config.replica_id, service.config.port)
        self.generation: int | None = None  # the last generation applied and acknowledged
        self.erased: dict[str, set[str]] = {}  # governance key id -> erased authors' digests
        self._last_row = 0
        self._beat = 0.0
        self.problem = ""
        self.key = AuthorKey.operator()  # the operator's governance key (checks posts against erasures)

    # ------------------------------------------------------------------------------------------ poll
    def refresh(self) -> bool:
        """On the model thread: apply new erasures, rebuild the memory from the store, acknowledge. Returns
        whether there was anything new (erasures or another generation)."""
        from ximgctx.queue.erasure import acknowledge, erased_since

        generation = self.service.loop.generation()  # read first: everything it announces is read below
        new = erased_since(self.store, self._last_row)
        if new:
            self._apply(new)
            self.service._files_epoch += 1  # the files' memory changed: rebuild even at the same generation
        self.service.sync_memory()
        changed = bool(new) or generation != self.generation
        self.generation = generation
        acknowledge(self.store, self.id, generation, self.problem)
        self._beat = time.monotonic()
        return changed

    def heartbeat(self) -> None:
        """Mark the replica alive (at most every HEARTBEAT_S seconds)."""
        from ximgctx.queue.erasure import HEARTBEAT_S, acknowledge

        if time.monotonic() - self._beat >= HEARTBEAT_S:
            acknowledge(self.store, self.id, None, self.problem)
            self._beat = time.monotonic()

    def leave(self) -> None:
        """The replica stops: ``purge`` no longer waits for it."""
        from ximgctx.queue.erasure import forget_replica

        try:
            forget_replica(self.store, self.id)
        except Exception:  # noqa: BLE001 - stopping must not fail on a store that went away
            logger.warning("loop store: could not remove replica %s", self.id)

    # -------------------------------------------------------------------------------------- erasure
    def _apply(self, rows: list[tuple[int, str, str]]) -> None:
        by_key: dict[str, set[str]] = {}
        for row, kid, digest in rows:
            by_key.setdefault(kid, set()).add(digest)
            self._last_row = max(self._last_row, row)
        problems = []
        for kid, digests in sorted(by_key.items()):
            self.erased.setdefault(kid, set()).update(digests)
            for name, artifact in (("search index", self.service.index), ("label memory", self.service._base_memory)):  # fmt: skip  # noqa: E501
                if artifact is None or not hasattr(artifact, "remove_author_digests"):
                    continue
                have = artifact.author_key.id
                if have != kid:
                    problems.append(
                        f"the served {name} is keyed by governance key {have}, erasures by {kid}: "
                        f"{len(digests)} erased author(s) cannot be found in it"
                    )
                    continue
                removed = artifact.remove_author_digests(digests)
                logger.info("erasure: %d post(s) of erased authors left the served %s", removed, name)
        if problems:
            self.problem = "; ".join(problems)
            logger.error("erasure: %s", self.problem)

    def kept(self, entries: list[Any]) -> list[Any]:
        """The store's effective entries without any post an erased author wrote or replied to (the store
        deletes their rows; this holds for rows written after a purge too)."""
        from ximgctx.governance.identity import erasure
        from ximgctx.inference._authors import post_author_digests

        drop = self.erased.get(self.key.id)
        if not drop or self.key.key is None:
            return entries
        return [
            e for e in entries if not erasure(post_author_digests(e.post, self.key.key), None, drop).drop_post
        ]

    def is_erased(self, post: Any) -> bool:
        """Whether ``post`` (or a reply of it) is by an author a purge erased (asked of the store itself, so
        no poll delay lets a feedback bring them back)."""
        from ximgctx.inference._authors import post_author_digests
        from ximgctx.queue.erasure import is_erased

        if self.key.key is None:
            return False
        return is_erased(self.store, self.key.id, post_author_digests(post, self.key.key))
