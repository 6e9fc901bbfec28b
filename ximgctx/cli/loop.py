"""``ximgctx loop``: the learning loop's rounds and its model registry (the round itself is
:mod:`ximgctx.loop.round`; the registry :mod:`ximgctx.queue.registry`)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from ximgctx.cli._args import add, add_dataclass_args, existing_dir, parser, run, source_fields

__all__ = ["build_parser", "main"]

_CONFIG = "ximgctx.loop.config:LoopConfig"

DESCRIPTION = """The learning loop: labels people gave become a retrained, gated, registered, promoted model.

    ximgctx loop adopt MODEL_DIR --config loop.yaml      # seed the registry with the model served today
    ximgctx loop run --config loop.yaml [--every-s 3600] # one round (or one every N seconds)
    ximgctx loop status --config loop.yaml               # the promoted version and the latest rounds
    ximgctx loop history --config loop.yaml              # every version with its lineage
    ximgctx loop rollback --config loop.yaml --why "..." # promote the version promoted before
    ximgctx loop abandon --config loop.yaml --why "..."  # give up a round that cannot complete

A round takes the labels that became effective since the last round (governed again), fine-tunes from the
promoted version (warm start) on them plus a replay sample of earlier training data, scores both models on
the frozen holdout, the gold items and held-out new labels, and promotes the candidate only when the gate
says so; every candidate is registered with its lineage. Two rounds never run at once; a round that fails
or is killed is resumed by the next run."""

_RUN = """Run one round of the learning loop and print its result as JSON (promoted, skipped, reason, version,
verdict). With --every-s, run a round every N seconds until stopped (Ctrl-C, SIGTERM); a round refused
because another one is running is reported and retried at the next tick."""
_ROLLBACK = """Promote the version that was promoted before the current one (again: further back). The
version's folder is verified first; the model generation moves, so serving replicas swap to it."""
_STATUS = """The promoted version, the model generation and the latest rounds (status, stage, owner,
result), as JSON."""
_HISTORY = """Every registered version, oldest first, with its lineage (parent, data digests, label counts,
scorecards, gate verdict) and every promotion, as JSON."""
_ABANDON = """Give up the unfinished round (failed, or its owner dead) so that the next loop run starts a
fresh one; its labels are not consumed. A round running with a live lease is refused. Prints the round as
JSON."""
_ADOPT = """Register a model folder as version 1 and promote it: the model served before the loop starts, so
the first round has a parent to train from and compare with. Refused once a version is promoted."""


def _common(p: argparse.ArgumentParser, *, fields: set[str] | None = None) -> None:
    add(p, "--config")
    add_dataclass_args(p, _CONFIG, only=fields or {"loop_db", "queue_key_file", "registry_root"})
    p.add_argument(
        "--who",
        default=None,
        help="who does it, recorded with the versions, promotions and audit rows (default: user@host)",
    )


