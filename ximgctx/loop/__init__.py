"""The learning loop (``ximgctx loop``): labels people gave become a retrained, gated, registered and promoted
model, one round at a time.

- :class:`LoopConfig` (:mod:`ximgctx.loop.config`): the store, the registry, the experiment, replay data, the
  frozen holdout, the label shares, ``min_new_labels``, the promotion rule, the governance policy.
- :func:`run_round` (:mod:`ximgctx.loop.round`): one round, resumable, under the store's round lock.
- The registry and the round journal live in the store: :mod:`ximgctx.queue.registry`,
  :mod:`ximgctx.queue.rounds`.

Nothing heavy is imported here: the round imports training and inference when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ximgctx.loop.config import LoopConfig, load_loop_config
    from ximgctx.loop.round import RoundResult, run_round

__all__ = ["LoopConfig", "RoundResult", "load_loop_config", "run_round"]


def __getattr__(name: str) -> Any:
    if name in ("LoopConfig", "load_loop_config"):
        from ximgctx.loop import config

        return getattr(config, name)
    if name in ("RoundResult", "run_round"):
        from ximgctx.loop import round as round_

        return getattr(round_, name)
    raise AttributeError(f"module 'ximgctx.loop' has no attribute {name!r}")
