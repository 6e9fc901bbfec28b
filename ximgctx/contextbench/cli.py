"""``ximgctx synth``: generate a ContextBench dataset folder."""

from __future__ import annotations

import argparse

from ximgctx.contextbench import _generate as G


def build_parser(command: str = "synth") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"ximgctx {command}", description=__doc__)
    p.add_argument("--out", required=True, help="dataset folder to write (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes byte-identical files")
    p.add_argument("--n-train", type=int, default=G.N_TRAIN, help="posts in train.jsonl")
    p.add_argument("--n-val", type=int, default=G.N_VAL, help="posts in val.jsonl")
    p.add_argument("--n-test", type=int, default=G.N_TEST, help="posts in test.jsonl")
    p.add_argument(
        "--n-compositional",
        type=int,
        default=G.N_COMPOSITIONAL,
        help="posts in compositional.jsonl (image-text combinations unseen in training)",
    )
    p.add_argument("--image-size", type=int, default=G.IMAGE_SIZE, help="image side in pixels")
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="probability that a label is replaced by another value (the oracle accounts for it)",
    )
    p.add_argument(
        "--max-replies", type=int, default=G.MAX_REPLIES, help="at most this many replies per post"
    )
    return p


def main(argv: list[str] | None = None, command: str = "synth") -> int:
    args = build_parser(command).parse_args(argv)
    try:
        result = G.generate(
            args.out,
            seed=args.seed,
            n_train=args.n_train,
            n_val=args.n_val,
            n_test=args.n_test,
            n_compositional=args.n_compositional,
            image_size=args.image_size,
            label_noise=args.label_noise,
            max_replies=args.max_replies,
        )
    except ValueError as e:
        print(f"ximgctx {command}: {e}")
        return 2
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
