"""The moderation and search service (``ximgctx serve``): OpenAI-compatible ``/v1/moderations`` for image +
text + replies, search, prediction and reviewer feedback, on FastAPI + uvicorn."""

from ximgctx.serve.app import create_app
from ximgctx.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
