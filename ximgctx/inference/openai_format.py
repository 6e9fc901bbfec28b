"""The OpenAI moderation wire format: ximgctx's moderation results as ``ModerationCreateResponse``.

OpenAI's response has exactly 13 categories. A policy category says which of them it answers
(``openai: [violence, harassment/threatening]`` in the policy YAML); for each OpenAI category:

* ``category_scores[c]``: the highest score of the policy categories that answer it, or ``0.0`` when none
  does;
* ``categories[c]``: whether any of them decided at or above the policy's ``flag_on`` (``block`` by
  default; the post is flagged for it);
* ``category_applied_input_types[c]``: the inputs the score read, among those OpenAI allows for that
  category (``"text"`` for harassment, hate, illicit and sexual/minors; ``"text"`` and ``"image"`` for the
  others). Replies are text. An unscored category has ``[]``.

``flagged`` is the post's decision at or above the policy's ``flag_on`` (``block`` by default, ``review``
when the operator wants clients that read only ``flagged`` to hold review decisions too), so such a client
acts as the policy says, including categories of the policy's own that OpenAI has no name for. Categories
no policy category answers are reported false / 0.0 and listed in ``ximgctx.unscored``: never invented.
The result also carries ximgctx's ``decision`` (allow / review / block) and ``explanation`` as extra
fields, which the official SDK keeps (``result.decision``, ``result.model_extra``), and an ``ximgctx``
object with the policy's own categories, per-category decisions, the unscored OpenAI categories and the
post's problems.

An input the server could not score (a text with a NUL character or over the server's length limit, an
empty input) gets a result of the same shape, in its place in ``results``, with an ``error`` object
(``{"message", "type", "param", "code"}``, as in OpenAI's error responses) and nothing scored: every
category false, every score 0.0, no input types, ``explanation`` null. Its ``decision`` is the policy's
``unreadable_input`` (``review`` by default; ``allow`` for an empty input, which has nothing to violate)
and ``flagged`` follows ``flag_on`` as for any result. The official SDK keeps ``error`` as an extra field
(``result.model_extra["error"]``), so a list with one bad input still parses and stays aligned.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from typing import Any

from ximgctx.models.policy import OPENAI_CATEGORIES

__all__ = ["OPENAI_CATEGORIES", "openai_error_result", "openai_mapping", "openai_response", "openai_result"]


def openai_mapping(policy: Any) -> dict[str, list[str]]:
    """OpenAI category -> the policy categories that answer it (in policy order)."""
    out: dict[str, list[str]] = {c: [] for c in OPENAI_CATEGORIES}
    for name, rule in policy.categories.items():
        for c in getattr(rule, "openai", ()) or ():
            out[c].append(name)
    return out


def _score_or_zero(x: float | None) -> float:
    """A category score as OpenAI's wire format holds it: a NaN, infinite or absent (None: the category's
    task abstained) score is 0.0, not null.

    Unlike :func:`ximgctx._json.json_safe` (null), on purpose: ``category_scores`` values are non-optional
    floats in OpenAI's ``ModerationCreateResponse``, so null would fail the official client's parsing. The
    ``flagged``/``categories`` booleans and the ``decision`` are computed from the model's own results.
    """
    return float(x) if x is not None and math.isfinite(x) else 0.0


def openai_result(result: Any, mapping: dict[str, list[str]]) -> dict[str, Any]:
    """One ``Moderation`` object (a dict) for one ``ModerationResult``."""
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    applied: dict[str, list[str]] = {}
    for c, allowed in OPENAI_CATEGORIES.items():
        own = mapping.get(c, [])
        categories[c] = any(result.categories.get(n, False) for n in own)
        scores[c] = max((_score_or_zero(result.category_scores[n]) for n in own), default=0.0)
        read: set[str] = set()
        for n in own:
            for m in result.category_applied_input_types.get(n, ()):
                read.add("text" if m in ("text", "replies") else m)
        applied[c] = [t for t in allowed if t in read]
    explanation = None if result.explanation is None else result.explanation.to_dict()
    return {
        "flagged": bool(result.flagged),  # the policy's block decision (any mapped category blocking is one)
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
        "decision": result.decision,
        "explanation": explanation,
        "ximgctx": {
            "id": result.id,
            "categories": dict(result.categories),
            "category_scores": {
                k: None if v is None else _score_or_zero(v) for k, v in result.category_scores.items()
            },
            "category_decisions": dict(result.category_decisions),
            "unscored": [c for c in OPENAI_CATEGORIES if not mapping.get(c)],
            "problems": [str(p) for p in result.problems],
        },
    }


def openai_error_result(
    error: dict[str, Any], policy: Any, mapping: dict[str, list[str]], *, post_id: str, decision: str
) -> dict[str, Any]:
    """The result of an input that was not scored: the ``Moderation`` shape with nothing scored, the
    ``decision`` given (the policy's ``unreadable_input``, or ``allow`` for an empty input), ``flagged`` as
    the policy's ``flag_on`` says, and ``error`` (OpenAI's error object) naming what was wrong."""
    names = list(policy.categories)
    return {
        "flagged": bool(policy.flags(decision)),
        "categories": {c: False for c in OPENAI_CATEGORIES},
        "category_scores": {c: 0.0 for c in OPENAI_CATEGORIES},
        "category_applied_input_types": {c: [] for c in OPENAI_CATEGORIES},
        "decision": decision,
        "explanation": None,
        "error": dict(error),
        "ximgctx": {
            "id": post_id,
            "categories": {n: False for n in names},
            "category_scores": {n: None for n in names},
            "category_decisions": {n: "allow" for n in names},
            "unscored": list(OPENAI_CATEGORIES),
            "problems": [str(error.get("message", ""))],
        },
    }


def openai_response(results: Iterable[Any], mapping: dict[str, list[str]], model: str) -> dict[str, Any]:
    """The ``ModerationCreateResponse`` envelope: ``id``, ``model``, ``results`` (a result that is already
    a dict, such as :func:`openai_error_result`'s, is kept as it is)."""
    return {
        "id": f"modr-{uuid.uuid4().hex}",
        "model": model,
        "results": [r if isinstance(r, dict) else openai_result(r, mapping) for r in results],
    }
