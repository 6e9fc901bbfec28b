"""The served model's name, and the model names a request may give.

A response's ``model`` names the version served, from the model's artifact, never the folder it was loaded
from: ``NAME@DIGEST``, where ``NAME`` is the operator's ``--model-name``, else the model card's
``model_name`` (``ContextModel.save_pretrained(..., metadata={"model_name": ...})``), else the hub repo id
the model was loaded by, else ``ximgctx``; and ``DIGEST`` is the first 12 hex digits of the SHA-256 of the
model's ``manifest.json`` (which covers every weight file: ``ximgctx verify`` prints it in full; pin it with
``--expect-sha256``). Two servers report the same ``model`` exactly when they serve the same weights.

A request's ``model`` (optional, as in OpenAI's API) may be:

=================================  ==========================================================
``model`` in the request           served by
=================================  ==========================================================
(absent or null)                   the served model
the served ``NAME@DIGEST``         the served model
``NAME`` (without ``@DIGEST``)     the served model
``ximgctx``                        the served model
``omni-moderation-latest``         the served model (the name OpenAI's clients send by default)
``omni-moderation-2024-09-26``     the served model
``text-moderation-latest``         the served model
``text-moderation-stable``         the served model
anything else                      400 ``invalid_request_error``, code ``model_not_found``,
                                   param ``model``
=================================  ==========================================================

An unknown model is a 400, not OpenAI's 404: some clients (openai-guardrails' moderation check) take a
404 from the moderation endpoint for "no moderation here" and send the text to the public OpenAI endpoint.
"""

from __future__ import annotations

from typing import Any

from ximgctx._hub import is_hub_id
from ximgctx.serve.errors import ServiceError

__all__ = ["OPENAI_ALIASES", "accepted_names", "check_model", "served_model_name"]

#: The model names OpenAI's clients send (their defaults and pinned snapshots), all answered by the served
#: model: a client written for OpenAI's moderation endpoint works unchanged.
OPENAI_ALIASES = (
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
)


def served_model_name(predictor: Any, configured: str = "", source: Any = None) -> str:
    """``NAME@DIGEST`` of the served model (see the module docstring); ``configured`` is the operator's
    ``--model-name``, ``source`` what the model was loaded from (a hub repo id names it)."""
    name = configured.strip()
    if not name:
        meta = getattr(getattr(predictor, "model", None), "card_metadata", None) or {}
        name = str(meta.get("model_name") or "").strip()
    if not name and isinstance(source, str) and is_hub_id(source):
        name = source
    name = name or "ximgctx"
    digest = getattr(predictor, "model_digest", None)
    if "@" in name or not digest:
        return name
    return f"{name}@{digest[:12]}"


def accepted_names(served: str) -> set[str]:
    """Every ``model`` a request may name for ``served``."""
    return {served, served.split("@", 1)[0], "ximgctx", *OPENAI_ALIASES}


def check_model(requested: str | None, served: str) -> None:
    """Refuse a request naming a model this server does not serve (400, ``param: "model"``)."""
    if requested is None or requested in accepted_names(served):
        return
    raise ServiceError(
        400,
        f"model: {requested!r} is not served here; this server serves {served!r} (also answering "
        f"{', '.join(OPENAI_ALIASES)}, or leave model out)",
        "invalid_request_error",
        "model_not_found",
        param="model",
    )
