"""The package version: a leaf module (nothing inside ximgctx is imported here), so any layer can read it."""

__version__ = "0.2.0"
