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

from ximgctx.inference.calibration import calibrate_policy, choose_block_threshold, choose_review_threshold
from ximgctx.inference.memory import LabelMemory, LabelMemoryError, MemoryConfig
from ximgctx.inference.moderation import Explanation, ModerationResult, Moderator
from ximgctx.inference.policy import CategoryRule, ModerationPolicy, PolicyError, default_policy_path
from ximgctx.inference.predictor import BatchResult, PostPrediction, Predictor, TaskPrediction
from ximgctx.inference.search import SearchHit, SearchIndex, SearchIndexError

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
