"""``ximgctx synth``: generate a ContextBench dataset folder."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from ximgctx.cli import _args as _cli

__all__ = ["build_parser", "main"]

_CONFIG = "ximgctx.contextbench._generate:ContextBenchConfig"

DESCRIPTION = """
Generate ContextBench: synthetic posts whose meaning and intent need image, text and replies together,
with the exact best-possible accuracy for every subset of modalities (oracle.json).

  ximgctx synth --out data/cb --seed 0 [--n-train 4000 ...]
"""


def build_parser(command: str = "synth") -> argparse.ArgumentParser:
    p = _cli.parser(command, DESCRIPTION)
    p.add_argument("--out", required=True, help="dataset folder to write (created if missing)")
    _cli.add_dataclass_args(p, _CONFIG)
    return p


def main(argv: list[str] | None = None, command: str = "synth") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    return _cli.run(command, lambda: _synth(args))


def _synth(args: argparse.Namespace) -> int:
    from ximgctx.contextbench._generate import ContextBenchConfig, generate

    config = _cli.dataclass_from_args(ContextBenchConfig, args)
    result = generate(args.out, **asdict(config))
    full = "+".join(result["modalities"])
    test = result["ceilings"]["test"]
    print(f"wrote {sum(result['splits'].values())} posts to {args.out}")
    for task, row in test.items():
        print(
            f"  {task:8s} test ceiling: image {row['image']:.3f}  text {row['text']:.3f}  "
            f"image+text {row['image+text']:.3f}  all {row[full]:.3f}"
        )
    failed = [c for c in result["checks"] if not c["ok"]]
    for c in failed:
        print(f"  check failed: {c['task']} {c['modalities']} {c['op']} {c['limit']} (got {c['value']:.3f})")
    return 0
