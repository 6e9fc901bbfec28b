"""Model components: encoder, LoRA, fusion, heads and the full context model."""

from ximgctx.models.context_model import ContextModel, ContextOutput, Embeddings, LossOutput
from ximgctx.models.encoder import ClipEncoder, PretrainedWeightsError
from ximgctx.models.fusion import FUSIONS

__all__ = [
    "FUSIONS",
    "ClipEncoder",
    "ContextModel",
    "ContextOutput",
    "Embeddings",
    "LossOutput",
    "PretrainedWeightsError",
]
