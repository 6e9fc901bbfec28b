"""Adapters from published dataset layouts to posts.

Every adapter module exposes ``NAME``, ``DESCRIPTION``, ``SPLITS``, ``TASKS`` (mirrored by
``configs/tasks/<name>.yaml``) and ``convert(src, *, split=None, missing_image="skip") ->
ConversionResult``. The registry below is a plain dict: the whole list in one place.
"""

from __future__ import annotations

from types import ModuleType

from ximgctx.adapters import crisismmd, fakeddit, hateful_memes, memotion, mmhs150k, mmsd, multioff
from ximgctx.adapters._common import AdapterError, ConversionResult, Problem, TaskDef, write_manifest
from ximgctx.errors import ConfigError

#: adapter name -> module with NAME, DESCRIPTION, SPLITS, TASKS and convert()
ADAPTERS: dict[str, ModuleType] = {
    "hateful_memes": hateful_memes,
    "mmhs150k": mmhs150k,
    "memotion": memotion,
    "mmsd": mmsd,
    "multioff": multioff,
    "fakeddit": fakeddit,
    "crisismmd": crisismmd,
}

__all__ = [
    "ADAPTERS",
    "AdapterError",
    "ConversionResult",
    "Problem",
    "TaskDef",
    "get_adapter",
    "write_manifest",
]


def get_adapter(name: str) -> ModuleType:
    """The adapter module for ``name``, or a ValueError listing the known names."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset format {name!r}; known: {sorted(ADAPTERS)}") from None
