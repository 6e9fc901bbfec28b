"""``ximgctx policy init --model DIR --out policy.yaml``: a starter moderation policy from a model's tasks."""

from __future__ import annotations

import argparse
import sys

from ximgctx.cli._args import add

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
Write a starter moderation policy for a model: every label of its whole-post tasks becomes a review-only
category (review: 0.5, block: null), mapped onto OpenAI's moderation categories where the label's name says
which. Choose real thresholds on labeled data with `ximgctx calibrate`.

  ximgctx policy init --model runs/x/best --out configs/moderation/mine.yaml
"""


def build_parser(command: str = "policy") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"ximgctx {command}",
        description="Moderation policies for a model: 'policy init' writes a starter policy from its "
        "tasks.\n\n"
        "  ximgctx policy init --model runs/x/best --out configs/moderation/mine.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", required=True)
    init = sub.add_parser(
        "init",
        help="write a starter policy from a model's tasks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add(init, "--model", required=True)
    add(init, "--expect-sha256")
    add(init, "--trust-remote-arch")
    init.add_argument("--out", required=True, help="policy YAML to write ('-' for stdout)")
    init.add_argument("--review", type=float, default=0.5, help="review threshold of every category")
    return p


def main(argv: list[str] | None = None, command: str = "policy") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    from ximgctx.errors import XimgctxError

    try:
        import yaml

        from ximgctx._artifacts import atomic_output
        from ximgctx.inference.policy_init import starter_policy
        from ximgctx.models.context_model import ContextModel

        model = ContextModel.from_pretrained(
            args.model, expected_sha256=args.expect_sha256, trust_remote_arch=args.trust_remote_arch
        )
        policy = starter_policy(model, review=args.review)
        header = (
            f"# ximgctx moderate --model {args.model} --data posts.jsonl --out decisions.jsonl --policy "
            f"{args.out}\n"
            "# Starter policy written by `ximgctx policy init`: every category is review-only (block: "
            "null).\n"
            "# Choose thresholds on labeled data: ximgctx calibrate --model DIR --data val.jsonl --policy "
            "THIS\n"
        )
        text = header + yaml.safe_dump(policy.to_dict(), sort_keys=False, allow_unicode=True, width=110)
        if args.out == "-":
            sys.stdout.write(text)
        else:
            with atomic_output(args.out) as tmp:
                tmp.write_text(text, encoding="utf-8")
            print(f"wrote {len(policy.categories)} review-only categories to {args.out}", file=sys.stderr)
    except XimgctxError as e:
        print(f"ximgctx policy: {e}", file=sys.stderr)
        return 2
    return 0
