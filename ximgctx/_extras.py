"""Optional dependencies: the one place that knows which extra brings which package.

``pip install ximgctx`` is the model library (build, train, evaluate, predict, save and load). The
applications and a few features need more, installed as extras (``pip install 'ximgctx[search]'``). A
feature whose extra is missing fails with :class:`MissingExtraError`, one line naming the feature, the
extra and the pip command; nothing optional is imported at ``import ximgctx`` or by the model.

Use :func:`require` where a module is imported on first use::

    faiss = require("faiss", feature="the search index")

and :func:`missing_extra` around a module's top-level imports of an extra's packages::

    try:
        from fastapi import FastAPI
    except ImportError as e:
        raise missing_extra(e, feature="the service") from None

This module imports only the standard library and :mod:`ximgctx.errors`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from ximgctx.errors import XimgctxError

__all__ = ["EXTRAS", "MissingExtraError", "extra_of", "is_available", "missing_extra", "require"]

#: extra -> the top-level modules it brings (pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "starlette", "pydantic", "uvicorn", "prometheus_client", "httpx"),
    "governance": ("presidio_analyzer", "phonenumbers", "tldextract"),
    "search": ("faiss",),
    "hitl": ("crowdkit",),
    "plots": ("matplotlib",),
    "tensorboard": ("tensorboard",),
    "queue": ("sqlalchemy", "alembic", "psycopg", "jinja2"),
}

_MODULE_EXTRA: dict[str, str] = {m: extra for extra, modules in EXTRAS.items() for m in modules}


class MissingExtraError(XimgctxError, ImportError):
    """A feature needs an optional package that is not installed; the message names the feature, the
    package, the extra that brings it and the pip command. Also an ``ImportError``, so ``except
    ImportError`` keeps working."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'ximgctx[{extra}]'",
            name=module,
        )
        self.feature, self.module, self.extra = feature, module, extra


def extra_of(module: str) -> str:
    """The extra that brings ``module`` (a dotted name is looked up by its top-level package)."""
    top = module.partition(".")[0]
    if top not in _MODULE_EXTRA:
        raise KeyError(
            f"ximgctx._extras: {module!r} is not an optional dependency; known: {sorted(_MODULE_EXTRA)}"
        )
    return _MODULE_EXTRA[top]


def require(module: str, *, feature: str) -> ModuleType:
    """Import ``module`` (an optional dependency) or raise :class:`MissingExtraError` naming ``feature``
    and the extra to install."""
    extra = extra_of(module)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise missing_extra(e, feature=feature, extra=extra) from None


def missing_extra(error: ImportError, *, feature: str, extra: str | None = None) -> MissingExtraError:
    """The :class:`MissingExtraError` for an ``ImportError`` raised while importing an optional package
    (the extra is found from the missing module's name unless given)."""
    module = error.name or "an optional package"
    if extra is None:
        top = module.partition(".")[0]
        if top not in _MODULE_EXTRA:
            raise error  # not an optional dependency's absence: a broken install, keep its traceback
        extra = _MODULE_EXTRA[top]
    return MissingExtraError(feature, module.partition(".")[0], extra)


def is_available(module: str) -> bool:
    """Whether an optional dependency can be imported, without importing it."""
    extra_of(module)  # only optional dependencies are asked about
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent missing, or a None entry in sys.modules
        return False
