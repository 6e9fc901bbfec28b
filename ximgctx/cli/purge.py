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

- --index: every post and reply of those authors leaves the search index, which is saved again in place.
- --memory: the same for a label memory.
- --data: a manifest is rewritten atomically without their posts (own, quoted or reposted) and without
  their replies.
- --queue: the authors' queued items, their votes and their replies under other posts are erased from a
  labeling queue database (SQLite file or postgresql:// URL).
- --model: nothing is changed (weights cannot forget); the count of opted-out authors whose words trained it
  is reported from the folder's keyed digest set, a retrain signal that names nobody. It needs the key that
  governed the training data.

One audit line per target (counts only, never ids) goes to stdout, the log, and --report (JSON lines,
appended)."""


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
    return p


def _run(args: argparse.Namespace, authors: set[str]) -> list[dict[str, Any]]:
    from ximgctx.governance.keys import load_key
    from ximgctx.purge import model_report, purge_manifest

    lines: list[dict[str, Any]] = []
    for path in args.data:
        lines.append({"target": "data", "path": path, **purge_manifest(path, authors)})
    for path in args.index:
        from ximgctx.inference.search import SearchIndex

        index = SearchIndex.load(path)
        removed = index.remove_authors(authors)
        index.save(path)
        lines.append({"target": "index", "path": path, "removed": int(removed), "remaining": len(index)})
    for path in args.memory:
        from ximgctx.inference.memory import LabelMemory

        memory = LabelMemory.load(path)
        removed = memory.remove_authors(authors)
        memory.save(path)
        lines.append({"target": "memory", "path": path, "removed": int(removed), "remaining": len(memory)})
    for db in args.queue:
        from ximgctx.queue import QueueConfig, QueueStore, read_queue_key

        store = QueueStore(QueueConfig(db=db, key=read_queue_key(args.queue_key_file)))
        try:
            lines.append({"target": "queue", "path": db, **store.purge_authors(authors)})
        finally:
            store.close()
    if args.model:
        key, held = load_key(args.key_file)
        for path in args.model:
            lines.append({"target": "model", "path": path, **model_report(path, authors, key, held)})
    return lines


def main(argv: list[str] | None = None, command: str = "purge") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    if not (args.index or args.memory or args.data or args.model or args.queue):
        print(
            f"ximgctx {command}: name at least one --index, --memory, --data, --queue or --model",
            file=sys.stderr,
        )
        return 2
    from ximgctx.errors import XimgctxError
    from ximgctx.governance.policy import read_opt_out_file

    try:
        authors = read_opt_out_file(args.opt_out)
        lines = _run(args, authors)
    except XimgctxError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    for line in lines:
        line = {"command": command, "opted_out_authors": len(authors), **line}
        text = json.dumps(line, sort_keys=True)
        print(text)
        logger.info("purge: %s", text)
        if args.report:
            with open(args.report, "a", encoding="utf-8") as f:
                f.write(text + "\n")
    return 0