def _sub(sub: Any, name: str, help_: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(  # no abbreviations: a flag counts as given only when it is in argv, spelled out
        name,
        help=help_,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


def build_parser(command: str = "loop") -> argparse.ArgumentParser:
    p = parser(command, DESCRIPTION)
    actions = "{run,rollback,status,history,adopt,abandon}"
    sub = p.add_subparsers(dest="action", required=True, metavar=actions)
    r = _sub(sub, "run", "run one round (or one every --every-s seconds)", _RUN)
    _common(r, fields={f.name for f in source_fields(_CONFIG) if f.name != "gate"})
    r.add_argument(
        "--replay",
        action="append",
        default=None,
        help="earlier training data: a manifest or shard folder (repeatable; replaces the config's list)",
    )
    r.add_argument(
        "--override",
        action="append",
        default=None,
        help="section.key=value applied to the experiment (repeatable; replaces the config's list)",
    )
    r.add_argument("--every-s", type=float, default=None, help="run a round every N seconds until stopped")
    for flag in ("--gate-metric", "--gate-tolerance", "--gate-min-gain"):  # default: the config's gate
        add(r, flag, default=None)
    b = _sub(sub, "rollback", "promote the version promoted before the current one", _ROLLBACK)
    _common(b)
    add(b, "--why", default="")
    s = _sub(sub, "status", "the promoted version and the latest rounds", _STATUS)
    _common(s)
    s.add_argument("--last", type=int, default=10, help="how many of the latest rounds to show (default: 10)")
    h = _sub(sub, "history", "every version with its lineage", _HISTORY)
    _common(h)
    a = _sub(sub, "adopt", "register and promote the model served today", _ADOPT)
    a.add_argument("model_dir", type=existing_dir, metavar="MODEL_DIR", help="the saved model folder")
    _common(a)
    add(a, "--why", default="adopted")
    x = _sub(sub, "abandon", "give up an unfinished round that cannot complete", _ABANDON)
    _common(x)
    add(x, "--why", default="")
    return p


def _config(args: argparse.Namespace) -> Any:
    """The --config file's values, under the flags given on the command line."""
    from ximgctx.loop.config import load_loop_config

    argv = getattr(args, "argv", [])
    given = {}
    for f in source_fields(_CONFIG):
        flag = "--" + f.name.replace("_", "-")
        if any(a == flag or a.startswith(flag + "=") for a in argv) and hasattr(args, f.name):
            given[f.name] = getattr(args, f.name)
    if getattr(args, "replay", None):
        given["replay"] = list(args.replay)
    if getattr(args, "override", None):
        given["overrides"] = list(args.override)
    config = load_loop_config(args.config, **given)
    gate = {k: getattr(args, f"gate_{k}", None) for k in ("metric", "tolerance", "min_gain")}
    if any(v is not None for v in gate.values()):
        from dataclasses import replace

        config.gate = replace(config.gate, **{k: v for k, v in gate.items() if v is not None})
    return config


def _who(args: argparse.Namespace) -> str:
    if args.who:
        return str(args.who)
    from ximgctx.queue.rounds import default_owner

    return default_owner().rsplit(":", 1)[0]


def _print(value: Any) -> None:
    print(json.dumps(value, sort_keys=True, default=str), flush=True)


def _registry(config: Any) -> tuple[Any, Any]:
    from ximgctx.loop.round import open_store
    from ximgctx.queue.registry import Registry

    config.require("loop_db", "registry_root")
    store = open_store(config)
    return store, Registry(store, config.registry_root)


def _run(args: argparse.Namespace, command: str) -> int:
    from ximgctx.errors import XimgctxError
    from ximgctx.loop.round import open_store, run_round

    config = _config(args)
    who = _who(args)
    if args.every_s is not None and not args.every_s > 0:
        print(f"ximgctx {command} run: --every-s must be positive seconds", file=sys.stderr)
        return 2
    store = open_store(config)
    stop = threading.Event()
    if args.every_s is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        while True:
            try:
                result = run_round(config, who=who, store=store)
                _print(result.to_dict())
            except XimgctxError as e:
                if args.every_s is None:
                    raise
                _print({"error": str(e)})
            if args.every_s is None or stop.wait(args.every_s):
                return 0
    finally:
        store.close()


def _rollback(args: argparse.Namespace) -> int:
    store, registry = _registry(_config(args))
    try:
        v = registry.rollback(who=_who(args), role="admin", why=args.why)
        _print({"promoted": v.version, "digest": v.digest, "generation": registry.generation()})
    finally:
        store.close()
    return 0


def _status(args: argparse.Namespace) -> int:
    from ximgctx.queue.rounds import Rounds

    store, registry = _registry(_config(args))
    try:
        generation, promoted = registry.served()
        _print(
            {
                "promoted": promoted.to_dict() if promoted else None,
                "generation": generation,
                "versions": len(registry.versions()),
                "rounds": [r.to_dict() for r in Rounds(store).last(args.last)],
            }
        )
    finally:
        store.close()
    return 0


def _history(args: argparse.Namespace) -> int:
    store, registry = _registry(_config(args))
    try:
        versions = registry.versions()
        _print(
            {
                "versions": [
                    {**v.to_dict(), "lineage": [a.version for a in registry.lineage(v.version)]}
                    for v in versions
                ],
                "promotions": registry.promotions(),
            }
        )
    finally:
        store.close()
    return 0


def _adopt(args: argparse.Namespace) -> int:
    store, registry = _registry(_config(args))
    try:
        v = registry.adopt(args.model_dir, who=_who(args), role="admin", why=args.why)
        _print(v.to_dict())
    finally:
        store.close()
    return 0


def _abandon(args: argparse.Namespace) -> int:
    from ximgctx.loop.round import open_store
    from ximgctx.queue.rounds import Rounds

    config = _config(args)
    store = open_store(config)
    try:
        rnd = Rounds(store).abandon(who=_who(args), why=args.why)
        _print(rnd.to_dict() if rnd is not None else None)
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None, command: str = "loop") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(command).parse_args(argv)
    args.argv = argv
    actions = {
        "run": lambda: _run(args, command),
        "rollback": lambda: _rollback(args),
        "status": lambda: _status(args),
        "history": lambda: _history(args),
        "adopt": lambda: _adopt(args),
        "abandon": lambda: _abandon(args),
    }
    return run(f"{command} {args.action}", actions[args.action])
