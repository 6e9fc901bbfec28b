"""Human in the loop: from many people's noisy votes to training labels, what to label next, and labels that
take effect before the next retraining.

- :func:`aggregate_votes` turns ``(post, labeler, task, label)`` votes into hard labels or soft
  distributions (majority vote or Dawid–Skene, through crowd-kit), with per-labeler reliability.
- :func:`select_for_labeling` picks the next posts to send to labelers (entropy, margin, MC dropout, or an
  uncertainty-weighted diverse batch).
- the label memory lives with inference (:class:`ximgctx.inference.memory.LabelMemory`, read by
  ``Predictor(model, memory=...)``):
  labeled examples that shift predictions for similar posts at once, through nearest neighbours in the
  fused-embedding space.
- :func:`simulate_labeling`: the whole loop on ContextBench with simulated noisy labelers.
"""

from ximgctx.hitl.aggregate import (
    DS_MODELS,
    METHODS,
    AggregatedPost,
    AggregationResult,
    LabelerReport,
    aggregate_votes,
    soft_to_hard,
)
from ximgctx.hitl.labelers import LabelerPool
from ximgctx.hitl.select import STRATEGIES, Selection, pairwise_distance, select_for_labeling, uncertainty
from ximgctx.hitl.simulate import SimulationConfig, simulate_labeling
from ximgctx.hitl.votes import BadVote, Vote, VoteSet, check_votes, load_tasks, read_votes, votes_from_posts

__all__ = [
    "DS_MODELS",
    "METHODS",
    "STRATEGIES",
    "AggregatedPost",
    "AggregationResult",
    "BadVote",
    "LabelerPool",
    "LabelerReport",
    "Selection",
    "SimulationConfig",
    "Vote",
    "VoteSet",
    "aggregate_votes",
    "check_votes",
    "load_tasks",
    "pairwise_distance",
    "read_votes",
    "select_for_labeling",
    "simulate_labeling",
    "soft_to_hard",
    "uncertainty",
    "votes_from_posts",
]
