"""Who may call the service: the operator's API keys, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from ximgctx.serve.config import ServeConfig

__all__ = ["authorized"]


def authorized(config: ServeConfig, request: Request) -> bool:
    """Whether the request carries one of the operator's API keys (``Authorization: Bearer KEY``)."""
    if config.no_auth:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    token_b = token.strip().encode()
    ok = False
    for key in config.api_keys:  # every key compared, in constant time
        ok |= hmac.compare_digest(token_b, key.encode())
    return ok
