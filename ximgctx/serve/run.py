"""The one place an ximgctx server process starts: ``ximgctx serve`` and ``ximgctx queue serve`` both run
their FastAPI app through :func:`run_server`, so host and port, access logging and shutdown behave alike."""

from __future__ import annotations

from typing import Any

from ximgctx._extras import require
from ximgctx.serve.config import ServeConfig

__all__ = ["run_server"]


def run_server(
    app: Any,
    config: ServeConfig,
    *,
    graceful_timeout_s: float | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``app`` with uvicorn on ``config.host``:``config.port`` until the process is stopped.

    Args:
        app: the ASGI app (:func:`ximgctx.serve.app.create_app`'s FastAPI app).
        config: the server's settings (host and port are read here; the app read the rest).
        graceful_timeout_s: seconds in-flight requests get to finish on shutdown (None: wait for them).
        log_level: uvicorn's log level.
    """
    uvicorn = require("uvicorn", feature="the ximgctx server")
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout_s,
        access_log=False,  # request lines could carry ids; metrics count requests instead
    )
