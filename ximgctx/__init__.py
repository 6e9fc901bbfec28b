"""ximgctx: multimodal context understanding of social-media posts.

A CLIP encoder (open_clip) reads a post's image, its text and the replies under it; a fusion module
combines them; heads predict what is in the image, what the post means and what it is for.

Only the version and the errors import eagerly; every other public name loads its module on first use
(PEP 562), so ``import ximgctx``, importing any one submodule, and the CLI's ``--help`` stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ximgctx.errors import ArtifactError, ConfigError, InputError, OutputError, XimgctxError
from ximgctx.version import __version__

#: public name -> module that defines it, imported on first access (PEP 562).
_LAZY: dict[str, str] = {
    "DataConfig": "ximgctx.config",
    "EncoderConfig": "ximgctx.config",
    "FusionConfig": "ximgctx.config",
    "LoraSpec": "ximgctx.config",
    "ModelConfig": "ximgctx.config",
    "TaskSpec": "ximgctx.config",
    "Post": "ximgctx.data.record",
    "Reply": "ximgctx.data.record",
    "load_posts": "ximgctx.data.io",
    "write_posts": "ximgctx.data.io",
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
    "trust_remote_arch": "ximgctx.models.open_clip_encoder",
}

if TYPE_CHECKING:  # the names as a type checker and an IDE see them
    from ximgctx import contextbench
    from ximgctx.config import DataConfig, EncoderConfig, FusionConfig, LoraSpec, ModelConfig, TaskSpec
    from ximgctx.data.io import load_posts, write_posts
    from ximgctx.data.record import Post, Reply
    from ximgctx.evaluation import evaluate
    from ximgctx.governance import GovernancePolicy, govern
    from ximgctx.hitl import aggregate_votes, select_for_labeling
    from ximgctx.inference import ModerationPolicy, Moderator, Predictor, SearchIndex
    from ximgctx.models.context_model import ContextModel
    from ximgctx.models.open_clip_encoder import trust_remote_arch
    from ximgctx.training.finetune import train
    from ximgctx.training.pretrain import pretrain

__all__ = [
    "ArtifactError",
    "ConfigError",
    "ContextModel",
    "DataConfig",
    "EncoderConfig",
    "FusionConfig",
    "GovernancePolicy",
    "InputError",
    "LoraSpec",
    "ModelConfig",
    "ModerationPolicy",
    "Moderator",
    "OutputError",
    "Post",
    "Predictor",
    "Reply",
    "SearchIndex",
    "TaskSpec",
    "XimgctxError",
    "__version__",
    "aggregate_votes",
    "contextbench",
    "evaluate",
    "govern",
    "load_posts",
    "pretrain",
    "select_for_labeling",
    "train",
    "trust_remote_arch",
    "write_posts",
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
