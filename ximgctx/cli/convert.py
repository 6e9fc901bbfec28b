"""The ``ximgctx convert`` command (its description is :data:`DESCRIPTION`)."""

from __future__ import annotations

import argparse
import sys

from ximgctx.cli._args import existing_dir, parser

__all__ = ["build_parser", "main"]

DESCRIPTION = """Convert a published dataset, in the layout its authors publish, to a post manifest (JSONL, or
    Parquet by extension): Hateful Memes, MMHS150K, Memotion, Fakeddit, CrisisMMD, MMSD, MultiOFF. Rows that
    cannot become posts are skipped and listed with file and row.

      ximgctx convert --list
      ximgctx convert --format hateful_memes --dataset-dir ~/data/hateful_memes --out data/hm.jsonl
          [--split train]"""


def build_parser(command: str = "convert") -> argparse.ArgumentParser:
    from ximgctx.adapters import ADAPTERS  # the adapter registry: plain modules, no torch or numpy

    p = parser(command, DESCRIPTION)
    p.add_argument("--list", action="store_true", help="list the dataset formats and exit")
    p.add_argument("--format", choices=sorted(ADAPTERS), help="dataset format (see --list)")
    p.add_argument("--dataset-dir", type=existing_dir, help="the dataset folder, as downloaded")
    p.add_argument("--out", help="output manifest (.jsonl, or .parquet; '-': JSONL on stdout)")
    p.add_argument("--split", default=None, help="convert only this split (default: every split present)")
    p.add_argument(
        "--keep-missing-images",
        action="store_true",
        help="keep rows whose image file is missing, with no image (default: skip them)",
    )
    p.add_argument("--max-problems", type=int, default=200, help="print at most this many problems")
    return p


def main(argv: list[str] | None = None, command: str = "convert") -> int:
    p = build_parser(command)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from ximgctx.adapters import ADAPTERS, AdapterError, get_adapter, write_manifest
    from ximgctx.data.io import WriteReport
    from ximgctx.errors import OutputError

    if args.list:
        width = max(len(n) for n in ADAPTERS)
        for name, mod in ADAPTERS.items():
            print(f"{name:<{width}}  {mod.DESCRIPTION}  [splits: {', '.join(mod.SPLITS)}]")
        return 0
    missing = [
        f"--{a.replace('_', '-')}" for a in ("format", "dataset_dir", "out") if getattr(args, a) is None
    ]
    if missing:
        p.error(f"{', '.join(missing)} required (or --list)")
    adapter = get_adapter(args.format)
    try:
        result = adapter.convert(
            args.dataset_dir, split=args.split, missing_image="keep" if args.keep_missing_images else "skip"
        )
    except AdapterError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    report = WriteReport()
    try:
        n = write_manifest(result.posts, args.out, inputs=result.files, report=report)
    except OutputError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    say = sys.stderr if args.out == "-" else sys.stdout  # stdout carries the posts then
    lines = result.summary().splitlines()
    head, problems = lines[0], lines[1:]
    print(head, file=say)
    for line in problems[: args.max_problems]:
        print(line, file=say)
    if len(problems) > args.max_problems:
        print(f"  ... and {len(problems) - args.max_problems} more problems", file=say)
    if report.problems:
        print(f"  non-finite numbers written as null: {report.counts()}", file=say)
    print(f"wrote {n} posts to {args.out}", file=say)
    return 0
