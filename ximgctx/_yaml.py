"""YAML reading with YAML 1.2 numbers.

PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is the *string* "1e-4". Learning rates are written that
way in every config users copy from papers and scripts, so every YAML ximgctx reads (config files and
``key=value`` overrides) goes through :func:`safe_load`, which reads ``1e-4``, ``5E+3`` and ``.5`` as
floats. Everything else is PyYAML's ``SafeLoader``: no Python objects are ever constructed.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["safe_load"]


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` whose float resolver accepts exponents without a dot (YAML 1.2 core schema)."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in list(_Loader.yaml_implicit_resolvers):
    _Loader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers[_first] if tag != "tag:yaml.org,2002:float"
    ]
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """Parse YAML (or JSON) text safely, reading ``1e-4`` as a float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
