"""Benchmarks: ``ximgctx bench <name> --out FILE.json``.

Each benchmark measures ratios side by side in one run and writes JSON with the environment (torch
version, threads, dtype) next to the figures. Speed and memory targets live here, never in unit tests.
"""

from __future__ import annotations

import importlib
import inspect
import json
import platform
import sys
from pathlib import Path
from typing import Any

#: benchmark name -> module exposing ``add_arguments(parser)`` and ``run(args) -> dict``.
BENCHMARKS: dict[str, str] = {
    "synth": "ximgctx.bench.synth",
    "streaming": "ximgctx.bench.streaming",
    "inference": "ximgctx.bench.inference",
    "search": "ximgctx.bench.search",
    "serve": "ximgctx.bench.serve",
    "dataloader": "ximgctx.bench.dataloader",
    "gpu": "ximgctx.bench.gpu",
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


def _usage() -> str:
    from ximgctx._cli import plain

    lines = [
        "usage: ximgctx bench <benchmark> [options] --out FILE.json",
        "",
        inspect.cleandoc(__doc__ or "").split("\n\n")[1],
        "",
        "benchmarks:",
    ]
    width = max(len(n) for n in BENCHMARKS)
    for name, module_name in BENCHMARKS.items():
        doc = inspect.getdoc(importlib.import_module(module_name)) or ""
        lines.append(f"  {name:<{width}}  {plain(doc.split(chr(10))[0])}")
    lines += ["", "Run 'ximgctx bench <benchmark> --help' for its options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None, command: str = "bench") -> int:
    from ximgctx._cli import parser as make_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        unknown = bool(argv) and argv[0] not in ("-h", "--help")
        print(_usage(), file=sys.stderr if unknown or not argv else sys.stdout)
        return 0 if argv and not unknown else 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    parser = make_parser(f"bench {argv[0]}", inspect.getdoc(module) or "")
    parser.add_argument("--out", default=None, help="write the JSON result here (also printed)")
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    from ximgctx.errors import XimgctxError

    try:
        result = {"benchmark": argv[0], "environment": environment(), **module.run(args)}
    except XimgctxError as e:  # a benchmark that cannot run here (no GPU, bad sizes): one line, no traceback
        print(f"ximgctx bench {argv[0]}: {e}", file=sys.stderr)
        return 2
    write_result(result, args.out)
    return 0
