"""The ``ximgctx`` command line.

Each subcommand lives in the module that owns its job and exposes ``main(argv) -> int`` with its own
argparse parser; this file only maps names to modules, so ``ximgctx --help`` stays fast and importing one
command never imports the others.
"""

from __future__ import annotations

import importlib
import sys

from ximgctx._extras import MissingExtraError

#: subcommand -> (module with ``main(argv)``, one-line help). A plain dict: the whole CLI in one place.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("ximgctx.quickstart", "generate ContextBench, pretrain, fine-tune, evaluate (offline)"),
    "synth": ("ximgctx.contextbench.cli", "generate a ContextBench dataset"),
    "convert": ("ximgctx.adapters.cli", "convert a published dataset layout to post JSONL"),
    "govern": ("ximgctx.governance.cli", "filter and redact posts before training, with an audit report"),
    "purge": (
        "ximgctx.purge",
        "erase opted-out authors from indexes, memories, manifests; check models",
    ),
    "shard": ("ximgctx.data.shard_cli", "write posts into Parquet/WebDataset shards with images embedded"),
    "pretrain": ("ximgctx.training.cli", "contrastive domain adaptation on unlabeled image+text pairs"),
    "train": ("ximgctx.training.cli", "fine-tune a context model (LoRA) with Accelerate"),
    "evaluate": ("ximgctx.evaluation.cli", "metrics, modality ablations and calibration"),
    "predict": ("ximgctx.inference.cli", "batch predictions over a manifest"),
    "moderate": ("ximgctx.inference.cli", "allow/review/block decisions with explanations"),
    "calibrate": ("ximgctx.inference.cli", "choose moderation thresholds on a labeled set"),
    "policy": ("ximgctx.inference.policy_cli", "write a starter moderation policy from a model's tasks"),
    "index": ("ximgctx.inference.cli", "build a search index over posts"),
    "search": ("ximgctx.inference.cli", "query a search index by text, image or post"),
    "serve": ("ximgctx.serve.cli", "the moderation and search service (OpenAI-compatible /v1/moderations)"),
    "queue": (
        "ximgctx.hitl.queue.cli",
        "the review and labeling queue: labelers, items, the page, export, stats",
    ),
    "aggregate": ("ximgctx.hitl.cli", "aggregate labelers' votes into training labels"),
    "select": ("ximgctx.hitl.cli", "choose the next posts to label"),
    "memory": ("ximgctx.hitl.cli", "add labeled examples to a model's label memory"),
    "simulate-labeling": ("ximgctx.hitl.cli", "simulated labeling loop on ContextBench"),
    "bench": ("ximgctx.bench", "benchmarks that write JSON"),
}


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
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except MissingExtraError as e:  # the command's extra is not installed: one line naming it
        print(f"ximgctx {name}: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"ximgctx: command {name!r} is not available in this version", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest, command=name) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
