"""``ximgctx shard``: write posts into shards with their image bytes inside, for training at scale.

    ximgctx shard --data governed.jsonl --out shards/ [--shard-format parquet|webdataset]
        [--posts-per-shard 10000]

Writes ``shard-00000.parquet`` (or ``.tar``) files, each holding up to ``--posts-per-shard`` posts with their
images embedded (kept byte for byte when the decoder's allowlist names their format, re-encoded to PNG
otherwise), and a ``shards.json`` index with every shard's record count, SHA-256 and format and the totals.
The folder is an artifact (``manifest.json``), written atomically. Only posts that passed ``ximgctx govern``
are sharded unless ``--allow-ungoverned``. The posts are streamed: memory does not grow with their number.
"""

from __future__ import annotations

import argparse
import json
import sys

from ximgctx.cli._args import add, parser, run, source_default

__all__ = ["build_parser", "main"]

_LIMITS = "ximgctx.data.images:ImageLimits"


def build_parser(command: str = "shard") -> argparse.ArgumentParser:
    p = parser(command, __doc__ or "")
    add(p, "--data", required=True)
    p.add_argument("--out", required=True, help="the shard folder to write")
    add(p, "--shard-format", default="parquet")
    add(p, "--posts-per-shard", default=10_000)
    add(p, "--image-root")
    p.add_argument(
        "--image-max-bytes",
        type=int,
        default=source_default(_LIMITS, "max_bytes"),
        help="largest image file embedded; larger ones are counted and the post written without an image"
        " (default: %(default)s)",
    )
    add(p, "--allow-ungoverned")
    add(p, "--overwrite")
    return p


def _shard(args: argparse.Namespace, command: str) -> int:
    from ximgctx.data.images import ImageLimits
    from ximgctx.data.io import load_posts
    from ximgctx.data.shard_write import write_shards
    from ximgctx.governance import require_governed

    posts = load_posts(args.data, streaming=True, image_root=args.image_root)
    posts = require_governed(posts, allow_ungoverned=args.allow_ungoverned, source=args.data, command=command)
    report = write_shards(
        posts,
        args.out,
        format=args.shard_format,
        posts_per_shard=args.posts_per_shard,
        overwrite=args.overwrite,
        inputs=[args.data, args.image_root],
        limits=ImageLimits(max_bytes=args.image_max_bytes),
        meta={"governed": not args.allow_ungoverned},
    )
    summary = {
        "out": str(args.out),
        "posts": report.posts,
        "shards": len(report.shards),
        "bytes": sum(e["bytes"] for e in report.shards),
        "images_kept": report.images_kept,
        "images_reencoded": report.images_reencoded,
        "problems": dict(report.problems),
    }
    print(json.dumps(summary, sort_keys=True))
    if report.problems:
        print(f"ximgctx {command}: posts with image problems: {dict(report.problems)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, command: str = "shard") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    return run(command, lambda: _shard(args, command))
