"""``ximgctx quickstart``: the whole road on a laptop, offline, in minutes (the pipeline itself is
:mod:`ximgctx.quickstart`)."""

from __future__ import annotations

import argparse
import logging
import sys

from ximgctx.cli._args import add, parser, source_doc

__all__ = ["build_parser", "main"]


def build_parser(command: str = "quickstart") -> argparse.ArgumentParser:
    p = parser(command, source_doc("ximgctx.quickstart").split("\n\n")[0])
    p.add_argument("--out", help="output folder (default: runs/quickstart)")
    add(p, "--config")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.epochs=3 contextbench.n_train=2000"
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes: the whole pipeline in under a minute (checks the wiring, not the accuracy)",
    )
    return p


def main(argv: list[str] | None = None, command: str = "quickstart") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # open_clip warns on every random initialisation; here that is the plan (the encoder is trained from
    # scratch, and loading a saved model first builds a random skeleton), so the warning is only noise.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: "No pretrained weights loaded" not in record.getMessage())
    from ximgctx.errors import XimgctxError
    from ximgctx.quickstart import SMOKE_OVERRIDES, load_quickstart_config, run

    try:
        cfg = load_quickstart_config(args.config, [*(SMOKE_OVERRIDES if args.smoke else ()), *args.overrides])
    except XimgctxError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    try:
        run(cfg, out=args.out, quiet=args.quiet)
    except XimgctxError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    return 0
