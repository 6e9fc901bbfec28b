"""A starter moderation policy written from a model's own tasks (``ximgctx policy init --model DIR``).

The shipped default policy needs ContextBench's tasks (``intent`` with ``threat``, ``meaning``); a model
trained on other tasks gets its starting point here. Every label of every task the model reads from the
whole post (not image-only tasks such as ``objects``, which describe the picture, not a policy question)
becomes a *review-only* category: ``review: 0.5``, ``block: null``. Nothing is blocked until thresholds are
chosen on labeled data (``ximgctx calibrate``). A category whose label names an OpenAI moderation category
(``threat``, ``hate``, ``harassment``, ``sexual``, ``self_harm``, ``violence``, ``illicit``...) answers it in
the OpenAI wire format; the rest are reported as the policy's own categories.
"""

from __future__ import annotations

import re
from typing import Any

from ximgctx.models.policy import CategoryRule, ModerationPolicy

__all__ = ["openai_categories_for", "starter_policy"]

#: label words -> the OpenAI categories a label of that name answers
_OPENAI_BY_WORD: dict[str, list[str]] = {
    "threat": ["violence", "harassment/threatening"],
    "threatening": ["harassment/threatening"],
    "violence": ["violence"],
    "violent": ["violence"],
    "gore": ["violence/graphic"],
    "graphic": ["violence/graphic"],
    "hate": ["hate"],
    "hateful": ["hate"],
    "harassment": ["harassment"],
    "bullying": ["harassment"],
    "sexual": ["sexual"],
    "nsfw": ["sexual"],
    "nudity": ["sexual"],
    "selfharm": ["self-harm"],
    "suicide": ["self-harm"],
    "illicit": ["illicit"],
    "drugs": ["illicit"],
    "weapons": ["illicit/violent"],
}


def openai_categories_for(label: str) -> list[str]:
    """The OpenAI categories a label's name answers (empty when none fits)."""
    words = re.split(
        r"[^a-z]+", label.lower().replace("self-harm", "selfharm").replace("self_harm", "selfharm")
    )
    out: list[str] = []
    for w in words:
        for c in _OPENAI_BY_WORD.get(w, []):
            if c not in out:
                out.append(c)
    return out


def starter_policy(model: Any, *, review: float = 0.5) -> ModerationPolicy:
    """Review-only categories for every label of the model's whole-post tasks."""
    categories: dict[str, CategoryRule] = {}
    for spec in model.config.tasks:
        if spec.source == "image":
            continue
        for label in spec.labels:
            name = re.sub(r"[^A-Za-z0-9_./-]+", "_", f"{spec.name}.{label}").strip("_")
            categories[name] = CategoryRule(
                name=name,
                task=spec.name,
                labels=[label],
                block=None,
                review=review,
                description=f"{spec.name} = {label} (starter: review-only until calibrated)",
                openai=openai_categories_for(label),
            )
    if not categories:
        raise ValueError("the model has no task read from the whole post; a policy needs at least one")
    return ModerationPolicy(
        categories=categories,
        name="starter",
        description="Written by `ximgctx policy init` from the model's tasks: every category review-only.",
    )
