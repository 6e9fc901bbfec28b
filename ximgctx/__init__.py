"""ximgctx: multimodal context understanding of social-media posts.

A CLIP encoder (open_clip) reads a post's image, its text and the replies under it; a fusion module
combines them; heads predict what is in the image, what the post means and what it is for.

Configs and the post record import eagerly; everything that needs torch (the model, inference, training,
evaluation, governance, human-in-the-loop) loads on first use, so ``import ximgctx`` and the CLI's help
stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from ximgctx.config import (
    DataConfig,
    EncoderConfig,
    FusionConfig,
    LoraSpec,
    ModelConfig,
    TaskSpec,
)
from ximgctx.data.post import Post, Reply, load_posts, write_posts
from ximgctx.errors import ArtifactError, ConfigError, InputError, OutputError, XimgctxError

#: public name -> module that defines it, imported on first access (PEP 562).
_LAZY: dict[str, str] = {
    "ContextModel": "ximgctx.models.context_model",
    "Predictor": "ximgctx.inference",
    "Moderator": "ximgctx.inference",
    "ModerationPolicy": "ximgctx.inference",
    "SearchIndex": "ximgctx.inference",
    "govern": "ximgctx.governance",
    "GovernancePolicy": "ximgctx.governance",
    "aggregate_votes": "ximgctx.hitl",
    "select_for_labeling": "ximgctx.hitl",
    "train": "ximgctx.training",
    "pretrain": "ximgctx.training",
    "evaluate": "ximgctx.evaluation",
    "contextbench": "ximgctx.contextbench",
    "trust_remote_arch": "ximgctx.models.encoder",
}

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataConfig",
    "EncoderConfig",
    "FusionConfig",
    "InputError",
    "LoraSpec",
    "ModelConfig",
    "OutputError",
    "Post",
    "Reply",
    "TaskSpec",
    "XimgctxError",
    "__version__",
    "load_posts",
    "write_posts",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ximgctx' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"ximgctx.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
