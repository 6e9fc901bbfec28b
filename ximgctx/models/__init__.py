"""Model components: encoder, LoRA, fusion, heads and the full context model."""

from ximgctx.models.context_model import ContextModel, ContextOutput, Embeddings, LossOutput
from ximgctx.models.encoder import PretrainedWeightsError
from ximgctx.models.fusion import FUSIONS
from ximgctx.models.open_clip_encoder import ClipEncoder

__all__ = [
    "FUSIONS",
    "ClipEncoder",
    "ContextModel",
    "ContextOutput",
    "Embeddings",
    "LossOutput",
    "PretrainedWeightsError",
]
