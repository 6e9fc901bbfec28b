"""The ``ximgctx evaluate`` command (its description is :data:`DESCRIPTION`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ximgctx.cli._args import add, existing_file, existing_path, parser, run, source_constant

__all__ = ["build_parser", "main"]


DESCRIPTION = """Evaluate a model on labeled posts: metrics per task, the seven modality ablations (which of
    image, text and replies the model is allowed to see), calibration, and the ContextBench oracle ceilings
    when the data sits in a ContextBench folder. Writes report.json, report.md and PNG plots.

    With --val, temperatures and per-label thresholds are fitted on the validation posts first
    (--save-calibrated DIR keeps the calibrated model). Under torchrun / accelerate launch the posts are
    sharded across processes and every post is counted once.

      ximgctx evaluate --model DIR --data test.jsonl [--val val.jsonl] [--out DIR]

    The posts must be labeled. --oracle-split names the ContextBench split to compare with (default: the
    --data file's name)."""


def build_parser(command: str = "evaluate") -> argparse.ArgumentParser:
    keys = list(source_constant("ximgctx.evaluation.predict:ABLATION_KEYS"))
    p = parser(command, DESCRIPTION)
    add(p, "--model", required=True)
    add(p, "--expect-sha256")
    add(p, "--trust-remote-arch")
    add(p, "--device", default="auto")
    add(p, "--batch-size", default=32)
    add(p, "--data", required=True)
    p.add_argument(
        "--val",
        type=existing_path,
        help="labeled validation posts: fit temperature scaling and per-label thresholds on them",
    )
    p.add_argument(
        "--out", help="folder for report.json, report.md and plots (default: <model>/eval-<data name>)"
    )
    p.add_argument(
        "--oracle",
        type=existing_file,
        help="ContextBench oracle.json (default: the one beside --data, if any)",
    )
    p.add_argument(
        "--oracle-split", help="the oracle split to compare with (default: the --data file's name)"
    )
    p.add_argument(
        "--keys",
        nargs="+",
        default=keys,
        choices=keys,
        help="kept-modality combinations to evaluate (default: all seven)",
    )
    p.add_argument(
        "--threshold-objective",
        choices=list(source_constant("ximgctx.evaluation.calibration:THRESHOLD_OBJECTIVES")),
        default="accuracy",
        help="per-label thresholds maximise accuracy (consistent with the exact-match accuracy reported) "
        "or F1",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--save-calibrated", metavar="DIR", help="save the model with the fitted temperatures/thresholds"
    )
    return p


def _oracles(args: argparse.Namespace, split: str) -> tuple[dict | None, dict | None]:
    """The split's oracle ceilings (from ``oracle.json``) and, for ContextBench posts carrying their latents,
    the ceilings realised on these very posts."""
    from ximgctx.errors import ConfigError, InputError
    from ximgctx.evaluation.report import load_oracle

    data = Path(args.data)
    oracle_path = Path(args.oracle) if args.oracle else data.parent / "oracle.json"
    if args.oracle and not oracle_path.is_file():
        raise InputError(f"--oracle {oracle_path}: no such file")
    if not oracle_path.is_file():
        return None, None
    try:
        oracle = load_oracle(oracle_path, split)
    except KeyError as e:
        if args.oracle:
            raise ConfigError(str(e.args[0] if e.args else e)) from None
        return None, None
    from ximgctx.contextbench import sample_ceilings
    from ximgctx.data.io import load_posts

    posts = load_posts(data, on_error="skip")
    if not any(p.meta.get("latent") for p in posts):
        return oracle, None
    max_replies = int(json.loads(oracle_path.read_text(encoding="utf-8")).get("max_replies", 8))
    return oracle, sample_ceilings(posts, split, max_replies=max_replies)


def _evaluate(args: argparse.Namespace) -> int:
    from ximgctx._distributed import launched_world_size, make_accelerator, resolve_device
    from ximgctx.evaluation.report import evaluate, to_markdown
    from ximgctx.models.context_model import ContextModel

    split = args.oracle_split or Path(args.data).name.split(".")[0]
    oracle, sample_oracle = _oracles(args, split)
    accelerator = make_accelerator() if launched_world_size() > 1 else None
    device = accelerator.device if accelerator is not None else resolve_device(args.device)
    model = ContextModel.from_pretrained(
        args.model,
        device=device,
        expected_sha256=args.expect_sha256,
        trust_remote_arch=args.trust_remote_arch,
    )
    out = Path(args.out) if args.out else Path(args.model) / f"eval-{split}"
    report = evaluate(
        model,
        args.data,
        val_posts=args.val,
        oracle=oracle,
        sample_oracle=sample_oracle,
        out_dir=out,
        keys=args.keys,
        name=split,
        batch_size=args.batch_size,
        threshold_objective=args.threshold_objective,
        plots=not args.no_plots,
        accelerator=accelerator,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        accuracy = {t: e["metrics"].get("accuracy") for t, e in report["tasks"].items()}
        if args.save_calibrated:
            model.save_pretrained(args.save_calibrated, card={"Metrics": {split: accuracy}})
        print(to_markdown(report))
        print(f"wrote {out / 'report.json'}")
        print(json.dumps({"accuracy": accuracy}))
    return 0


def main(argv: list[str] | None = None, command: str = "evaluate") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(command, lambda: _evaluate(args))


if __name__ == "__main__":
    raise SystemExit(main())
