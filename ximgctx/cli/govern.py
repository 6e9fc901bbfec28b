"""The ``ximgctx govern`` command (its description is :data:`DESCRIPTION`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from ximgctx.cli._args import add, parser

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

DESCRIPTION = """Filter and redact posts before training, with an audit report: drops direct messages, private
    posts and posts of opted-out authors (fail-closed: unclear visibility is dropped, with the reason
    counted), removes replies the same way, and redacts personal data in text, replies, alt text and meta.

      ximgctx govern --data posts.jsonl --out governed.jsonl --report audit.json \\
          [--governance configs/governance/default.yaml] [--opt-out opt_out.txt] [--key-file governance.key]

    The manifest is streamed twice (opt-out flags first, then filtering), so its size is not bounded by
    memory. The report and the log hold counts only. With --authors FILE, the keyed digests of every author
    whose words were kept are written there too; the key (--key-file or $XIMGCTX_GOVERNANCE_KEY) is never
    written. A malformed record stops the command unless --on-error skip (then it is counted in the
    report)."""


def _is_shards(data: str) -> bool:
    from ximgctx.data.shards import is_shard_source

    return is_shard_source(data)


class _WhereOnly(logging.Filter):
    """Rewrites the loader's "skipping bad record" warnings to name only file, line and field: its
    messages can quote a record's values, which must not reach governance logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ximgctx.data.record import PostValidationError

        err = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if isinstance(err, PostValidationError):
            record.msg = "skipping bad record at %s:%s field %r"
            record.args = (err.source, err.line, err.field)
        return True


def build_parser(command: str = "govern") -> argparse.ArgumentParser:
    p = parser(command, DESCRIPTION)
    add(p, "--data", required=True)
    p.add_argument(
        "--out",
        required=True,
        help="governed manifest to write (JSONL, '-' for stdout; a shard folder for shards)",
    )
    add(p, "--report", required=True)
    add(p, "--governance")
    add(p, "--opt-out")
    add(p, "--key-file")
    p.add_argument(
        "--authors", default=None, help="also write the keyed digest set of the kept authors here (JSON)"
    )
    add(p, "--on-error", default="raise")
    return p


def main(argv: list[str] | None = None, command: str = "govern") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    from ximgctx.errors import XimgctxError
    from ximgctx.governance.keys import load_key
    from ximgctx.governance.policy import GovernancePolicy, read_opt_out_file

    try:
        policy = GovernancePolicy.from_yaml(args.governance) if args.governance else GovernancePolicy()
        if args.opt_out:
            policy = policy.with_opt_outs(read_opt_out_file(args.opt_out))
        args.key, args.key_held = load_key(args.key_file)
    except XimgctxError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    if Path(args.out).suffix == ".parquet":
        print(
            f"ximgctx {command}: --out {args.out}: govern writes JSONL; write .jsonl, then `ximgctx shard` "
            "it",
            file=sys.stderr,
        )
        return 2
    if Path(args.out).suffix == ".jsonl" and _is_shards(args.data):
        print(f"ximgctx {command}: --out {args.out}: shards in, shards out: give a folder", file=sys.stderr)
        return 2
    on_error = args.on_error
    loader_log = logging.getLogger("ximgctx.data")
    where_only = _WhereOnly()
    loader_log.addFilter(where_only)
    try:
        return _run(args, policy, on_error, command)
    finally:
        loader_log.removeFilter(where_only)


def _write(args: argparse.Namespace, posts: Iterator[Any]) -> None:
    """JSONL, or shards (images embedded) when the input is a shard folder: its posts carry image bytes."""
    from ximgctx.data.io import write_posts
    from ximgctx.data.shards import is_shard_source, list_shards
    from ximgctx.errors import ConfigError

    if not is_shard_source(args.data):
        write_posts(posts, args.out)
        return
    from ximgctx.data.shard_write import write_shards

    if args.out == "-":
        raise ConfigError("--out -: governed shards keep their images, so they are written to a folder")
    fmt = list_shards(args.data)[0].format
    write_shards(posts, args.out, format=fmt, inputs=[args.data], meta={"governed": True})


def _run(args: argparse.Namespace, policy: Any, on_error: Literal["raise", "skip"], command: str) -> int:
    from ximgctx.data.io import load_posts
    from ximgctx.data.record import LoadReport, PostValidationError
    from ximgctx.errors import XimgctxError
    from ximgctx.governance.authors import write_author_digests
    from ximgctx.governance.core import collect_opt_outs, iter_govern, new_audit

    audit = new_audit(policy)
    audit.key_held = args.key_held
    digests: set[str] = set()
    try:
        opted_out = collect_opt_outs(load_posts(args.data, streaming=True, on_error=on_error), policy)
        load_report = LoadReport()
        posts = load_posts(args.data, streaming=True, on_error=on_error, report=load_report)
        _write(args, iter_govern(posts, policy, audit, opted_out, key=args.key, author_digests=digests))
        if args.authors:
            write_author_digests(args.authors, digests, args.key)
    except XimgctxError as e:
        # Name where, not what: a validation error's message can quote the record's values.
        where = f"{e.source}:{e.line} field {e.field!r}" if isinstance(e, PostValidationError) else str(e)
        if isinstance(e, PostValidationError):
            where += f": {e.reason.split(',')[0]}"
        print(
            f"ximgctx {command}: cannot read {args.data}: {where}; fix the record or pass --on-error skip",
            file=sys.stderr,
        )
        return 2
    audit.skipped_records = load_report.skipped
    report = audit.to_dict()
    report["data"] = str(args.data)
    report["out"] = str(args.out)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    logger.info("governance: kept %d of %d posts", audit.kept_posts, audit.input_posts)
    dropped = ", ".join(f"{k} {v}" for k, v in audit.dropped_posts.items() if v) or "none"
    redacted = ", ".join(f"{k} {v}" for k, v in audit.redactions.items() if v) or "none"
    say = sys.stderr if args.out == "-" else sys.stdout  # stdout carries the posts then
    print(
        f"kept {audit.kept_posts} of {audit.input_posts} posts (dropped: {dropped}); removed "
        f"{sum(audit.removed_replies.values())} replies; redacted: {redacted}; skipped malformed: "
        f"{audit.skipped_records}",
        file=say,
    )
    print(f"wrote {args.out} and {args.report} (policy {audit.policy_sha256[:12]})", file=say)
    return 0
