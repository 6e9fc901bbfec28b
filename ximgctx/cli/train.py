"""``ximgctx train`` and ``ximgctx pretrain``.

Both take an experiment YAML and ``section.key=value`` overrides, and run the same way as one process,
under ``torchrun --nproc_per_node N -m ximgctx.cli train ...`` or ``accelerate launch scripts/train.py ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ximgctx.cli._args import add, existing_dir, parser

__all__ = ["build_parser", "main"]

_AFTER = """
    --overwrite empties a train.output_dir that holds another run's files first (without it such a folder is
    refused, so that a later --resume latest cannot continue the wrong run). --allow-ungoverned records in
    the model card that the posts did not pass ximgctx govern."""

_DESCRIPTIONS = {
    "train": "Fine-tune a context model (LoRA on the encoder, fusion and heads) with Accelerate.\n" + _AFTER,
    "pretrain": "Contrastive domain adaptation of the encoder on unlabeled image+text posts (CLIP loss).\n"
    + _AFTER,
}


def build_parser(command: str = "train") -> argparse.ArgumentParser:
    if command not in _DESCRIPTIONS:
        raise ValueError(f"command must be one of {sorted(_DESCRIPTIONS)}, got {command!r}")
    p = parser(command, _DESCRIPTIONS[command])
    add(p, "--config", required=True)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides with dotted keys, e.g. train.max_steps=100 data.train=posts.jsonl",
    )
    p.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue exactly from the newest complete checkpoint of train.output_dir, or a checkpoint "
        "folder",
    )
    add(p, "--overwrite")
    add(p, "--allow-ungoverned")
    if command == "train":
        p.add_argument(
            "--init-from",
            type=existing_dir,
            metavar="MODEL_DIR",
            help="warm start: begin from this saved model folder's weights (LoRA adapters, fusion, heads) "
            "instead of a random init; its architecture must be the config's (train.init_from)",
        )
        add(p, "--expect-sha256")
        add(p, "--data", repeat=True)  # data.train: manifests or shard folders, read one after another
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="STEP",
        help="stop after this optimizer step with a checkpoint (time-boxed jobs); resume later",
    )
    return p


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The ``section.key=value`` overrides a command line means: its own, then its flags' (values quoted
    as JSON, which YAML parses back to the same string or list)."""
    overrides = list(args.overrides)
    if args.allow_ungoverned:
        overrides.append("data.allow_ungoverned=true")
    if getattr(args, "data", None):
        overrides.append(f"data.train={json.dumps(args.data)}")
    if getattr(args, "init_from", None) is not None:
        overrides.append(f"train.init_from={json.dumps(args.init_from)}")
    if getattr(args, "expect_sha256", None) is not None:
        overrides.append(f"train.init_sha256={json.dumps(args.expect_sha256)}")
    return overrides


def main(argv: list[str] | None = None, command: str = "train") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    overrides = config_overrides(args)

    from ximgctx.errors import XimgctxError
    from ximgctx.training.loop import NonFiniteLossError

    # A user's problem is one line and exit status 2 (1 for a diverged run); anything else is a bug and keeps
    # its traceback.
    run = {"resume": args.resume, "stop_after": args.stop_after, "overwrite": args.overwrite}
    try:
        if command == "train":
            from ximgctx.training.finetune import train

            result = train(args.config, overrides=overrides, **run)
        else:
            from ximgctx.training.pretrain import pretrain

            result = pretrain(args.config, overrides=overrides, **run)
    except NonFiniteLossError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 1
    except XimgctxError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        where = result.model_dir if result.model_dir else "(stopped early; resume with --resume latest)"
        print(
            f"{command}: {result.steps} steps in {result.wall_s:.0f}s; model: {where}; "
            f"best {result.best_metric} at step {result.best_step}; skipped steps: {result.skipped_steps}"
        )
        print(f"data: {result.data}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
