"""Errors the service answers as OpenAI-style JSON (``{"error": {message, type, param, code}}``).

Every error the app can return has that shape, whoever raised it: the routes (:class:`ServiceError`, a
ximgctx :class:`~ximgctx.errors.XimgctxError` for a bad request), FastAPI's request validation, Starlette's
own 404 (unknown path) and 405 (wrong method, with its ``Allow`` header), and any unexpected exception (500,
no traceback, no server path). ``param`` names the request field the message is about (``input[2]``,
``model``, ``ximgctx.replies``) when there is one, as OpenAI's ``param`` does; else null.

============  =========================  ===========================================================
status        type                       code (examples)
============  =========================  ===========================================================
400           invalid_request_error      invalid_request, invalid_input, model_not_found, wrong_base_url
401           invalid_request_error      invalid_api_key
403           permission_error           missing_scope
404           invalid_request_error      unknown_url, not_found, no_index
405           invalid_request_error      method_not_allowed
409 / 422     invalid_request_error      no_memory_reference / not_governed
413           invalid_request_error      body_too_large
429           requests                   rate_limit_exceeded
500 / 503     server_error               internal_error / queue_full, not_ready
============  =========================  ===========================================================

A path that is one of the ``/v1/`` routes under another prefix (a client given ``http://host:port`` as its
base URL instead of ``http://host:port/v1``, so it posts to ``/moderations``; or ``.../api/v1``) is a **400**
``wrong_base_url`` naming the right base URL, not a 404: some clients (openai-guardrails' moderation check)
take a 404 from the moderation endpoint to mean "this server has none" and send the user's text to the
public OpenAI endpoint instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ximgctx.errors import XimgctxError

__all__ = [
    "ServiceError",
    "error_body",
    "error_response",
    "install_error_handlers",
    "param_of",
]

#: status -> (type, code) of the errors Starlette raises itself (and of any HTTPException a route raises).
_STATUS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "body_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("invalid_request_error", "unprocessable_request"),
    429: ("requests", "rate_limit_exceeded"),
}
# "input[2]: ...", "ximgctx[0].replies[3]: ...", "labels.intent: ...", "model: ..."
_PARAM = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_][\w/-]*)*):\s")


class ServiceError(Exception):
    """An error answered as OpenAI-style JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str,
        headers: dict | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the response body."""
        return error_body(self.message, self.type, self.code, self.param)


def param_of(message: str) -> str | None:
    """The request field a message names before its first ``": "`` (``"input[2]: contains a NUL
    character"`` -> ``"input[2]"``), or None."""
    m = _PARAM.match(message)
    return m.group(1) if m else None


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"message": message, "type": type_, "param": param, "code": code}


def error_response(
    status: int, message: str, type_: str, code: str, headers: dict | None = None, param: str | None = None
) -> JSONResponse:
    body = {"error": error_body(message, type_, code, param)}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_where(error: dict[str, Any], body: Any) -> str:
    """FastAPI's error location as the request field (``("body", "input", "list[str]", 2)`` ->
    ``input[2]``): the parts of the location found in the request body (pydantic's union member tags are
    not), and the last part of a missing field."""
    loc = list(error.get("loc", ()))
    if loc and loc[0] == "body":
        loc = loc[1:]
    out, node = "", body
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            out, node = (f"{out}.{part}" if out else part), node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out, node = f"{out}[{part}]", node[part]
        elif i == len(loc) - 1 and error.get("type") == "missing" and isinstance(part, str):
            out = f"{out}.{part}" if out else part
    return out


def _misplaced(path: str, routes: set[str]) -> str | None:
    """The ``/v1/`` route that ``path`` is under another prefix (``/moderations``, ``/api/v1/moderations``
    for ``/v1/moderations``), or None."""
    for route in sorted(routes):
        if "{" not in route and path != route and path.rstrip("/").endswith(route[len("/v1") :]):
            return route
    return None


def install_error_handlers(
    app: FastAPI, on_error: Callable[[str], None], v1_routes: Callable[[], set[str]]
) -> None:
    """Answer every error of ``app`` as OpenAI-style JSON; ``on_error(kind)`` counts it (metrics);
    ``v1_routes()`` are the app's ``/v1/`` paths (a path that is one of them without ``/v1`` is a 400
    naming the base URL)."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, e: ServiceError) -> JSONResponse:
        return error_response(e.status, e.message, e.type, e.code, e.headers, param=e.param)

    @app.exception_handler(XimgctxError)
    async def _input_error(request: Request, e: XimgctxError) -> JSONResponse:
        on_error("invalid_input")
        message = str(e)
        return error_response(400, message, "invalid_request_error", "invalid_input", param=param_of(message))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        on_error("malformed_request")
        # the deepest field any error names (a union's members each report one; the deepest is the one
        # that got furthest: ["a", 5] is input[1], not input)
        found = [(_validation_where(err, e.body), err) for err in e.errors()] or [("", {})]
        where, first = max(found, key=lambda x: x[0].count(".") + x[0].count("["))
        message = f"{where or 'body'}: {first.get('msg', 'invalid request')}"
        return error_response(400, message, "invalid_request_error", "invalid_request", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        method, path = request.method, request.url.path
        if e.status_code == 404 and (route := _misplaced(path, v1_routes())) is not None:
            on_error("wrong_base_url")
            base = str(request.base_url).rstrip("/")
            return error_response(
                400,
                f"Invalid URL ({method} {path}): this server's API is under /v1 ({route}); set the client's "
                f"base URL to {base}/v1",
                "invalid_request_error",
                "wrong_base_url",
            )
        type_, code = _STATUS.get(
            e.status_code, ("server_error" if e.status_code >= 500 else "invalid_request_error", "http_error")
        )
        if e.status_code in (404, 405):
            on_error("unknown_url" if e.status_code == 404 else "method_not_allowed")
            message = f"Invalid URL ({method} {path})" if e.status_code == 404 else f"{method} {path}: "
            if e.status_code == 405:
                allow = (e.headers or {}).get("Allow", "")
                message += f"method not allowed (allowed: {allow})" if allow else "method not allowed"
        else:
            message = e.detail if isinstance(e.detail, str) else str(e.detail)
        return error_response(e.status_code, message, type_, code, dict(e.headers or {}) or None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        import logging

        logging.getLogger("ximgctx.serve.app").exception("unhandled error on %s", request.url.path)
        on_error("internal")
        return error_response(500, "internal server error", "server_error", "internal_error")
