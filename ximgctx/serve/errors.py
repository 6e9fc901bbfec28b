"""Errors the service answers as OpenAI-style JSON (``{"error": {message, type, param, code}}``)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

__all__ = ["ServiceError", "error_response"]


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


def error_response(
    status: int, message: str, type_: str, code: str, headers: dict | None = None, param: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)
