"""Building the architecture of a saved model without initialising the weights its file is about to replace.

Random initialisation is most of the time it takes to build a CLIP encoder (``normal_`` over the text tower's
49408-row token table, ``uniform_`` over every Linear), and loading a saved model overwrites every bit of it.
Inside :func:`skip_parameter_init` a parameter is allocated (``torch.empty``: memory that is never touched)
but every initialisation written into it is skipped: the ``torch.nn.init`` functions, and the in-place
tensor methods an ``__init__`` uses to fill a parameter (``normal_``, ``uniform_``, ``fill_``, ``copy_``...),
when the tensor written is an ``nn.Parameter``. Buffers are computed as usual, because a module's
non-persistent buffers (a causal attention mask, position ids) are not in the saved file.

The loader then assigns the file's tensors to the parameters (``load_state_dict(..., assign=True)``, as
transformers and torchtune load: no second copy) and refuses a model with a parameter it did not load:
:func:`unloaded_parameters` names them. The skipping is a ``TorchFunctionMode``, which torch keeps per
thread: a model built by another thread at the same time is initialised as usual.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["building_skeleton", "skeleton_tensors", "skip_parameter_init", "unloaded_parameters"]

#: the in-place methods module constructors (torch's, open_clip's, peft's) initialise parameters with
_INIT_METHODS = frozenset(
    {
        "normal_",
        "uniform_",
        "fill_",
        "zero_",
        "copy_",
        "mul_",
        "add_",
        "sub_",
        "div_",
        "clamp_",
        "clamp_min_",
        "clamp_max_",
        "erfinv_",
        "exponential_",
        "bernoulli_",
        "random_",
        "cauchy_",
        "log_normal_",
        "geometric_",
        "masked_fill_",
        "fill_diagonal_",
        "__setitem__",
    }
)

_BUILDING: contextvars.ContextVar[bool] = contextvars.ContextVar("ximgctx_building_skeleton", default=False)


def _written(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The tensor an in-place method or a ``torch.nn.init`` function writes into."""
    if args:
        return args[0]
    return kwargs.get("tensor", kwargs.get("self"))


class _SkipParameterInit(TorchFunctionMode):
    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _INIT_METHODS or getattr(func, "__module__", None) == "torch.nn.init":
            target = _written(args, kwargs)
            if isinstance(target, nn.Parameter):
                return None if name == "__setitem__" else target
        return func(*args, **kwargs)


@contextlib.contextmanager
def skip_parameter_init() -> Iterator[None]:
    """Modules built in this block (in this thread) get allocated, uninitialised parameters: only for a model
    whose every parameter is loaded right after (check with :func:`unloaded_parameters`)."""
    token = _BUILDING.set(True)
    try:
        with _SkipParameterInit():
            yield
    finally:
        _BUILDING.reset(token)


def building_skeleton() -> bool:
    """Whether this code runs inside :func:`skip_parameter_init` (work that only reads the weights being
    initialised, such as zero-shot head initialisation, may be skipped)."""
    return _BUILDING.get()


def skeleton_tensors(model: nn.Module) -> dict[int, torch.Tensor]:
    """``id -> tensor`` of ``model``'s parameters and persistent buffers (the tensors loading must replace);
    the tensors are held, so that an id is not reused while the map lives."""
    return {id(t): t for _, t in _saved_tensors(model)}


def unloaded_parameters(
    model: nn.Module, skeleton: dict[int, torch.Tensor], *, exclude: str | None = None
) -> list[str]:
    """Names of ``model``'s parameters and persistent buffers that are still the skeleton's (``skeleton`` from
    :func:`skeleton_tensors` before loading), leaving out names containing ``exclude`` (weights loaded by
    another path, checked there). Non-persistent buffers are computed, not loaded, and are not listed."""
    return [
        name
        for name, tensor in _saved_tensors(model)
        if skeleton.get(id(tensor)) is tensor and (exclude is None or exclude not in name)
    ]


def _saved_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    out = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        dot = prefix + "." if prefix else ""
        out += [(dot + n, p) for n, p in module._parameters.items() if p is not None]
        out += [
            (dot + n, b)
            for n, b in module._buffers.items()
            if b is not None and n not in module._non_persistent_buffers_set
        ]
    return out
