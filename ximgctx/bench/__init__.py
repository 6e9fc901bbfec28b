"""Benchmarks: ``ximgctx bench <name> --out FILE.json`` (the flags live in :mod:`ximgctx.cli.bench`).

Each benchmark measures ratios side by side in one run and writes JSON with the environment (torch
version, threads, dtype) next to the figures. Speed and memory targets live here, never in unit tests.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

#: benchmark name -> module exposing ``run(args) -> dict``.
BENCHMARKS: dict[str, str] = {
    "synth": "ximgctx.bench.synth",
    "streaming": "ximgctx.bench.streaming",
    "inference": "ximgctx.bench.inference",
    "search": "ximgctx.bench.search",
    "serve": "ximgctx.bench.serve",
    "latency": "ximgctx.bench.latency",
    "dataloader": "ximgctx.bench.dataloader",
    "gpu": "ximgctx.bench.gpu",
    "cli": "ximgctx.bench.startup",
    "govern": "ximgctx.bench.govern",
    "drift": "ximgctx.bench.drift",
}


def environment() -> dict[str, Any]:
    """The facts a reader needs to compare two benchmark files."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "machine": platform.machine(),
    }


def in_fresh_process(function: str, *args: Any) -> Any:
    """``module:function(*args)`` in a new interpreter (the same imports for every figure, nothing left over
    from the caller), its JSON result returned; ``args`` are passed as strings."""
    import subprocess

    module, name = function.split(":")
    code = f"import json, sys; from {module} import {name}; print(json.dumps({name}(*sys.argv[1:])))"
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{function}{tuple(map(str, args))} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_result(result: dict[str, Any], out: str | Path | None) -> None:
    text = json.dumps(result, indent=2, sort_keys=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print(text)
