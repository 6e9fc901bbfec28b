"""The human-in-the-loop commands: ``aggregate``, ``select``, ``memory add``, ``simulate-labeling``.

    ximgctx aggregate --votes votes.csv --out labels.jsonl [--method majority|dawid_skene|soft]
                      [--task-specs configs/tasks/x.yaml] [--data posts.jsonl [--meta-votes] [--merge-out
                      merged.jsonl]]
    ximgctx select    --model DIR --data pool.jsonl -k 50 --out next.jsonl
                      [--strategy entropy|margin|mc_dropout|diverse] [--labeled labels.jsonl]
    ximgctx memory add --model DIR --data corrections.jsonl [--memory DIR]
    ximgctx memory history|revert|remove|rule ... --db q.sqlite --queue-key-file q.key   (the loop store)
    ximgctx simulate-labeling --out DIR [--rounds 5] [--per-round 100] [--strategies random,entropy,diverse]

Summaries go to stderr as JSON; results to ``--out``. Skipped votes are listed with their file and row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ximgctx.cli._args import (
    add,
    add_dataclass_args,
    existing_file,
    existing_path,
    parser,
    run,
    source_constant,
    source_default,
)

__all__ = ["build_parser", "main"]

_SIMULATION = "ximgctx.hitl.simulate:SimulationConfig"


def _emit(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=2, ensure_ascii=False), file=sys.stderr)


# ---------------------------------------------------------------------------------------- aggregate


def _aggregate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--votes",
        type=existing_file,
        default=None,
        help="votes: .jsonl, .csv, .tsv or .parquet rows with post_id, labeler, task, label",
    )
    p.add_argument(
        "--out",
        required=True,
        help="aggregated labels, JSONL: {id, labels, agreement, votes} per post ('-' for stdout)",
    )
    add(p, "--method", default="dawid_skene")
    p.add_argument(
        "--ds-model",
        default="one_coin",
        choices=source_constant("ximgctx.hitl.aggregate:DS_MODELS"),
        help="one_coin: one accuracy per labeler (robust with few votes each); full: a confusion matrix each",
    )
    p.add_argument(
        "--task-specs",
        default=None,
        help="task specs (a configs/tasks YAML, an experiment YAML, a model folder, or 'contextbench'); "
        "unknown tasks and labels are then skipped and reported",
    )
    add(p, "--data", default=None)
    p.add_argument(
        "--meta-votes",
        action="store_true",
        help="also read votes kept in the manifest's meta.votes (as the MMHS150K adapter writes them)",
    )
    p.add_argument(
        "--merge-out",
        default=None,
        help="with --data: write the manifest with the aggregated labels merged in",
    )
    p.add_argument(
        "--labelers-out",
        default=None,
        help="labelers report, JSON (default: next to --out, <name>.labelers.json; none with --out -)",
    )


def _aggregate(args: argparse.Namespace) -> int:
    from ximgctx.cli._args import open_text_out
    from ximgctx.data.io import load_posts, write_posts
    from ximgctx.errors import ConfigError, InputError
    from ximgctx.hitl.aggregate import aggregate_votes
    from ximgctx.hitl.votes import check_votes, iter_vote_rows, load_tasks, votes_from_posts

    if args.votes is None and not args.meta_votes:
        raise ConfigError("give --votes FILE, or --data MANIFEST --meta-votes")
    if (args.meta_votes or args.merge_out) and args.data is None:
        raise ConfigError("--meta-votes and --merge-out need --data MANIFEST")
    tasks = load_tasks(args.task_specs) if args.task_specs else None
    posts = load_posts(args.data) if args.data else None
    rows: list[tuple[str, int, Any]] = []
    if args.votes is not None:
        path = Path(args.votes)
        if not path.is_file():
            raise InputError(f"no such votes file: {path}")
        rows += [(str(path), r, rec) for r, rec in iter_vote_rows(path)]
    if args.meta_votes:
        if posts is None:
            raise InputError("--meta-votes reads the votes in --data's posts: give --data")
        rows += votes_from_posts(posts, source=str(args.data))
    votes = check_votes(rows, tasks=tasks, post_ids=None if posts is None else [p.id for p in posts])
    result = aggregate_votes(votes, args.method, tasks=tasks, posts=posts, ds_model=args.ds_model)
    result.write(args.out, inputs=[args.votes, args.data])
    labelers = args.labelers_out
    if labelers is None and args.out != "-":
        labelers = str(Path(args.out).with_name(Path(args.out).stem + ".labelers.json"))
    if labelers is not None:
        with open_text_out(labelers, inputs=[args.votes, args.data]) as f:
            f.write(json.dumps(result.report(), indent=2, ensure_ascii=False) + "\n")
    summary: dict[str, Any] = {
        "out": args.out,
        "labelers": labelers,
        "method": result.method,
        "posts": len(result.posts),
        "votes_read": result.votes_read,
        "votes_used": result.votes_used,
        "votes_skipped": len(result.problems),
        "skipped": [str(p) for p in result.problems[:20]],
    }
    if args.merge_out:
        if posts is None:
            raise InputError("--merge-out merges the labels into --data's posts: give --data")
        summary["merged"] = write_posts(result.merge(posts), args.merge_out)
        summary["merge_out"] = args.merge_out
    if result.labelers:
        summary["least_reliable"] = [r.to_dict() for r in result.labelers[-3:]][::-1]
    _emit(summary)
    return 0


# -------------------------------------------------------------------------------------------- select


def _model_args(p: argparse.ArgumentParser) -> None:
    add(p, "--model", required=True)
    add(p, "--expect-sha256")
    add(p, "--trust-remote-arch")
    add(p, "--device", default="auto")
    add(p, "--batch-size", default=32)


def _data_args(p: argparse.ArgumentParser) -> None:
    add(p, "--data", required=True)
    add(p, "--image-root")
    add(p, "--on-error", default="skip")


def _select_parser(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _data_args(p)
    add(p, "-k", required=True)
    p.add_argument(
        "--out",
        required=True,
        help="chosen posts, JSONL: {id, rank, score, per_task} per post ('-' for stdout)",
    )
    add(p, "--strategy", default="diverse")
    p.add_argument(
        "--labeled",
        action="append",
        type=existing_file,
        default=[],
        help="posts already labeled (a manifest or an aggregate output); never chosen again. Repeatable",
    )
    p.add_argument(
        "--task", default=None, help="score uncertainty on this task only (default: mean over tasks)"
    )
    add(p, "--memory")
    add(p, "--mc-samples", default=8)
    add(p, "--seed", default=0)
    p.add_argument(
        "--posts-out", default=None, help="also write the chosen posts' records (a manifest to label)"
    )


def _ids_in(path: str) -> list[str]:
    """The ``id`` of every record of a JSONL or Parquet file (a manifest, or ``ximgctx aggregate`` output)."""
    from ximgctx.errors import InputError

    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [str(x) for x in pq.read_table(path, columns=["id"]).column("id").to_pylist()]
    ids = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{line_no}: not JSON ({e.msg})") from None
                if not isinstance(rec, dict) or "id" not in rec:
                    raise InputError(f"{path}:{line_no}: a record without an 'id'")
                ids.append(str(rec["id"]))
    return ids


def _predictor(args: argparse.Namespace, memory: Any = None) -> Any:
    from ximgctx.inference.predictor import Predictor

    return Predictor.from_pretrained(
        args.model,
        device=args.device,
        batch_size=args.batch_size,
        memory=memory,
        expected_sha256=args.expect_sha256,
        trust_remote_arch=args.trust_remote_arch,
    )


def _select(args: argparse.Namespace) -> int:
    from ximgctx.cli._args import open_text_out
    from ximgctx.data.io import load_posts, write_posts
    from ximgctx.hitl.select import select_for_labeling

    predictor = _predictor(args, memory=args.memory)
    pool = load_posts(args.data, image_root=args.image_root, on_error=args.on_error)
    labeled = [i for path in args.labeled for i in _ids_in(path)]
    chosen = select_for_labeling(
        predictor,
        pool,
        args.k,
        strategy=args.strategy,
        labeled_ids=labeled,
        task=args.task,
        seed=args.seed,
        mc_samples=args.mc_samples,
        batch_size=args.batch_size,
    )
    with open_text_out(args.out, inputs=[args.data, *args.labeled]) as f:
        for s in chosen:
            f.write(json.dumps(s.to_dict()) + "\n")
    if args.posts_out:
        by_id = {p.id: p for p in pool}
        write_posts([by_id[s.id] for s in chosen], args.posts_out)
    _emit(
        {
            "out": args.out,
            "strategy": args.strategy,
            "chosen": len(chosen),
            "pool": len(pool),
            "already_labeled": len(set(labeled)),
            "mean_score": sum(s.score for s in chosen) / max(len(chosen), 1),
        }
    )
    return 0


# -------------------------------------------------------------------------------------------- memory


def _memory_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    add_ = sub.add_parser(
        "add",
        help="add labeled posts to a model's label memory",
        description="Embed labeled posts with the model and add them to its label memory, so "
        "predictions for similar posts shift at once, before any retraining. --memory defaults to the "
        "folder beside the model, <model>.memory.",
    )
    _model_args(add_)
    _data_args(add_)
    add(add_, "--memory")
    add_.add_argument(
        "--reference",
        type=existing_path,
        default=None,
        help="governed posts like those the memory will be asked about (a sample of the training data or "
        "of the pool), to centre similarities on a new memory: required when the memory is created",
    )
    add_.add_argument(
        "--weight", type=float, default=None, help="most the memory can move a score (new memory: 0.5)"
    )
    add_.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine similarity below which an example has no effect (new memory: 0.9)",
    )
    add_.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="kernel exp((s - 1) / T): how fast influence fades with similarity (new memory: 0.05)",
    )
    add_.add_argument(
        "--near-duplicate",
        type=float,
        default=None,
        help="cosine similarity from which an entry is a near-exact copy of a post; entries below it move a "
        "post's scores by at most --max-shift (new memory: 0.95)",
    )
    add_.add_argument(
        "--max-shift",
        type=float,
        default=None,
        help="the most entries below --near-duplicate can move any label's score (new memory: 0.05)",
    )
    add(add_, "--allow-ungoverned")
    add(add_, "--key-file")
    helps = {
        "history": "a post's (or every) feedback and vote rows and audit rows in the loop store",
        "revert": "undo the latest live row of a post: it is answered as before that row",
        "remove": "stop a post's rows (or one row, --row) counting: its memory entry goes",
        "rule": "show or set when rows take effect (a reviewer alone; k agreeing labelers)",
    }
    for name, text in helps.items():
        sp = sub.add_parser(
            name,
            help=text,
            description=text + ". The loop store is the queue's database (--db, --queue-key-file); every "
            "change is an audit row (--by, --why) and reaches running servers within their poll interval.",
        )
        add_dataclass_args(sp, "ximgctx.queue.config:QueueConfig", only={"db"})
        add(sp, "--queue-key-file")
        if name in ("history", "revert", "remove"):
            sp.add_argument(
                "post",
                nargs="?" if name != "revert" else None,
                default=None,
                help="the post's id or content digest"
                + (" (history: every post when left out)" * (name == "history")),
            )
        if name == "remove":
            sp.add_argument("--row", type=int, default=None, help="one row's id instead of a post's rows")
        if name == "rule":
            add(sp, "--k", default=None)
            sp.add_argument(
                "--reviewer-alone",
                choices=["yes", "no"],
                default=None,
                help="yes: a reviewer's feedback decides by itself; no: it counts as one vote",
            )
        if name != "history":
            add(sp, "--why", required=name != "rule", default="")
            sp.add_argument(
                "--by", default=None, help="who makes the change (default: operator:<login name>)"
            )


def _memory(args: argparse.Namespace) -> int:
    if args.action != "add":
        return _memory_store(args)
    return _memory_add(args)


def _memory_store(args: argparse.Namespace) -> int:
    """``memory history|revert|remove|rule`` on the loop store (no model needed)."""
    import getpass

    from ximgctx.errors import InputError
    from ximgctx.queue import QueueConfig, QueueStore, read_queue_key
    from ximgctx.queue.loop import LabelRule, LoopState

    store = QueueStore(QueueConfig(db=args.db, key=read_queue_key(args.queue_key_file)))
    try:
        loop = LoopState(store)
        who = getattr(args, "by", None) or f"operator:{getpass.getuser()}"
        if args.action == "history":
            result: dict[str, Any] = loop.history(args.post)
        elif args.action == "revert":
            undone = loop.revert(args.post, who=who, why=args.why)
            if undone is None:
                raise InputError(f"memory revert: post {args.post!r} has no live row in the loop store")
            result = {"reverted": undone, "generation": loop.generation()}
        elif args.action == "remove":
            if (args.row is None) == (args.post is None):
                raise InputError("memory remove: give a post (id or digest) or --row ID, not both")
            if args.row is not None:
                if not loop.remove_row(args.row, who=who, why=args.why):
                    raise InputError(f"memory remove: no live row {args.row} in the loop store")
                removed = 1
            else:
                removed = loop.remove_post(args.post, who=who, why=args.why)
                if not removed:
                    raise InputError(f"memory remove: post {args.post!r} has no live row in the loop store")
            result = {"removed": removed, "generation": loop.generation()}
        else:
            rule = loop.rule()
            if args.k is not None or args.reviewer_alone is not None:
                rule = LabelRule(
                    reviewer_alone=rule.reviewer_alone
                    if args.reviewer_alone is None
                    else args.reviewer_alone == "yes",
                    k=rule.k if args.k is None else args.k,
                )
                loop.set_rule(rule, who=who, why=args.why)
            result = {"rule": rule.to_dict(), "generation": loop.generation()}
    finally:
        store.close()
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _memory_add(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ximgctx.data.io import load_posts
    from ximgctx.data.record import LoadReport
    from ximgctx.errors import ConfigError
    from ximgctx.governance import require_governed
    from ximgctx.governance.keys import load_key
    from ximgctx.inference._authors import AuthorKey
    from ximgctx.inference.memory import LabelMemory, default_memory_dir

    predictor = _predictor(args)
    folder = Path(args.memory) if args.memory else default_memory_dir(args.model)
    key, held = load_key(args.key_file)  # keys the entries' author digests; only its id is saved
    if (folder / "memory.json").is_file():
        memory = LabelMemory.load(folder, author_key=key if held else None)
    else:
        memory = LabelMemory.for_predictor(predictor)
        memory.author_key = AuthorKey.operator(key if held else None)
    overrides = {
        k: getattr(args, k)
        for k in ("weight", "threshold", "temperature", "near_duplicate", "max_shift")
        if getattr(args, k) is not None
    }
    if overrides:
        memory.config = replace(memory.config, **overrides)
    report = LoadReport()
    posts = load_posts(args.data, image_root=args.image_root, on_error=args.on_error, report=report)
    posts = list(
        require_governed(
            posts, allow_ungoverned=args.allow_ungoverned, source=args.data, command="memory add"
        )
    )
    if memory.center is None and not args.reference:
        raise ConfigError(
            f"ximgctx memory add: {folder} is a new label memory: give --reference FILE (governed posts like "
            "those it will be asked about, a sample of the training data or of the pool) to centre its "
            "similarities on"
        )
    reference = (
        list(
            require_governed(
                load_posts(args.reference, on_error="skip"),
                allow_ungoverned=args.allow_ungoverned,
                source=args.reference,
                command="memory add --reference",
            )
        )
        if args.reference and memory.center is None
        else None
    )
    added = memory.add(predictor, posts, reference=reference)
    memory.save(folder, inputs=[args.data, args.reference, args.model])
    _emit(
        {
            "memory": str(folder),
            "added": added,
            "entries": len(memory),
            "skipped_records": report.skipped,
            "unlabeled_posts": len(posts) - added,
            "config": memory.config.to_dict(),
        }
    )
    return 0


# --------------------------------------------------------------------------------- simulate-labeling


def _simulate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for curve.json, curve.png and the generated data")
    p.add_argument(
        "--contextbench",
        default=None,
        help="an existing ContextBench folder with train.jsonl and test.jsonl "
        "(default: generate under --out)",
    )
    p.add_argument(
        "--strategies",
        default=",".join(source_default(_SIMULATION, "strategies")),
        help="comma-separated, compared: random,entropy,margin,mc_dropout,diverse (default: %(default)s)",
    )
    add(p, "--tasks", default=",".join(source_default(_SIMULATION, "tasks")))
    add_dataclass_args(p, _SIMULATION, exclude={"out_dir", "data_dir", "strategies", "tasks"})


def _simulate(args: argparse.Namespace) -> int:
    from ximgctx.cli._args import dataclass_from_args
    from ximgctx.hitl.simulate import SimulationConfig, simulate_labeling

    config = dataclass_from_args(
        SimulationConfig,
        args,
        out_dir=args.out,
        data_dir=args.contextbench,
        strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
    )
    curve = simulate_labeling(config, progress=True)
    _emit(
        {
            "curve": str(Path(args.out) / "curve.json"),
            "plot": str(Path(args.out) / "curve.png"),
            "final": {s: pts[-1] for s, pts in curve["strategies"].items()},
        }
    )
    return 0


# ------------------------------------------------------------------------------------------------ main

_COMMANDS = {
    "aggregate": (_aggregate_parser, _aggregate),
    "select": (_select_parser, _select),
    "memory": (_memory_parser, _memory),
    "simulate-labeling": (_simulate_parser, _simulate),
}

_DESCRIPTIONS = {
    "aggregate": """Aggregate labelers' votes into training labels: majority vote, or Dawid-Skene (one
        accuracy per labeler, or a confusion matrix each) as hard or soft labels. Unknown posts, tasks and
        labels are skipped and listed with their file and row. Writes one {id, labels, agreement, votes}
        record per post and a labelers report; the summary goes to stderr.

          ximgctx aggregate --votes votes.csv --out labels.jsonl [--method majority|dawid_skene|soft]
              [--task-specs configs/tasks/x.yaml]
              [--data posts.jsonl [--meta-votes] [--merge-out m.jsonl]]""",
    "select": """Choose the next posts to label: the k most uncertain under the model (entropy, margin, BALD
        over dropout passes) or an uncertainty-weighted diverse batch. Posts already labeled are never
        chosen again.

          ximgctx select --model DIR --data pool.jsonl -k 50 --out next.jsonl [--strategy diverse]""",
    "memory": """A model's label memory: labeled posts whose embeddings shift predictions for similar posts at
        once, before any retraining.

          ximgctx memory add --model DIR --data corrections.jsonl [--memory DIR]

        Served feedback and queue votes live in the loop store (the queue's database); undo there, audited:

          ximgctx memory history [POST] --db q.sqlite --queue-key-file q.key
          ximgctx memory revert POST --why "misread" --db q.sqlite --queue-key-file q.key
          ximgctx memory remove POST|--row ID --why "..." --db q.sqlite --queue-key-file q.key
          ximgctx memory rule [--k 3] [--reviewer-alone yes|no] --db q.sqlite --queue-key-file q.key""",
    "simulate-labeling": """A simulated labeling loop on ContextBench: a crowd with honest labelers and
        spammers labels the posts each strategy picks, round after round; writes the learning curve per
        strategy.

          ximgctx simulate-labeling --out DIR [--rounds 5] [--per-round 100]
              [--strategies random,entropy,diverse]""",
}


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``aggregate``, ``select``, ``memory`` or ``simulate-labeling``."""
    if command not in _COMMANDS:
        raise ValueError(f"command must be one of {sorted(_COMMANDS)}, got {command!r}")
    p = parser(command, _DESCRIPTIONS[command])
    _COMMANDS[command][0](p)
    return p


def main(argv: list[str] | None = None, command: str = "aggregate") -> int:
    """Entry point of the four human-in-the-loop commands; ``command`` picks which."""
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    return run(command, lambda: _COMMANDS[command][1](args))
