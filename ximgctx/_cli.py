"""Argument helpers every command shares, so a flag means one thing everywhere.

* ``--data``: the posts a command reads; ``--out``: what it writes (``-`` for stdout where the output is
  JSONL); ``--model``: a model folder (or hub id); ``--overwrite``: replace an output that is not the
  command's own kind of artifact.
* :func:`add_dataclass_args` makes one flag per field of a config dataclass, with the field's own comment as
  its help, so a command that mirrors a config (``synth``, ``simulate-labeling``) cannot drift from it.
* :func:`run` turns a user's mistake (:class:`~ximgctx.errors.XimgctxError`) into one line on stderr and exit
  status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import io
import re
import sys
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from ximgctx.errors import XimgctxError

__all__ = [
    "add_data_args",
    "add_dataclass_args",
    "add_model_args",
    "add_output_args",
    "dataclass_from_args",
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


def add_model_args(p: argparse.ArgumentParser, *, required: bool = True, device: bool = True) -> None:
    p.add_argument(
        "--model", required=required, help="model folder written by save_pretrained / ximgctx train"
    )
    p.add_argument(
        "--expect-sha256", default=None, help="refuse a model folder whose artifact digest differs"
    )
    p.add_argument(
        "--trust-remote-arch",
        action="store_true",
        help="allow an hf-hub:/local-dir: architecture (can run code shipped with it): trusted sources only",
    )
    if device:
        p.add_argument(
            "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1 ..."
        )
        p.add_argument("--batch-size", type=int, default=32, help="posts per forward pass")


def add_data_args(
    p: argparse.ArgumentParser,
    *,
    required: bool = True,
    help: str | None = None,
    former: str | None = None,
) -> None:
    """``--data`` (``former``: the flag's old name, still accepted), ``--image-root`` and ``--on-error``."""
    names = ["--data", former] if former else ["--data"]
    help = help or "posts: .jsonl, .parquet, or a folder of shards"
    if former:
        help += f" ({former}: the former name)"
    p.add_argument(*names, dest="data", required=required, help=help)
    p.add_argument(
        "--image-root", default=None, help="resolve relative image paths here (default: the file's folder)"
    )
    p.add_argument(
        "--on-error",
        default="skip",
        choices=["skip", "raise"],
        help="a malformed record is skipped and reported (default) or stops the command",
    )


def add_output_args(
    p: argparse.ArgumentParser,
    *,
    help: str,
    stdout: bool = False,
    overwrite: bool = False,
    required: bool = True,
) -> None:
    p.add_argument("--out", required=required, help=help + (" ('-' for stdout)" if stdout else ""))
    if overwrite:
        p.add_argument(
            "--overwrite", action="store_true", help="replace an output folder that holds something else"
        )


@contextlib.contextmanager
def open_text_out(path: str | Path, *, inputs: Iterable[str | Path | None] = ()) -> Iterator[TextIO]:
    """A text output: stdout for ``-``, else a file written atomically (refusing a path that is an input)."""
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    from ximgctx._artifacts import atomic_output

    with atomic_output(path, inputs=inputs) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield f


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
    cls: type,
    *,
    exclude: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """One ``--field-name`` flag per scalar field of ``cls`` (help = the field's comment); returns the
    names."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    defaults = defaults or {}
    added = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.name.startswith("_"):
            continue
        tp = _scalar(hints[f.name])
        if tp is None:
            continue
        default = defaults.get(f.name, f.default)
        flag = "--" + f.name.replace("_", "-")
        help_ = comments.get(f.name, "")
        if tp is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            choices = (
                list(typing.get_args(hints[f.name]))
                if typing.get_origin(hints[f.name]) is typing.Literal
                else None
            )
            p.add_argument(
                flag, type=tp, default=default, choices=choices, help=f"{help_} (default: {default})"
            )
        added.append(f.name)
    return added


def dataclass_from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """``cls`` built from the flags :func:`add_dataclass_args` added (and ``extra`` fields)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**values, **extra})


def help_text(p: argparse.ArgumentParser) -> str:
    buf = io.StringIO()
    p.print_help(buf)
    return buf.getvalue()
