"""``ximgctx queue``: the review and labeling queue (database, labelers, items, the served page, export)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ximgctx.cli._args import add, add_dataclass_args
from ximgctx.cli.serve import add_server_args

__all__ = ["build_parser", "main"]

_QUEUE_CONFIG = "ximgctx.queue.config:QueueConfig"

DESCRIPTION = """\
The review and labeling queue. Votes live in SQLite (a file, the default) or PostgreSQL (--db URL).

  ximgctx queue labeler add alice --db q.sqlite --queue-key-file q.key     # prints alice's login token once
  ximgctx queue add --data picks.jsonl --source select --model runs/x/best --db q.sqlite \\
      --queue-key-file q.key
  ximgctx queue serve --model runs/x/best --db q.sqlite --queue-key-file q.key --api-key-file keys.txt \\
      --memory runs/x/best.memory                                       # page at http://127.0.0.1:8000/queue
  ximgctx queue export --out labels.jsonl --db q.sqlite --queue-key-file q.key
  ximgctx queue stats --db q.sqlite --queue-key-file q.key --names labelers.txt --out -
  ximgctx queue labeler list --db q.sqlite --queue-key-file q.key --names labelers.txt

The page shows each task's question and a one-sentence definition beside each label (--definitions FILE:
a YAML/JSON mapping task -> {question, labels: {label: sentence}}, or a task file's 'definitions:';
ContextBench's tasks have built-in ones) and a "can't tell" per task. It hides the model's scores unless
the operator asks (--show-scores after: beside the labels once the answer is stored; always: beside every
label, which anchors labelers on the model).

'queue stats' counts in named units (its "units" lists them): posts (queued items), answers (one labeler's
form on one post), task_votes (one task of one answer), cant_tell, skips, labelers. Labelers are digests;
the operator, who holds the key, maps them to names with --names FILE (one name per line). 'queue export
--method majority|dawid_skene' leaves a task whose votes tie without a label (the post waits for another
vote); '--method soft' gives a tie its vote shares (0.5/0.5).

The key (--queue-key-file or XIMGCTX_QUEUE_KEY, at least 16 bytes) turns labeler names and authors into keyed
digests; keep it with the operator. 'queue serve' is 'ximgctx serve' with the queue mounted: it takes
the same server flags.
"""


_HELP = {
    "labeler": "add (or give a new token to), revoke, or list labelers",
    "add": "queue governed posts from a manifest",
    "serve": "the service with the labeling page (ximgctx serve's options)",
    "export": "aggregate the votes into a governed training manifest",
    "stats": "counts in named units, throughput, agreement, labeler reliability, gold accuracy (JSON)",
}


def _common(p: argparse.ArgumentParser, *, governance: bool = True) -> None:
    """The queue's own flags (``queue serve`` takes ``--governance`` with the server flags)."""
    add_dataclass_args(p, _QUEUE_CONFIG, only={"db", "overlap", "lease_s", "gold_rate"})
    add(p, "--queue-key-file")
    if governance:
        add(p, "--governance")


def _names(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--names",
        metavar="FILE",
        help="the operator's labeler names, one per line: shown beside their digests (made with the key)",
    )


def _definitions(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--definitions",
        metavar="FILE",
        help="label definitions for the page (YAML/JSON task -> {question, labels: {label: sentence}}, or a "
        "task file's 'definitions:'); kept in the queue's database",
    )


def _read_names(path: str | None) -> list[str]:
    """Labeler names, one a line ('#' starts a comment)."""
    if not path:
        return []
    from pathlib import Path

    from ximgctx.errors import ConfigError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the labeler names ({e})") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def build_parser(command: str = "queue") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"ximgctx {command}",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", required=True)
    lab = sub.add_parser("labeler", help=_HELP["labeler"])
    lab.add_argument("op", choices=["add", "revoke", "list"])
    lab.add_argument("name", nargs="?", help="the labeler's account name (stored as a keyed digest only)")
    _names(lab)
    enqueue = sub.add_parser("add", help=_HELP["add"])
    add(enqueue, "--data", required=True)
    enqueue.add_argument(
        "--source", default="file", choices=["review", "select", "file"], help="where they come from"
    )
    enqueue.add_argument("--gold", action="store_true", help="the posts' own labels are gold answers")
    add(enqueue, "--model", default=None)
    add(enqueue, "--expect-sha256")
    add(enqueue, "--trust-remote-arch")
    _definitions(enqueue)
    serve = sub.add_parser("serve", help=_HELP["serve"])
    add_server_args(serve, model_required=False)  # --model, or --registry-root's promoted version
    _definitions(serve)
    add_dataclass_args(serve, _QUEUE_CONFIG, only={"show_scores"})
    exp = sub.add_parser("export", help=_HELP["export"])
    exp.add_argument("--out", required=True, help="JSONL manifest (images go to OUT.images/)")
    add(exp, "--method", default="soft")
    stats = sub.add_parser("stats", help=_HELP["stats"])
    stats.add_argument("--out", default="-", help="JSON file, or - for stdout")
    _names(stats)
    examples = [
        line.strip() for line in DESCRIPTION.splitlines() if line.strip().startswith("ximgctx queue ")
    ]
    for s, what in ((lab, "labeler"), (enqueue, "add"), (serve, "serve"), (exp, "export"), (stats, "stats")):
        _common(s, governance=what != "serve")
        s.formatter_class = argparse.RawDescriptionHelpFormatter
        shown = [e for e in examples if e.startswith(f"ximgctx queue {what} ")]
        s.description = f"ximgctx queue {what}: {_HELP[what]}." + "".join(f"\n\n  {e}" for e in shown)
    return p


