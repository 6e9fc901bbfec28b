"""Inference: batched prediction, moderation with explanations, search, and sharded batch jobs.

- :class:`Predictor` runs a trained :class:`~ximgctx.ContextModel` over posts (batched, inference mode,
  autocast on GPU) and returns per task the label scores and the labels above threshold.
- :class:`Moderator` applies a :class:`ModerationPolicy` (YAML) and returns OpenAI-moderation-shaped
  results with an allow / review / block decision and an explanation.
- :class:`SearchIndex` is a FAISS index over fused post embeddings and CLIP image embeddings.
- :class:`LabelMemory`: labeled examples a predictor blends into its scores (``Predictor(model,
memory=...)``).
- ``ximgctx predict | moderate | calibrate | index | search`` are the command-line front ends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it; imported on first use (PEP 562), so that ``ximgctx predict``
#: does not import the memory, search, calibration and governance code it never runs.
_LAZY: dict[str, str] = {
    "calibrate_policy": "ximgctx.inference.calibration",
    "choose_block_threshold": "ximgctx.inference.calibration",
    "choose_review_threshold": "ximgctx.inference.calibration",
    "LabelMemory": "ximgctx.inference.memory",
    "LabelMemoryError": "ximgctx.inference.memory",
    "MemoryConfig": "ximgctx.inference.memory",
    "Explanation": "ximgctx.inference.moderation",
    "ModerationResult": "ximgctx.inference.moderation",
    "Moderator": "ximgctx.inference.moderation",
    "CategoryRule": "ximgctx.models.policy",
    "ModerationPolicy": "ximgctx.models.policy",
    "PolicyError": "ximgctx.models.policy",
    "default_policy_path": "ximgctx.models.policy",
    "BatchResult": "ximgctx.inference.predictor",
    "PostPrediction": "ximgctx.inference.predictor",
    "Predictor": "ximgctx.inference.predictor",
    "TaskPrediction": "ximgctx.inference.predictor",
    "SearchHit": "ximgctx.inference.search",
    "SearchIndex": "ximgctx.inference.search",
    "SearchIndexError": "ximgctx.inference.search",
}

if TYPE_CHECKING:
    from ximgctx.inference.calibration import (
        calibrate_policy,
        choose_block_threshold,
        choose_review_threshold,
    )
    from ximgctx.inference.memory import LabelMemory, LabelMemoryError, MemoryConfig
    from ximgctx.inference.moderation import Explanation, ModerationResult, Moderator
    from ximgctx.inference.predictor import BatchResult, PostPrediction, Predictor, TaskPrediction
    from ximgctx.inference.search import SearchHit, SearchIndex, SearchIndexError
    from ximgctx.models.policy import CategoryRule, ModerationPolicy, PolicyError, default_policy_path

__all__ = [
    "BatchResult",
    "CategoryRule",
    "Explanation",
    "LabelMemory",
    "LabelMemoryError",
    "MemoryConfig",
    "ModerationPolicy",
    "ModerationResult",
    "Moderator",
    "PolicyError",
    "PostPrediction",
    "Predictor",
    "SearchHit",
    "SearchIndex",
    "SearchIndexError",
    "TaskPrediction",
    "calibrate_policy",
    "choose_block_threshold",
    "choose_review_threshold",
    "default_policy_path",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ximgctx.inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
