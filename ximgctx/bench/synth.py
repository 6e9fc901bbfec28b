"""ContextBench generation speed: time ``contextbench.generate`` for N posts (default 10,000 at 64 px).

All posts go to one split, written to a temporary folder, so the figure is the cost of sampling, rendering
and writing posts (PNG + JSONL); the oracle (pure enumeration, about a second) is timed apart.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ximgctx.contextbench import _generate, _oracle

    with tempfile.TemporaryDirectory(prefix="ximgctx-bench-synth-") as tmp:
        start = time.perf_counter()
        _generate.write_split(
            Path(tmp),
            "train",
            args.n,
            seed=args.seed,
            image_size=args.image_size,
            label_noise=0.0,
            max_replies=_generate.MAX_REPLIES,
        )
        posts_s = time.perf_counter() - start
        start = time.perf_counter()
        _oracle.oracle(seed=args.seed, label_noise=0.0, max_replies=_generate.MAX_REPLIES)
        oracle_s = time.perf_counter() - start
        image_bytes = sum(p.stat().st_size for p in (Path(tmp) / "images" / "train").iterdir())
    return {
        "n_posts": args.n,
        "image_size": args.image_size,
        "cpu_count": os.cpu_count(),
        "processes": 1,
        "seconds": round(posts_s, 3),
        "posts_per_second": round(args.n / posts_s, 1) if posts_s > 0 else None,
        "oracle_seconds": round(oracle_s, 3),
        "mean_image_bytes": round(image_bytes / max(args.n, 1)),
        "target": "10,000 posts at 64 px in under 60 s on 2 cores",
    }