def _store(args: argparse.Namespace, tasks=None):  # noqa: ANN001, ANN202
    from ximgctx.cli.serve import governance_policy
    from ximgctx.queue import QueueConfig, QueueStore, read_queue_key

    governance = governance_policy(args.governance)
    config = QueueConfig(
        db=args.db,
        key=read_queue_key(args.queue_key_file),
        overlap=args.overlap,
        lease_s=args.lease_s,
        gold_rate=args.gold_rate,
        show_scores=getattr(args, "show_scores", "never"),
    )
    store = QueueStore(config, tasks=tasks, governance=governance)
    if getattr(args, "definitions", None):
        from ximgctx.queue.guide import load_definitions

        store.set_definitions(load_definitions(args.definitions))
    return store


def _add(args: argparse.Namespace) -> dict:
    from ximgctx.data.io import load_posts

    posts = load_posts(args.data)
    tasks, scores = None, None
    if args.model:
        from ximgctx.inference.predictor import Predictor

        predictor = Predictor.from_pretrained(
            args.model, expected_sha256=args.expect_sha256, trust_remote_arch=args.trust_remote_arch
        )
        tasks = list(predictor.model.config.tasks)
        scores = {p.id: {n: dict(t.scores) for n, t in p.tasks.items()} for p in predictor.predict(posts)}
    store = _store(args, tasks)
    gold = {p.id: dict(p.labels) for p in posts if p.labels} if args.gold else None
    return store.enqueue(posts, source=args.source, scores=scores, gold=gold).to_dict()


def _serve(args: argparse.Namespace) -> int:
    from ximgctx.cli.serve import loop_store, registry_model, serve, server_config
    from ximgctx.inference.predictor import Predictor
    from ximgctx.serve.app import create_app

    config = server_config(args)
    store = _store(args)  # its tasks: the served model's, below
    state = loop_store(args)
    model, expect, version, source = registry_model(args, state or store)
    if not model:
        from ximgctx.errors import ConfigError

        raise ConfigError("give --model DIR, or --registry-root DIR with a promoted version")
    predictor = Predictor.from_pretrained(
        model,
        device=args.device,
        expected_sha256=expect,
        trust_remote_arch=args.trust_remote_arch,
    )
    store.set_tasks(list(predictor.model.config.tasks))
    app = create_app(
        predictor,
        config=config,
        policy=args.policy,
        index=args.index,
        memory=args.memory,
        governance=store.governance,
        queue=store,
        state=state,
        version=version,
        model_source=source,
    )
    serve(app, config, args, log_level="warning")
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
    from ximgctx.errors import XimgctxError

    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.action == "labeler":
            store = _store(args)
            if args.op == "list":
                names = store.labeler_names(_read_names(args.names))
                _write({"labelers": [{**r, "name": names.get(r["labeler"])} for r in store.labelers()]}, "-")
            elif not args.name:
                print(f"ximgctx queue: labeler {args.op} needs the labeler's name", file=sys.stderr)
                return 2
            elif args.op == "add":
                print(store.add_labeler(args.name))
            elif not store.revoke_labeler(args.name):
                print(f"ximgctx queue: no labeler {args.name!r}", file=sys.stderr)
                return 1
        elif args.action == "add":
            _write(_add(args), "-")
        elif args.action == "serve":
            return _serve(args)
        elif args.action == "export":
            from ximgctx.queue.report import export_manifest

            _write(export_manifest(_store(args), args.out, method=args.method), "-")
        elif args.action == "stats":
            from ximgctx.queue.report import queue_stats

            store = _store(args)
            _write(queue_stats(store, names=store.labeler_names(_read_names(args.names))), args.out)
    except XimgctxError as e:
        print(f"ximgctx queue: {e}", file=sys.stderr)
        return 2
    return 0
