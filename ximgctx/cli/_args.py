"""Argument helpers every command shares, so a flag means one thing everywhere.

This module imports only the standard library, :mod:`ximgctx.errors` and :mod:`ximgctx._artifacts` (stdlib
only): every command's ``--help`` and every argument error is answered with it alone, before torch is
imported.

* :data:`FLAGS` is the vocabulary: flag name -> its one meaning (dest, type, action, choices, help). Commands
  take their flags from it with :func:`add`, which may change only ``default``, ``required`` and ``metavar``.
  ``--data`` is always the posts a command reads; ``--out`` what it writes (``-`` for stdout where the output
  is JSONL); ``--model`` a model folder or hub id; ``--policy`` the moderation policy; ``--governance`` the
  governance policy; ``--key-file`` the governance key and ``--queue-key-file`` the queue's.
* Input paths are checked by argparse ``type`` functions (:func:`existing_path`, :func:`existing_file`,
  :func:`existing_dir`, :func:`model_ref`): a missing file is an argument error naming the flag and the path.
* :func:`add_dataclass_args` makes one flag per scalar field of a config dataclass, its default the field's
  and its help the field's comment, read from the module's source (:func:`source_fields`) so that nothing
  heavy is imported; a command that mirrors a config cannot drift from it.
* :func:`run` turns a user's mistake (:class:`~ximgctx.errors.XimgctxError`) into one line on stderr and exit
  status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import operator
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ximgctx._artifacts import open_text_out
from ximgctx.errors import XimgctxError

__all__ = [
    "FLAGS",
    "add",
    "add_dataclass_args",
    "dataclass_from_args",
    "existing_dir",
    "existing_file",
    "existing_path",
    "model_ref",
    "source_constant",
    "source_default",
    "source_doc",
    "source_fields",
    "field_comments",
    "open_text_out",
    "parser",
    "plain",
    "run",
]


_RST_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")


def plain(text: str) -> str:
    """Docstring text as a terminal shows it: RST roles and literals without their markup."""
    text = _RST_ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return text.replace("``", "")


def parser(command: str, description: str) -> argparse.ArgumentParser:
    """A command's parser with its own description (shown by ``--help``, RST-free)."""
    return argparse.ArgumentParser(
        prog=f"ximgctx {command}",
        description=plain(inspect.cleandoc(description)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run(command: str, fn: Callable[[], int | None]) -> int:
    """Run a command body: a user's error is one line and exit 2, a bug keeps its traceback."""
    try:
        return int(fn() or 0)
    except XimgctxError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------ argument types
# Each checks a path before any heavy import; argparse turns its error into
# "ximgctx CMD: error: argument --flag: ..." and exit status 2.

_HUB_ID = re.compile(r"^((hf-)?hub:)?[A-Za-z0-9][\w.-]*/[\w.-]+$|^hub:[A-Za-z0-9][\w.-]*$")


def existing_path(value: str) -> str:
    """A file or folder that exists (posts: a .jsonl/.parquet file or a folder of shards)."""
    if not os.path.exists(value):
        raise argparse.ArgumentTypeError(f"no such file or folder: {value}")
    return value


def existing_file(value: str) -> str:
    """A file that exists."""
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(
            f"no such file: {value}" + (" (it is a folder)" if os.path.isdir(value) else "")
        )
    return value


def existing_dir(value: str) -> str:
    """A folder that exists."""
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(
            f"no such folder: {value}" + (" (it is a file)" if os.path.isfile(value) else "")
        )
    return value


def model_ref(value: str) -> str:
    """A model folder that exists, or something shaped like a hub id (``org/name``, ``hf-hub:org/name``)."""
    if os.path.isdir(value):
        return value
    if os.path.exists(value):
        raise argparse.ArgumentTypeError(f"{value} is a file; a model is a folder or a hub id org/name")
    head = value.partition("/")[0]
    if _HUB_ID.match(value) and not value.startswith(".") and not os.path.isdir(head):
        return value  # runs/bset, with runs/ a folder here, is a mistyped folder and not a hub id
    raise argparse.ArgumentTypeError(f"no such model folder: {value} (nor a hub id of the form org/name)")


# ------------------------------------------------------------------------------ the vocabulary
_DEFAULT = " (default: %(default)s)"

#: flag -> its one meaning, shared by every command that takes it. :func:`add` may change only ``default``
#: and ``required`` (and, for repeatable targets, make it ``append``); ``tests/cli/test_cli_flags.py`` checks
#: that every command's parser agrees with this table.
FLAGS: dict[str, dict[str, Any]] = {
    # inputs and outputs
    "--data": {"type": existing_path, "help": "posts read: .jsonl, .parquet, or a folder of shards"},
    "--image-root": {
        "type": existing_dir,
        "help": "resolve relative image paths here (default: the posts file's folder)",
    },
    "--confine-images": {
        "action": argparse.BooleanOptionalAction,
        "default": None,
        "help": "read images only from inside --image-root (or the posts file's folder): no absolute paths "
        "elsewhere, no '..' out, no symlinks out; problems never name a server path. Without either flag a "
        "datasets folder's image paths stay inside it and a manifest's are read as given; "
        "--no-confine-images also reads a datasets folder's paths that leave it",
    },
    "--on-error": {
        "choices": ["skip", "raise"],
        "help": "a malformed record is skipped and reported, or stops the command" + _DEFAULT,
    },
    "--out": {"help": "what the command writes"},  # each command says what (see the test's exceptions)
    "--overwrite": {
        "action": "store_true",
        "help": "replace an output folder that holds something other than this command's own output",
    },
    "--report": {
        "help": "where the command's report goes, JSON (govern: the audit, counts only; calibrate: the "
        "operating points; purge: one line per target, appended)"
    },
    "--config": {"type": existing_file, "help": "the command's YAML config (see configs/)"},
    "--allow-ungoverned": {
        "action": "store_true",
        "help": "accept posts that did not pass `ximgctx govern` (private posts, direct messages, "
        "opted-out authors or personal data may be in them)",
    },
    # models
    "--model": {
        "type": model_ref,
        "help": "model folder written by save_pretrained / ximgctx train, or a hub id org/name",
    },
    "--expect-sha256": {"help": "refuse a model folder whose artifact digest differs"},
    "--trust-remote-arch": {
        "action": "store_true",
        "help": "allow an hf-hub:/local-dir: architecture (can run code shipped with it): trusted sources "
        "only",
    },
    "--device": {"help": "auto (a GPU when there is one), cpu, cuda, cuda:1 ..." + _DEFAULT},
    "--dtype": {
        "choices": ["auto", "fp32", "bf16", "fp16"],
        "help": "autocast dtype; auto is bf16 on GPU and fp32 on CPU" + _DEFAULT,
    },
    "--batch-size": {"type": int, "help": "posts per batch (forward pass or training step)" + _DEFAULT},
    "--no-progress": {"action": "store_true", "help": "no progress bar"},
    "--arch": {"help": "encoder architecture, an open_clip name" + _DEFAULT},
    # moderation, search, memory
    "--policy": {
        "type": existing_file,
        "help": "moderation policy YAML (default: the shipped configs/moderation/default.yaml)",
    },
    "--explain": {
        "choices": ["flagged", "all", "none"],
        "help": "which posts get moderation explanations (each costs three extra forward passes)" + _DEFAULT,
    },
    "--index": {"type": existing_dir, "help": "search index folder written by ximgctx index"},
    "--memory": {
        "help": "label memory folder: blended into predictions; memory add writes it, a server reads it "
        "as the base under the loop store's feedback and votes"
    },
    "--nlist": {"type": int, "help": "IVF cells (default: about 4 sqrt(N))"},
    "--nprobe": {"type": int, "help": "IVF cells visited per query" + _DEFAULT},
    "--space": {"choices": ["fused", "image"], "help": "vector space searched" + _DEFAULT},
    "-k": {"type": int, "help": "how many results: posts to choose, or hits to return" + _DEFAULT},
    "--timeout": {"type": float, "help": "seconds to wait for a server's answer" + _DEFAULT},
    # governance and keys
    "--governance": {
        "type": existing_file,
        "help": "governance policy YAML (default: the shipped default policy)",
    },
    "--key-file": {"help": "the operator's governance key file (default: $XIMGCTX_GOVERNANCE_KEY)"},
    "--queue-key-file": {"help": "the labeling queue's HMAC key file (default: $XIMGCTX_QUEUE_KEY)"},
    "--allow-url-network": {
        "metavar": "CIDR",
        "help": "a network that allowed image hosts may resolve into although it is not public (loopback, "
        "private, link-local: 10.0.0.0/8, 127.0.0.1); none by default",
    },
    "--loop-db": {
        "help": "the loop store (a SQLite file or postgresql:// URL, keyed by --queue-key-file) that "
        "/v1/feedback writes to and every replica reads (queue serve: the queue's --db unless given)"
    },
    "--registry-root": {
        "metavar": "DIR",
        "help": "the model registry's folder (its versions' rows are in the loop store): ximgctx loop "
        "registers and promotes versions there; ximgctx serve serves the promoted one (else --model) and "
        "swaps to the version a promotion or rollback names",
    },
    "--why": {"help": "the reason, kept in the audit"},
    "--opt-out": {"type": existing_file, "help": "file of opted-out author ids, one per line"},
    # human in the loop
    "--method": {
        "choices": ["majority", "dawid_skene", "soft"],
        "help": "vote aggregation: majority vote, Dawid-Skene hard labels, or Dawid-Skene posteriors as "
        "soft labels" + _DEFAULT,
    },
    "--seed": {"type": int, "help": "random seed: the same seed gives the same result" + _DEFAULT},
    # shards and benchmarks
    "--posts-per-shard": {"type": int, "help": "records per shard file" + _DEFAULT},
    "--shard-format": {"choices": ["parquet", "webdataset"], "help": "shard file format" + _DEFAULT},
    "--image-size": {"type": int, "help": "side of the generated images, pixels" + _DEFAULT},
    "--n": {"type": int, "help": "benchmark size: posts generated and timed (vectors for search)" + _DEFAULT},
    "--replies": {"type": int, "help": "replies per generated post" + _DEFAULT},
    "--threads": {"type": int, "help": "torch CPU threads (default: torch's own)"},
    "--workdir": {"help": "where generated files go (default: a temporary folder)"},
    "--repeats": {"type": int, "help": "times each figure is measured (the median is reported)" + _DEFAULT},
    "--mc-samples": {"type": int, "help": "mc_dropout: stochastic forward passes per post" + _DEFAULT},
    "--n-train": {
        "type": int,
        "help": "labeled training posts generated (ContextBench's train split)" + _DEFAULT,
    },
    # simulated labeling (simulate-labeling, bench drift): the crowd, the model trained on cached features
    "--labelers": {"type": int, "help": "simulated labelers" + _DEFAULT},
    "--votes-per-post": {"type": int, "help": "simulated labelers asked per post" + _DEFAULT},
    "--accuracy": {
        "type": float,
        "help": "an honest simulated labeler's chance of a correct answer" + _DEFAULT,
    },
    "--spammers": {"type": float, "help": "share of simulated labelers answering at random" + _DEFAULT},
    "--rounds": {"type": int, "help": "rounds of labeling, each followed by fine-tuning" + _DEFAULT},
    "--tasks": {"help": "comma-separated ContextBench tasks labeled and scored" + _DEFAULT},
    "--epochs": {"type": int, "help": "fine-tuning passes over the labeled posts per round" + _DEFAULT},
    "--lr": {"type": float, "help": "AdamW learning rate of the fusion module and heads" + _DEFAULT},
    "--hidden-dim": {"type": int, "help": "fusion width" + _DEFAULT},
    "--fusion-layers": {"type": int, "help": "attention fusion layers" + _DEFAULT},
    "--dropout": {"type": float, "help": "fusion dropout (training, and mc_dropout's passes)" + _DEFAULT},
    "--encoder": {
        "help": "pretrained encoder weights (open_clip_model.safetensors, as pretrain writes)" + _DEFAULT
    },
    "--replay-size": {"type": int, "help": "earlier training posts replayed (sampled) per round" + _DEFAULT},
    "--k": {"type": int, "help": "agreeing labelers a label needs (the store's rule)" + _DEFAULT},
    # the promotion gate (evaluation.gate.GateRule)
    "--gate-metric": {"help": "what must improve to promote: mean, task:NAME or category:NAME" + _DEFAULT},
    "--gate-tolerance": {
        "type": float,
        "help": "the largest drop allowed in any task, category or gold accuracy (absolute)" + _DEFAULT,
    },
    "--gate-min-gain": {
        "type": float,
        "help": "the metric (or new-label accuracy on a tie) must improve by more than this" + _DEFAULT,
    },
    "--n-test": {"type": int, "help": "ContextBench test posts generated" + _DEFAULT},
    "--quick": {"action": "store_true", "help": "tiny sizes, for tests (the figures mean little)"},
}

_MAY_CHANGE = {"default", "required", "metavar"}


def add(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    *,
    repeat: bool = False,
    **change: Any,
) -> argparse.Action:
    """Add ``flag`` with its meaning from :data:`FLAGS`; only ``default``, ``required`` and ``metavar`` may
    differ per command. ``repeat``: the command takes several (``action="append"``, a list)."""
    if flag not in FLAGS:
        raise KeyError(f"{flag} is not in ximgctx.cli._args.FLAGS; add it there with its one meaning")
    bad = set(change) - _MAY_CHANGE
    if bad:
        raise TypeError(f"{flag}: only {sorted(_MAY_CHANGE)} may differ per command, not {sorted(bad)}")
    kwargs = {**FLAGS[flag], **change}
    if repeat:
        kwargs["action"] = "append"
        kwargs.setdefault("default", [])
        kwargs["help"] += " (repeatable)"
    return p.add_argument(flag, **kwargs)


# ------------------------------------------------------------------------------ dataclasses from source
# A config dataclass's fields are read from its module's source with ``ast`` (never imported): the module
# may import numpy or torch, and ``--help`` must not. ``tests/cli/test_cli_flags.py`` checks the values read
# against the imported dataclass.


@dataclasses.dataclass(frozen=True)
class SourceField:
    """One field of a dataclass as its source declares it."""

    name: str
    type: Any  # the annotation, evaluated over builtins and typing (None where it is not a plain type)
    default: Any  # dataclasses.MISSING without a plain default
    comment: str  # the field's comment (its help)


_TYPES = {
    "int": int, "float": float, "str": str, "bool": bool, "bytes": bytes, "None": None, "list": list,
    "dict": dict, "tuple": tuple, "Any": Any, "Literal": typing.Literal, "Optional": typing.Optional,
}  # fmt: skip


def _module_file(module: str) -> Path:
    root = Path(__file__).resolve().parent.parent  # the ximgctx package
    parts = module.split(".")
    if parts[0] != "ximgctx":
        raise ValueError(f"{module}: only ximgctx's own dataclasses are read from source")
    base = root.joinpath(*parts[1:])
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _const(node: ast.AST, names: dict[str, Any]) -> Any:
    """A constant expression's value (literals, module constants, arithmetic); ``MISSING`` otherwise."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _const(node.operand, names)
        return dataclasses.MISSING if v is dataclasses.MISSING else -v
    if isinstance(node, ast.BinOp):
        a, b = _const(node.left, names), _const(node.right, names)
        ops = {
            ast.Add: operator.add,
            ast.Sub: operator.sub,
            ast.Mult: operator.mul,
            ast.LShift: operator.lshift,
        }
        if dataclasses.MISSING not in (a, b) and type(node.op) in ops:
            return ops[type(node.op)](a, b)
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_const(e, names) for e in node.elts]
        if dataclasses.MISSING not in values:
            return list(values) if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.Dict) and None not in node.keys:
        keys = [_const(k, names) for k in node.keys if k is not None]
        values = [_const(v, names) for v in node.values]
        if dataclasses.MISSING not in keys + values:
            return dict(zip(keys, values, strict=True))
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "field":
        for kw in node.keywords:
            if kw.arg == "default":
                return _const(kw.value, names)
            if kw.arg == "default_factory" and isinstance(kw.value, ast.Lambda):
                return _const(kw.value.body, names)
            factory = kw.value.id if isinstance(kw.value, ast.Name) else None
            if kw.arg == "default_factory" and factory in ("list", "dict", "tuple"):
                return {"list": [], "dict": {}, "tuple": ()}[factory]
    return dataclasses.MISSING


def _parse(module: str) -> tuple[str, ast.Module, dict[str, Any]]:
    """A module's source, its tree, and its top-level constants."""
    path = _module_file(module)
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    names: dict[str, Any] = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(target, ast.Name) and node.value:
            value = _const(node.value, names)
            if value is not dataclasses.MISSING:
                names[target.id] = value
    return text, tree, names


def source_doc(module: str) -> str:
    """A module's docstring, read from source (``--help`` shows it without importing the module)."""
    return inspect.cleandoc(ast.get_docstring(_parse(module)[1]) or "")


def _strategy_flag() -> None:
    """``--strategy``: its choices read from hitl.select's source (nothing imported)."""
    FLAGS["--strategy"] = {
        "choices": source_constant("ximgctx.hitl.select:STRATEGIES"),
        "help": "how posts are picked: entropy / margin: the most uncertain; mc_dropout: BALD over "
        "dropout passes; diverse: an uncertainty-weighted diverse batch (k-means++); random" + _DEFAULT,
    }


def source_constant(ref: str) -> Any:
    """The value of the top-level constant ``"module:NAME"`` (a tuple of choices, a default), read from
    source."""
    module, name = ref.split(":")
    _, _, names = _parse(module)
    if name not in names:
        raise LookupError(f"{_module_file(module)}: no constant {name}")
    return names[name]


def source_fields(ref: str | type) -> list[SourceField]:
    """The fields of the dataclass ``"module:Class"``, read from the module's source (or of a dataclass
    already imported)."""
    if not isinstance(ref, str):
        hints = typing.get_type_hints(ref)
        comments = field_comments(ref)
        return [
            SourceField(f.name, hints[f.name], f.default, comments.get(f.name, ""))
            for f in dataclasses.fields(ref)
        ]
    module, cls_name = ref.split(":")
    path = _module_file(module)
    text, tree, names = _parse(module)
    cls_node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name), None)
    if cls_node is None:
        raise LookupError(f"{path}: no class {cls_name}")
    lines = text.splitlines()[cls_node.lineno - 1 : cls_node.end_lineno]  # whole lines: trailing comments too
    comments = _comments("\n".join(lines))
    out = []
    for node in cls_node.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        try:
            tp = eval(ast.unparse(node.annotation), {"__builtins__": {}}, dict(_TYPES))  # noqa: S307
        except Exception:  # a type this module does not know: not a flag
            tp = None
        default = dataclasses.MISSING if node.value is None else _const(node.value, names)
        name = node.target.id
        out.append(SourceField(name, tp, default, comments.get(name, "")))
    return out


