"""ContextBench: synthetic posts whose meaning and intent need image, text and replies together.

``generate(out_dir, seed=...)`` writes a dataset folder (JSONL manifests, PNG images, ``oracle.json`` with
the exact best-possible accuracy for every subset of modalities, and a README with the rules).
``TASKS`` are the task specs the rest of the library builds ``TaskSpec(**d)`` from. The rules that decide
every label are the tables ``MEANING`` and ``INTENT`` in :mod:`ximgctx.contextbench._rules`.
"""

from ximgctx.contextbench._generate import (
    IMAGE_SIZE,
    MAX_REPLIES,
    N_COMPOSITIONAL,
    N_TEST,
    N_TRAIN,
    N_VAL,
    ContextBenchConfig,
    generate,
    sample_post,
)
from ximgctx.contextbench._oracle import VERSION, ceilings, sample_ceilings
from ximgctx.contextbench._rules import INTENT, MEANING, SPLITS, TASKS

__all__ = [
    "IMAGE_SIZE",
    "INTENT",
    "MAX_REPLIES",
    "MEANING",
    "N_COMPOSITIONAL",
    "N_TEST",
    "N_TRAIN",
    "N_VAL",
    "SPLITS",
    "ContextBenchConfig",
    "VERSION",
    "TASKS",
    "ceilings",
    "generate",
    "sample_ceilings",
    "sample_post",
]
