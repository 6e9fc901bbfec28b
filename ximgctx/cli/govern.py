"""The ``ximgctx govern`` command (its description is :data:`DESCRIPTION`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
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
    report).

    A shard folder in gives a shard folder out; --processes N splits it by shard across N processes, with
    the same output and audit as one process. Person names are redacted only with a NER model: --ner-model
    (or ner_model in the policy) names a spaCy pipeline, a saved folder or an installed package (never
    downloaded); without one the report and this command say that names were not redacted."""


def _is_shards(data: str) -> bool:
    from ximgctx.data.shards import is_shard_source

    return is_shard_source(data)


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
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes governing a shard folder, split by shard; same output as one (default: %(default)s)",
    )
    p.add_argument(
        "--ner-model",
        default=None,
        help="spaCy pipeline that finds person names (a folder saved with nlp.to_disk, or an installed "
        "package); overrides the policy's ner_model; never downloaded",
    )
    return p


def main(argv: list[str] | None = None, command: str = "govern") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    from ximgctx.errors import XimgctxError
    from ximgctx.governance.keys import load_key
    from ximgctx.governance.names import describe
    from ximgctx.governance.policy import GovernancePolicy, read_opt_out_file

    try:
        policy = GovernancePolicy.from_yaml(args.governance) if args.governance else GovernancePolicy()
        if args.opt_out:
            policy = policy.with_opt_outs(read_opt_out_file(args.opt_out))
        if args.ner_model is not None:
            policy = GovernancePolicy.from_dict({**policy.to_dict(), "ner_model": args.ner_model})
        args.key, args.key_held = load_key(args.key_file)
        describe(policy.ner_model, "name" in policy.redact)  # a NER model that cannot load fails here
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
    shards_in = _is_shards(args.data)
    if Path(args.out).suffix == ".jsonl" and shards_in:
        print(f"ximgctx {command}: --out {args.out}: shards in, shards out: give a folder", file=sys.stderr)
        return 2
    if args.out == "-" and shards_in:
        print(
            f"ximgctx {command}: --out -: governed shards keep their images, so they are written to a folder",
            file=sys.stderr,
        )
        return 2
    if args.processes < 1 or (args.processes > 1 and not shards_in):
        why = "must be at least 1" if args.processes < 1 else "splits shard folders; `ximgctx shard` it first"
        print(f"ximgctx {command}: --processes {args.processes}: {why}", file=sys.stderr)
        return 2
    on_error = args.on_error
    from ximgctx.governance.shards import WhereOnly

    loader_log = logging.getLogger("ximgctx.data")
    where_only = WhereOnly()
    loader_log.addFilter(where_only)
    try:
        return _run(args, policy, on_error, command)
    finally:
        loader_log.removeFilter(where_only)


def _govern_jsonl(args: argparse.Namespace, policy: Any, audit: Any, digests: set[str]) -> None:
    """A manifest streamed twice: opt-out flags first, then governed into JSONL."""
    from ximgctx.data.io import load_posts, write_posts
    from ximgctx.data.record import LoadReport
    from ximgctx.governance.core import collect_opt_outs, iter_govern

    opted_out = collect_opt_outs(load_posts(args.data, streaming=True, on_error=args.on_error), policy)
    load_report = LoadReport()
    posts = load_posts(args.data, streaming=True, on_error=args.on_error, report=load_report)
    write_posts(iter_govern(posts, policy, audit, opted_out, key=args.key, author_digests=digests), args.out)
    audit.skipped_records = load_report.skipped


def _run(args: argparse.Namespace, policy: Any, on_error: Literal["raise", "skip"], command: str) -> int:
    from ximgctx.data.record import PostValidationError
    from ximgctx.data.shards import is_shard_source
    from ximgctx.errors import XimgctxError
    from ximgctx.governance.authors import write_author_digests
    from ximgctx.governance.core import new_audit
    from ximgctx.governance.keys import key_id
    from ximgctx.governance.shards import govern_shards

    digests: set[str] = set()
    try:
        if not is_shard_source(args.data):
            audit = new_audit(policy)
            audit.key_held = args.key_held
            _govern_jsonl(args, policy, audit, digests)
        else:
            audit = govern_shards(
                args.data,
                args.out,
                policy,
                key=args.key,
                processes=args.processes,
                on_error=on_error,
                author_digests=digests,
            )
            audit.key_held = args.key_held
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
    # the policy's published digest is the same on every run of the same policy; the keyed one in the posts
    # only under the same key
    if args.key_held:
        keyed = f"keyed digest {audit.policy_sha256[:12]} under key {key_id(args.key)}"
    else:
        keyed = "keyed digest under a throw-away key, different on every run: pass --key-file"
    print(f"wrote {args.out} and {args.report} (policy {audit.policy_public_sha256[:12]}; {keyed})", file=say)
    names = audit.names
    if not names.get("ran"):
        print(f"names: NOT redacted ({names.get('note', '')})", file=say)
    else:
        print(f"names: redacted with NER model {names['ner_model']} ({names['pipeline']})", file=say)
    return 0
