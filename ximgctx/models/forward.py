"""The one forward pass over a batch that evaluation and inference both run.

:func:`ximgctx.evaluation.predict.predict` (validation, ``evaluate``, ablations; gathered across processes)
and :meth:`ximgctx.inference.predictor.Predictor.forward` (moderation, search, batch prediction, the
service) each call :func:`run_forward`, so the kept-modality masking, the gradient mode and autocast cannot
drift apart between the metrics a model is judged by and the scores it serves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from ximgctx.models.modalities import ALL, Modalities

if TYPE_CHECKING:
    from ximgctx.data.processor import PostBatch
    from ximgctx.models.context_model import ContextOutput, TextEncoder

__all__ = ["run_forward"]


def run_forward(
    model: torch.nn.Module,
    batch: PostBatch,
    modalities: Modalities | str | Iterable[str] = ALL,
    *,
    dtype: torch.dtype = torch.float32,
    text_encoder: TextEncoder | None = None,
) -> ContextOutput:
    """``model(batch)`` without gradients, reading only the kept ``modalities`` (a
    :class:`~ximgctx.models.modalities.Modalities`, ``"image+text"`` or ``["image", "text"]``); the others are
    replaced by their learned null embeddings, and the encoder skips them.

    Args:
        model: a ``ContextModel``, or one wrapped by ``accelerator.prepare`` (which autocasts by itself).
        batch: a collated batch on the model's device.
        modalities: the modalities the model may read.
        dtype: autocast to this dtype on the batch's device; float32 runs without autocast.
        text_encoder: replaces the encoder's ``encode_text`` for post texts and replies (inference's cache).
    """
    keep = Modalities.parse(modalities)
    cast: contextlib.AbstractContextManager[object] = (
        contextlib.nullcontext()
        if dtype == torch.float32
        else torch.autocast(device_type=batch.pixels.device.type, dtype=dtype)
    )
    with torch.no_grad(), cast:
        if text_encoder is None:
            return model(batch, drop=keep.dropped)
        return model(batch, drop=keep.dropped, text_encoder=text_encoder)
