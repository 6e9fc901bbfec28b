"""The review and labeling queue: governed posts wait in SQLite or PostgreSQL, labelers lease them on a
browser page served by the service, votes are stored one row per ``(item, labeler, task)`` and as label
rows of the loop's state (:mod:`ximgctx.queue.loop`: a vote reaches the served answers only by the operator's
rule), and ``ximgctx queue export`` aggregates them (Dawid–Skene) into a governed training manifest.

- :class:`QueueStore`: the database (SQLAlchemy; Alembic migrations run on open), leases, votes, erasure;
- :class:`~ximgctx.queue.loop.LoopState`: feedback and vote rows, the label rule, undo, audit, generation;
- :func:`queue_router`: the ``/queue`` page and the ``/v1/queue/...`` routes (mounted by ``create_app``);
- :func:`export_manifest`, :func:`queue_stats`: aggregation into training posts (with the tie rule of
  :mod:`ximgctx.hitl.aggregate`), and the queue's figures in named units;
- :mod:`ximgctx.queue.guide`: the question and label definitions the page shows beside each choice.
"""

from ximgctx.queue.config import QueueConfig, database_url, read_queue_key
from ximgctx.queue.store import (
    ConflictError,
    EnqueueResult,
    ItemView,
    Lease,
    LoginError,
    NotAssignedError,
    QueueError,
    QueueStore,
    VoteResult,
)

__all__ = [
    "ConflictError",
    "EnqueueResult",
    "ItemView",
    "Lease",
    "LoginError",
    "NotAssignedError",
    "QueueConfig",
    "QueueError",
    "QueueStore",
    "VoteResult",
    "database_url",
    "read_queue_key",
]
