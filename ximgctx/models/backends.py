"""The encoder backends: one registry, read by model construction and by loading a saved folder."""

from __future__ import annotations

from ximgctx.config import EncoderConfig
from ximgctx.models.encoder import Encoder
from ximgctx.models.hf_encoder import HFEncoder
from ximgctx.models.open_clip_encoder import ClipEncoder

__all__ = ["ENCODERS", "build_encoder"]

#: ``EncoderConfig.backend`` -> the :class:`~ximgctx.models.encoder.Encoder` that implements it
ENCODERS: dict[str, type[Encoder]] = {ClipEncoder.backend: ClipEncoder, HFEncoder.backend: HFEncoder}


def build_encoder(config: EncoderConfig) -> Encoder:
    """The encoder ``config.backend`` names: open_clip's towers or a transformers CLIP/SigLIP model."""
    return ENCODERS[config.backend](config)
