"""The ``ximgctx`` command line: one module per command group in this package.

Every command module exposes ``build_parser(command)`` and ``main(argv, command) -> int``. At top level it
imports only the standard library and :mod:`ximgctx.cli._args`; the library (torch and the rest) is imported
inside the command's body, after the arguments are parsed and the input files checked, so ``--help`` and
argument errors answer at once. This file only maps names to modules.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator

from ximgctx._extras import MissingExtraError

#: subcommand -> (module with ``main(argv)``, one-line help). A plain dict: the whole CLI in one place.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": (
        "ximgctx.cli.quickstart",
        "generate ContextBench, pretrain, fine-tune, evaluate (offline)",
    ),
    "synth": ("ximgctx.cli.synth", "generate a ContextBench dataset"),
    "convert": ("ximgctx.cli.convert", "convert a published dataset layout to post JSONL"),
    "govern": ("ximgctx.cli.govern", "filter and redact posts before training, with an audit report"),
    "purge": (
        "ximgctx.cli.purge",
        "erase opted-out authors from indexes, memories, manifests; check models",
    ),
    "shard": ("ximgctx.cli.shard", "write posts into Parquet/WebDataset shards with images embedded"),
    "pretrain": ("ximgctx.cli.train", "contrastive domain adaptation on unlabeled image+text pairs"),
    "train": ("ximgctx.cli.train", "fine-tune a context model (LoRA) with Accelerate"),
    "evaluate": ("ximgctx.cli.evaluate", "metrics, modality ablations and calibration"),
    "predict": ("ximgctx.cli.inference", "batch predictions over a manifest"),
    "moderate": ("ximgctx.cli.inference", "allow/review/block decisions with explanations"),
    "calibrate": ("ximgctx.cli.inference", "choose moderation thresholds on a labeled set"),
    "policy": ("ximgctx.cli.policy", "write a starter moderation policy from a model's tasks"),
    "index": ("ximgctx.cli.inference", "build a search index over posts"),
    "search": ("ximgctx.cli.inference", "query a search index by text, image or post"),
    "serve": ("ximgctx.cli.serve", "the moderation and search service (OpenAI-compatible /v1/moderations)"),
    "queue": (
        "ximgctx.cli.queue",
        "the review and labeling queue: labelers, items, the page, export, stats",
    ),
    "loop": (
        "ximgctx.cli.loop",
        "the learning loop: retrain on new labels, gate, register, promote, roll back",
    ),
    "aggregate": ("ximgctx.cli.hitl", "aggregate labelers' votes into training labels"),
    "select": ("ximgctx.cli.hitl", "choose the next posts to label"),
    "memory": ("ximgctx.cli.hitl", "add labeled examples to a model's label memory"),
    "simulate-labeling": ("ximgctx.cli.hitl", "simulated labeling loop on ContextBench"),
    "bench": ("ximgctx.cli.bench", "benchmarks that write JSON"),
}


def command_parsers() -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    """Every command's and sub-command's argv prefix (``["queue", "serve"]``) and parser: what ``--help``
    answers for, the flag matrix test and ``ximgctx bench cli`` walk."""

    def walk(
        prefix: list[str], p: argparse.ArgumentParser
    ) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
        yield prefix, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk([*prefix, name], sub)

    for name, (module_name, _) in COMMANDS.items():
        yield from walk([name], importlib.import_module(module_name).build_parser(name))


def _usage() -> str:
    lines = ["usage: ximgctx <command> [options]", "", "commands:"]
    width = max(len(c) for c in COMMANDS)
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'ximgctx <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from ximgctx import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ximgctx: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest, command=name) or 0)
    except MissingExtraError as e:  # the command's extra is not installed: one line naming it
        print(f"ximgctx {name}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
