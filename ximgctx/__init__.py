"""ximgctx: multimodal context understanding of social-media posts.

A CLIP encoder (open_clip) reads a post's image, its text and the replies under it; a fusion module
combines them; heads predict what is in the image, what the post means and what it is for.
"""

__version__ = "0.1.0"

from ximgctx.config import DataConfig, EncoderConfig, FusionConfig, LoraSettings, ModelConfig, TaskSpec
from ximgctx.data.post import Post, Reply, load_posts, write_posts
from ximgctx.models.context_model import ContextModel

__all__ = [
    "ContextModel",
    "DataConfig",
    "EncoderConfig",
    "FusionConfig",
    "LoraSettings",
    "ModelConfig",
    "Post",
    "Reply",
    "TaskSpec",
    "__version__",
    "load_posts",
    "write_posts",
]
