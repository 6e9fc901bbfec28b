"""``ximgctx purge``: erase opted-out authors from everything built so far, and say which models used them
(the erasure itself is :mod:`ximgctx.purge`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ximgctx.cli._args import add, parser

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

DESCRIPTION = """Erase opted-out authors from everything built so far, and say which models used them.

    ximgctx purge --opt-out opt_out.txt [--index DIR]... [--memory DIR]... [--data FILE]... \\
        [--queue DB]... [--model DIR]... [--key-file governance.key] [--report purge.jsonl]
        [--loop-db loop.sqlite --queue-key-file q.key [--wait-replicas-s 10]]

- --index: every post and reply of those authors leaves the search index, which is saved again in place.
- --memory: the same for a label memory.
- --data: a manifest is rewritten atomically without their posts (own, quoted or reposted) and without
  their replies; a shard folder is written again as a new verified shard artifact (never edited in place).
- --queue: the authors' queued items, their votes and their replies under other posts are erased from a
  labeling queue database (SQLite file or postgresql:// URL).
- --model: nothing is changed (weights cannot forget); the count of opted-out authors whose words trained it
  is reported from the folder's keyed digest set, a retrain signal that names nobody. It needs the key that
  governed the training data.
- --loop-db: the loop store the servers share (the one their --loop-db names). The audit record is kept there
  (instead of --journal), the authors' label rows and queued items are erased from it, and the erased
  authors' digests (keyed with the governance key) are announced to every replica before any file is
  rewritten: running servers drop them from search and memory at their next poll. Once completed, the
  purge waits up to --wait-replicas-s for every live replica to acknowledge it and reports which did.

Models are checked first. The purge is recorded (in the loop store, else in --journal: default beside
--report, else beside the opt-out list) before anything is erased, target by target as each is done, and
completed last; a purge that fails or is killed midway is resumed and completed by running the same command
again. One audit line per target (counts only, never ids, with the purge's id and state) goes to stdout, the
log, and --report (JSON lines, appended); with --loop-db a last line says which replicas acknowledged."""


def build_parser(command: str = "purge") -> argparse.ArgumentParser:
    p = parser(command, DESCRIPTION)
    add(p, "--opt-out", required=True)
    add(p, "--index", repeat=True)
    add(p, "--memory", repeat=True)
    add(p, "--data", repeat=True)
    add(p, "--model", repeat=True)
    p.add_argument(
        "--queue",
        action="append",
        default=[],
        help="labeling queue database (SQLite file or postgresql:// URL; repeatable)",
    )
    add(p, "--queue-key-file")
    add(p, "--key-file")
    add(p, "--report")
    p.add_argument(
        "--journal",
        default=None,
        help="the purge journal (JSON; the audit record that makes a purge resumable; default: "
        "--report's path + .journal.json, else the opt-out list's)",
    )
    add(p, "--loop-db")
    p.add_argument(
        "--wait-replicas-s",
        type=float,
        default=10.0,
        help="with --loop-db: how long to wait for every live server replica to acknowledge the purge "
        "(default: 10)",
    )
    return p


def _targets(args: argparse.Namespace) -> list[Any]:
    from ximgctx.purge import Target

    return [
        Target(kind, path)
        for kind, paths in (
            ("model", args.model),
            ("data", args.data),
            ("queue", args.queue),
            ("index", args.index),
            ("memory", args.memory),
        )
        for path in paths
    ]


def _journal_path(args: argparse.Namespace) -> str:
    """--journal, or beside --report, or beside the opt-out list."""
    if args.journal:
        return str(args.journal)
    beside = args.report or args.opt_out
    return str(beside) + ".journal.json"


def main(argv: list[str] | None = None, command: str = "purge") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    if not (args.index or args.memory or args.data or args.model or args.queue):
        print(
            f"ximgctx {command}: name at least one --index, --memory, --data, --queue or --model",
            file=sys.stderr,
        )
        return 2
    from ximgctx.errors import XimgctxError
    from ximgctx.governance.keys import load_key
    from ximgctx.governance.policy import read_opt_out_file
    from ximgctx.purge import run_purge

    if args.loop_db and args.journal:
        print(f"ximgctx {command}: give --journal or --loop-db (the store keeps the record), not both",
              file=sys.stderr)  # fmt: skip
        return 2
    journal = "the loop store" if args.loop_db else _journal_path(args)
    store = None
    try:
        authors = read_opt_out_file(args.opt_out)
        key, held = load_key(args.key_file)
        targets = _targets(args)
        if args.loop_db:
            from ximgctx.purge import Target
            from ximgctx.queue import QueueConfig, QueueStore, read_queue_key

            store = QueueStore(QueueConfig(db=args.loop_db, key=read_queue_key(args.queue_key_file)))
            if Target("queue", args.loop_db).key() not in [t.key() for t in targets]:
                targets.append(Target("queue", args.loop_db))  # the store's own rows are erased too
        outcome = run_purge(
            authors,
            targets,
            None if store is not None else journal,
            key=key if held else None,
            queue_key_file=args.queue_key_file,
            store=store,
            wait_replicas_s=args.wait_replicas_s,
        )
    except XimgctxError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()
    record = outcome.record
    for entry in record["targets"]:
        if entry["state"] not in ("done", "failed"):
            continue
        line = {
            "command": command,
            "purge": record["id"],
            "state": record["state"],
            "opted_out_authors": len(authors),
            "target": entry["target"],
            "path": entry["path"],
            "attempt": entry["attempt"],
            **(entry["result"] or {}),
            **({"error": entry["error"]} if entry["state"] == "failed" else {}),
        }
        text = json.dumps(line, sort_keys=True)
        print(text)
        logger.info("purge: %s", text)
        if args.report:
            with open(args.report, "a", encoding="utf-8") as f:
                f.write(text + "\n")
    if outcome.replicas is not None:
        line = {"command": command, "purge": record["id"], "state": record["state"], **outcome.replicas}
        text = json.dumps(line, sort_keys=True)
        print(text)
        logger.info("purge: %s", text)
        if args.report:
            with open(args.report, "a", encoding="utf-8") as f:
                f.write(text + "\n")
        pending = outcome.replicas["pending"]
        if pending:
            print(
                f"ximgctx {command}: {len(pending)} server replica(s) did not acknowledge the purge within "
                f"{args.wait_replicas_s:g} s: {', '.join(pending)}",
                file=sys.stderr,
            )
    if outcome.error is not None:
        print(
            f"ximgctx {command}: {outcome.error}\n  purge {record['id']} is recorded as started in "
            f"{journal}; fix the cause and run the same command again to resume and complete it",
            file=sys.stderr,
        )
        return 2
    if outcome.resumed:
        print(f"ximgctx {command}: resumed and completed purge {record['id']} ({journal})", file=sys.stderr)
    return 0