def _comments(source: str) -> dict[str, str]:
    """Each field's trailing ``# comment``, or the comment lines right above it."""
    out: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("#:"):
            above.append(stripped.lstrip("#").strip())
            continue
        m = _COMMENT.match(line)
        if m:
            text = m.group(2).strip() if m.group(2) else " ".join(above)
            if text:
                out.setdefault(m.group(1), text)
        above = []
    return out


def source_default(ref: str, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``"module:Class"`` (read from source)."""
    for f in source_fields(ref):
        if f.name == name:
            return f.default
    raise LookupError(f"{ref} has no field {name!r}")


# ------------------------------------------------------------------------------ dataclass -> flags
_COMMENT = re.compile(r"^\s*(\w+)\s*:[^#]*?(?:#\s*(.*))?$")


def field_comments(cls: type) -> dict[str, str]:
    """Each field's documentation in the dataclass's source: its trailing ``# comment``, or the comment lines
    right above it (where a long comment goes)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    above: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("#:"):
            above.append(stripped.lstrip("#").strip())
            continue
        m = _COMMENT.match(line)
        if m and m.group(1) in names:
            text = m.group(2).strip() if m.group(2) else " ".join(above)
            if text:
                out[m.group(1)] = text
        above = []
    return out


def _scalar(tp: Any) -> type | None:
    """The flag type of a field annotation (``int``, ``float``, ``str``, ``bool``), or None if not
    flaggable."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _scalar(args[0]) if len(args) == 1 else None
    if origin is typing.Literal:
        return type(typing.get_args(tp)[0])
    return tp if tp in (int, float, str, bool) else None


def add_dataclass_args(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    ref: str | type,
    *,
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """One ``--field-name`` flag per scalar field of the dataclass ``ref`` (``"module:Class"``, read from
    source so nothing heavy is imported): its default is the field's, its help the field's comment. A name
    that is in :data:`FLAGS` keeps the vocabulary's meaning and takes only the field's default. Returns the
    field names added."""
    defaults = defaults or {}
    only = None if only is None else set(only)
    added = []
    for f in source_fields(ref):
        if f.name in exclude or f.name.startswith("_") or (only is not None and f.name not in only):
            continue
        tp = _scalar(f.type)
        if tp is None or f.default is dataclasses.MISSING and f.name not in defaults:
            continue
        default = defaults.get(f.name, f.default)
        flag = "--" + f.name.replace("_", "-")
        if flag in FLAGS:
            add(p, flag, default=default)
        elif tp is bool and default is False:
            p.add_argument(flag, action="store_true", help=f.comment)
        elif tp is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=f.comment)
        else:
            literal = typing.get_origin(f.type) is typing.Literal
            choices = list(typing.get_args(f.type)) if literal else None
            p.add_argument(flag, type=tp, default=default, choices=choices, help=f.comment + _DEFAULT)
        added.append(f.name)
    return added


def dataclass_from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """``cls`` (imported by the command's body) built from the flags :func:`add_dataclass_args` added (and
    ``extra`` fields)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**values, **extra})


def help_text(p: argparse.ArgumentParser) -> str:
    buf = io.StringIO()
    p.print_help(buf)
    return buf.getvalue()


_strategy_flag()
