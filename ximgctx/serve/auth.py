"""Who may call the service and what they may do: the operator's API keys (compared in constant time),
each with its scopes (:data:`~ximgctx.serve.config.SCOPES`) and the identity the loop store records."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from ximgctx.serve.config import SCOPES, ServeConfig

__all__ = ["Caller", "authorized", "caller", "required_scope"]


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: who (a key's name or digest, never the key) and what they may do."""

    identity: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


#: the caller of a server run with --no-auth on loopback: whoever can reach 127.0.0.1 runs the machine
LOCAL = Caller("local", frozenset(SCOPES))


def caller(config: ServeConfig, request: Request) -> Caller | None:
    """The caller a request's ``Authorization: Bearer KEY`` names; None without a valid key."""
    if config.no_auth:
        return LOCAL
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    token_b = token.strip().encode()
    found = None
    for key in config.parsed_keys():  # every key compared, in constant time
        if hmac.compare_digest(token_b, key.key.encode()) and found is None:
            found = Caller(key.identity, key.scopes)
    return found


def authorized(config: ServeConfig, request: Request) -> bool:
    """Whether the request carries one of the operator's API keys (any scope)."""
    return caller(config, request) is not None


def required_scope(method: str, path: str) -> str | None:
    """The scope a route needs (None: any valid key). Queue routes for labelers are not API-key routes."""
    if path in ("/v1/moderations", "/v1/predict"):
        return "moderate"
    if path == "/v1/search":
        return "search"
    if path == "/v1/feedback" and method == "POST":
        return "review"
    if path.startswith("/v1/feedback") or path.startswith("/v1/memory"):
        return "admin"
    if (path == "/v1/queue/items" and method == "POST") or path == "/v1/queue/stats":
        return "admin"
    if path.startswith("/admin/"):  # swapping the served model
        return "admin"
    return None
