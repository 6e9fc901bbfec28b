"""Moderation policies: their home is :mod:`ximgctx.models.policy` (below inference and evaluation, which
both read them); this module keeps the names importable from here."""

from ximgctx.models.policy import (
    DECISIONS,
    FLAG_ON,
    OPENAI_CATEGORIES,
    CategoryRule,
    Decision,
    ModerationPolicy,
    PolicyError,
    category_truth,
    default_policy_path,
    worst,
)

__all__ = [
    "DECISIONS",
    "FLAG_ON",
    "OPENAI_CATEGORIES",
    "CategoryRule",
    "Decision",
    "ModerationPolicy",
    "PolicyError",
    "category_truth",
    "default_policy_path",
    "worst",
]
