"""The one JSON-safe walker: every value ximgctx writes as JSON goes through :func:`json_safe` first.

Standard JSON has neither NaN nor infinity. Python's ``json`` writes them anyway (``NaN``, ``Infinity``),
and jq, browsers, Arrow and PostgreSQL then refuse the file; it also cannot write numpy or torch numbers.
:func:`json_safe` returns the same value as standard JSON can hold it: a NaN or an infinity becomes
``None`` (each one reported to the caller, who decides whether it is a problem worth naming), numpy
scalars and arrays and torch tensors become Python numbers and lists, tuples become lists.

Shared ground: this module imports the standard library only. numpy and torch values are recognised by
their ``tolist`` method, so importing it imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["json_safe"]


def _child(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def json_safe(
    value: Any, *, on_nonfinite: Callable[[str, float], None] | None = None, where: str = ""
) -> Any:
    """``value`` as standard JSON can hold it, nested to any depth.

    Args:
        value: dicts, lists, tuples and scalars, numpy scalars and arrays, torch tensors (on any device).
            Other objects (strings, None, a ``Path``) are returned unchanged.
        on_nonfinite: called once per NaN or infinity replaced by None, with its dotted path
            (``meta.score``, ``replies[2].weight``; the top-level value's path is ``where``) and the value.
        where: the path of ``value`` itself, the prefix of every path given to ``on_nonfinite``.

    Returns:
        A new value: dicts keep their keys, lists and tuples become lists, numbers are plain ``int``,
        ``float`` or ``bool``, and no float is NaN or infinite.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):  # numpy's float64 is a float too
        if math.isfinite(value):
            return value if type(value) is float else float(value)
        if on_nonfinite is not None:
            on_nonfinite(where, float(value))
        return None
    if isinstance(value, dict):
        return {k: json_safe(v, on_nonfinite=on_nonfinite, where=_child(where, k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, on_nonfinite=on_nonfinite, where=f"{where}[{i}]") for i, v in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # numpy scalar or array, torch tensor: Python numbers and lists
    if callable(tolist):
        return json_safe(tolist(), on_nonfinite=on_nonfinite, where=where)
    return value
