"""ximgctx: multimodal context understanding of social-media posts."""

__version__ = "0.1.0"
