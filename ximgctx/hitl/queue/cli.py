"""``ximgctx queue``: the review and labeling queue (database, labelers, items, the served page, export)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ximgctx._extras import require
from ximgctx.errors import XimgctxError

__all__ = ["main"]

DESCRIPTION = """\
The review and labeling queue. Votes live in SQLite (a file, the default) or PostgreSQL (--db URL).

  ximgctx queue labeler add alice --db q.sqlite --key-file queue.key      # prints alice's login token once
  ximgctx queue add --data picks.jsonl --source select --model runs/x/best --db q.sqlite --key-file queue.key
  ximgctx queue serve --model runs/x/best --db q.sqlite --key-file queue.key --api-key-file keys.txt \\
      --memory runs/x/best.memory                                          # page at http://127.0.0.1:8000/queue
  ximgctx queue export --out labels.jsonl --db q.sqlite --key-file queue.key
  ximgctx queue stats --db q.sqlite --key-file queue.key --out -

The key (--key-file or XIMGCTX_QUEUE_KEY, at least 16 bytes) turns labeler names and authors into keyed
digests; keep it with the operator. 'queue serve' is 'ximgctx serve' with the queue mounted.
"""


_HELP = {
    "labeler": "add (or give a new token to) or revoke a labeler",
    "add": "queue governed posts from a manifest",
    "serve": "the service with the labeling page (ximgctx serve's options)",
    "export": "aggregate the votes into a governed training manifest",
    "stats": "throughput, agreement, labeler reliability, gold accuracy (JSON)",
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="queue.sqlite", help="SQLite file or postgresql://user@host/db URL")
    p.add_argument("--key-file", default=None, help="the queue's HMAC key (else XIMGCTX_QUEUE_KEY)")
    p.add_argument("--overlap", type=int, default=3, help="distinct labelers per item")
    p.add_argument("--lease-s", type=float, default=600.0, help="seconds before an unvoted lease expires")
    p.add_argument("--gold-rate", type=float, default=0.1, help="share of leases given to gold items")
    p.add_argument("--governance", default=None, help="governance policy YAML (default: the shipped one)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ximgctx queue", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="action", required=True)
    lab = sub.add_parser("labeler", help=_HELP["labeler"])
    lab.add_argument("op", choices=["add", "revoke"])
    lab.add_argument("name", help="the labeler's account name (stored as a keyed digest only)")
    add = sub.add_parser("add", help=_HELP["add"])
    add.add_argument("--data", required=True, help="posts (JSONL/Parquet manifest)")
    add.add_argument(
        "--source", default="file", choices=["review", "select", "file"], help="where they come from"
    )
    add.add_argument("--gold", action="store_true", help="the posts' own labels are gold answers")
    add.add_argument("--model", default=None, help="model folder: its tasks are asked and its scores stored")
    serve = sub.add_parser("serve", help=_HELP["serve"])
    serve.add_argument("--model", required=True, help="model folder")
    serve.add_argument("--memory", default=None, help="label memory folder every vote is added to")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=int, default=8000, help="TCP port")
    serve.add_argument("--api-key-file", default=None, help="operators' API keys (one per line)")
    serve.add_argument("--no-auth", action="store_true", help="no operator keys (loopback only)")
    exp = sub.add_parser("export", help=_HELP["export"])
    exp.add_argument("--out", required=True, help="JSONL manifest (images go to OUT.images/)")
    exp.add_argument(
        "--method", default="soft", choices=["soft", "dawid_skene", "majority"], help="aggregation"
    )
    stats = sub.add_parser("stats", help=_HELP["stats"])
    stats.add_argument("--out", default="-", help="JSON file, or - for stdout")
    examples = [
        line.strip() for line in DESCRIPTION.splitlines() if line.strip().startswith("ximgctx queue ")
    ]
    for s, what in ((lab, "labeler"), (add, "add"), (serve, "serve"), (exp, "export"), (stats, "stats")):
        _common(s)
        s.formatter_class = argparse.RawDescriptionHelpFormatter
        shown = [e for e in examples if e.startswith(f"ximgctx queue {what} ")]
        s.description = f"ximgctx queue {what}: {_HELP[what]}." + "".join(f"\n\n  {e}" for e in shown)
    return p


def _store(args: argparse.Namespace, tasks=None):  # noqa: ANN001, ANN202
    from ximgctx.hitl.queue import QueueConfig, QueueStore, read_queue_key

    governance = None
    if args.governance:
        from ximgctx.governance import GovernancePolicy

        governance = GovernancePolicy.from_yaml(args.governance)
    config = QueueConfig(
        db=args.db,
        key=read_queue_key(args.key_file),
        overlap=args.overlap,
        lease_s=args.lease_s,
        gold_rate=args.gold_rate,
    )
    return QueueStore(config, tasks=tasks, governance=governance)


def _add(args: argparse.Namespace) -> dict:
    from ximgctx.data.post import load_posts

    posts = load_posts(args.data)
    tasks, scores = None, None
    if args.model:
        from ximgctx.inference.predictor import Predictor

        predictor = Predictor.from_pretrained(args.model)
        tasks = list(predictor.model.config.tasks)
        scores = {p.id: {n: dict(t.scores) for n, t in p.tasks.items()} for p in predictor.predict(posts)}
    store = _store(args, tasks)
    gold = {p.id: dict(p.labels) for p in posts if p.labels} if args.gold else None
    return store.enqueue(posts, source=args.source, scores=scores, gold=gold).to_dict()


def _serve(args: argparse.Namespace) -> int:
    uvicorn = require("uvicorn", feature="ximgctx queue serve")

    from ximgctx.inference.predictor import Predictor
    from ximgctx.serve.app import create_app
    from ximgctx.serve.config import ServeConfig, read_api_keys

    config = ServeConfig(
        host=args.host, port=args.port, api_keys=read_api_keys(args.api_key_file), no_auth=args.no_auth
    )
    config.check_auth()
    predictor = Predictor.from_pretrained(args.model)
    store = _store(args, list(predictor.model.config.tasks))
    app = create_app(predictor, config=config, memory=args.memory, governance=store.governance, queue=store)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False)
    return 0


def _write(obj: dict, out: str) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    if out == "-":
        print(text)
        return
    from ximgctx._artifacts import atomic_output

    with atomic_output(out) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None, command: str = "queue") -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.action == "labeler":
            store = _store(args)
            if args.op == "add":
                print(store.add_labeler(args.name))
            elif not store.revoke_labeler(args.name):
                print(f"ximgctx queue: no labeler {args.name!r}", file=sys.stderr)
                return 1
        elif args.action == "add":
            _write(_add(args), "-")
        elif args.action == "serve":
            return _serve(args)
        elif args.action == "export":
            from ximgctx.hitl.queue.report import export_manifest

            _write(export_manifest(_store(args), args.out, method=args.method), "-")
        elif args.action == "stats":
            from ximgctx.hitl.queue.report import queue_stats

            _write(queue_stats(_store(args)), args.out)
    except XimgctxError as e:
        print(f"ximgctx queue: {e}", file=sys.stderr)
        return 2
    return 0
