"""``ximgctx evaluate --model DIR --data FILE [--val FILE] [--out DIR]``.

Writes ``report.json``, ``report.md`` and PNG plots. With ``--val``, temperatures and per-label thresholds
are fitted on the validation posts first (``--save-calibrated DIR`` keeps the calibrated model). When the
data sits in a ContextBench folder (``oracle.json`` beside ``test.jsonl``), the oracle ceilings of that split
are reported next to every ablation. Under ``torchrun``/``accelerate launch`` the posts are sharded
across processes and every post is counted once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ximgctx._distributed import launched_world_size, make_accelerator
from ximgctx.evaluation.calibration import THRESHOLD_OBJECTIVES
from ximgctx.evaluation.predict import ABLATION_KEYS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ximgctx evaluate", description="Metrics, modality ablations and calibration."
    )
    p.add_argument(
        "--model", required=True, help="a folder written by save_pretrained (e.g. runs/quickstart/model)"
    )
    p.add_argument(
        "--data", required=True, help="labeled posts to evaluate (.jsonl, .parquet or a datasets folder)"
    )
    p.add_argument(
        "--val", help="labeled validation posts: fit temperature scaling and per-label thresholds on them"
    )
    p.add_argument(
        "--out", help="folder for report.json, report.md and plots (default: <model>/eval-<data name>)"
    )
    p.add_argument("--oracle", help="ContextBench oracle.json (default: the one beside --data, if any)")
    p.add_argument("--split", help="the oracle split to compare with (default: the --data file's name)")
    p.add_argument(
        "--keys",
        nargs="+",
        default=list(ABLATION_KEYS),
        choices=list(ABLATION_KEYS),
        help="kept-modality combinations to evaluate (default: all seven)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--threshold-objective",
        choices=list(THRESHOLD_OBJECTIVES),
        default="accuracy",
        help="per-label thresholds maximise accuracy (consistent with the exact-match accuracy reported) or F1",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--save-calibrated", metavar="DIR", help="save the model with the fitted temperatures/thresholds"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p


def main(argv: list[str] | None = None, command: str = "evaluate") -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import torch

    from ximgctx.evaluation.report import evaluate, load_oracle, to_markdown
    from ximgctx.models.context_model import ContextModel

    data = Path(args.data)
    oracle = None
    oracle_path = Path(args.oracle) if args.oracle else data.parent / "oracle.json"
    split = args.split or data.name.split(".")[0]
    if oracle_path.is_file():
        try:
            oracle = load_oracle(oracle_path, split)
        except KeyError as e:
            if args.oracle:
                print(f"ximgctx evaluate: {e}", file=sys.stderr)
                return 2
    accelerator = None
    if launched_world_size() > 1:
        accelerator = make_accelerator()
        device = accelerator.device
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model = ContextModel.from_pretrained(args.model, device=device)
    except Exception as e:  # a missing folder or a failed checksum: say which, do not show a traceback
        print(f"ximgctx evaluate: cannot load {args.model}: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.model) / f"eval-{split}"
    sample_oracle = None
    if (
        oracle is not None
    ):  # ContextBench posts carry their latents: the ceilings realised on these very posts
        from ximgctx.contextbench import sample_ceilings
        from ximgctx.data.post import load_posts

        posts = load_posts(data, on_error="skip")
        if any(p.meta.get("latent") for p in posts):
            max_replies = int(json.loads(oracle_path.read_text(encoding="utf-8")).get("max_replies", 8))
            sample_oracle = sample_ceilings(posts, split, max_replies=max_replies)
    report = evaluate(
        model,
        data,
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
    if rank == 0:
        if args.save_calibrated:
            model.save_pretrained(
                args.save_calibrated,
                card={
                    "Metrics": {split: {t: e["metrics"].get("accuracy") for t, e in report["tasks"].items()}}
                },
            )
        print(to_markdown(report))
        print(f"wrote {out / 'report.json'}")
        summary = {t: e["metrics"].get("accuracy") for t, e in report["tasks"].items()}
        print(json.dumps({"accuracy": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
