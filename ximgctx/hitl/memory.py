"""The label memory lives in :mod:`ximgctx.inference.memory` (a :class:`~ximgctx.Predictor` reads it); it is
re-exported here, where the human-in-the-loop tools that fill it live."""

from ximgctx.inference.memory import LabelMemory, LabelMemoryError, MemoryConfig, default_memory_dir

__all__ = ["LabelMemory", "LabelMemoryError", "MemoryConfig", "default_memory_dir"]
