"""Reading labelers' votes: rows ``(post_id, labeler, task, label)`` from JSONL, CSV, Parquet or a manifest.

Every vote is checked before aggregation. A bad one (a missing field, an empty labeler, an unknown post when
the posts are known, an unknown task or label when the tasks are known, several labels for a multiclass
task, a second vote by the same labeler on the same post and multiclass task) is recorded as a
:class:`BadVote` naming its file and row, logged, and skipped; the rest go on.

Label values: a string, or for multilabel tasks a list of strings (the set the labeler ticked, ``[]`` for
"none of these"). In CSV a list is written as JSON (``"[""joke"", ""meme""]"``); several rows by the same
labeler on the same post and multilabel task are united, so a one-label-per-row export works as is.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ximgctx._yaml as _yaml
from ximgctx.config import ModelConfig, TaskSpec
from ximgctx.data.record import Post
from ximgctx.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "FIELDS",
    "BadVote",
    "Vote",
    "VoteSet",
    "check_votes",
    "iter_vote_rows",
    "load_tasks",
    "read_votes",
    "votes_from_posts",
]

#: The columns of a vote row.
FIELDS = ("post_id", "labeler", "task", "label")


@dataclass(frozen=True)
class Vote:
    """One labeler's answer for one post and task."""

    post_id: str  # the post's id
    labeler: str  # who voted (a stable id; reliability is estimated per labeler)
    task: str  # the task name, as in a post's "labels"
    label: str | tuple[str, ...]  # multiclass: one label; multilabel: the (sorted) set of labels ticked
    source: str = "<votes>"  # file the vote came from, for messages
    row: int = 0  # 1-based line (JSONL, CSV) or row (Parquet) in ``source``


@dataclass(frozen=True)
class BadVote:
    """A vote that was skipped, and why."""

    source: str
    row: int
    field: str | None  # the offending column, when one is to blame
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.row}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "row": self.row, "field": self.field, "reason": self.reason}


@dataclass
class VoteSet:
    """Checked votes, what was skipped, and the kind of every task."""

    votes: list[Vote] = field(default_factory=list)
    problems: list[BadVote] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # task -> multiclass | multilabel
    read: int = 0  # rows seen, good and bad

    def summary(self) -> str:
        lines = [f"read {self.read} votes, kept {len(self.votes)}, skipped {len(self.problems)}"]
        lines += [f"  {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"  ... and {len(self.problems) - 20} more")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- tasks


def load_tasks(source: Any) -> list[TaskSpec]:
    """Task specs from a list (of ``TaskSpec`` or dicts), a ``ModelConfig``, ``"contextbench"``, a YAML/JSON
    file holding a ``tasks:`` list (``configs/tasks/*.yaml``, an experiment file's ``model.tasks``), or a
    model folder (its ``config.json``)."""
    if isinstance(source, ModelConfig):
        return list(source.tasks)
    if isinstance(source, str) and source == "contextbench":
        from ximgctx.contextbench import TASKS

        return [TaskSpec(**d) for d in TASKS]
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise InputError(f"{source}: no such task file or model folder")
        data = _yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML reads JSON too
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = data["model"]
        tasks = data.get("tasks") if isinstance(data, dict) else data
        if not isinstance(tasks, list):
            raise InputError(f"{path}: expected a 'tasks:' list (or model.tasks), got {type(tasks).__name__}")
        return [TaskSpec(**t) if isinstance(t, dict) else t for t in tasks]
    return [t if isinstance(t, TaskSpec) else TaskSpec(**t) for t in source]


# ------------------------------------------------------------------------------------------ reading


def _parse_cell(value: Any) -> Any:
    """A CSV or Parquet cell: JSON lists are decoded, empty strings are missing."""
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                return json.loads(s)
            except json.JSONDecodeError:
                return value
        return value
    if hasattr(value, "tolist"):  # numpy arrays from Parquet list columns
        return value.tolist()
    return value


def iter_vote_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """``(row, record)``; the row is the file's line (JSONL, CSV with its header as line 1) or 1-based row."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as e:
                    yield line_no, ValueError(f"malformed JSON ({e.msg} at column {e.colno})")
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            missing = [c for c in FIELDS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(
                    f"{path}: the header must name the columns {list(FIELDS)}; missing {missing}"
                )
            for rec in reader:
                yield reader.line_num, {k: _parse_cell(v) for k, v in rec.items() if k is not None}
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        missing = [c for c in FIELDS if c not in table.column_names]
        if missing:
            raise InputError(
                f"{path}: the Parquet file must have the columns {list(FIELDS)}; missing {missing}"
            )
        for i, rec in enumerate(table.to_pylist(), start=1):
            yield i, {k: _parse_cell(v) for k, v in rec.items()}
    else:
        raise InputError(f"{path}: unknown votes format {suffix!r}; use .jsonl, .csv, .tsv or .parquet")


def _raw(value: Any) -> str | list[str] | None:
    """A label cell as a string, a list of strings, or None when it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, (list, tuple)) and all(
        isinstance(x, (str, int)) and not isinstance(x, bool) for x in value
    ):
        return [str(x) for x in value]
    return None


_Parsed = tuple[str, int, str, str, str, "str | list[str]"]  # source, row, post, labeler, task, label


class _Bad(Exception):
    """A vote record that cannot be used: the field at fault (or None) and why."""

    def __init__(self, fld: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = fld, reason


def _check_row(
    rec: Any, specs: dict[str, TaskSpec] | None, known: set[str] | None
) -> tuple[str, str, str, str | list[str]]:
    """One raw vote record -> ``(pid, labeler, task, label)``; raises :class:`_Bad` for a bad vote."""
    if isinstance(rec, Exception):
        raise _Bad(None, str(rec))
    if not isinstance(rec, Mapping):
        raise _Bad(None, f"a vote is an object with {list(FIELDS)}, got {type(rec).__name__}")
    missing = [
        f
        for f in FIELDS
        if rec.get(f) is None or (isinstance(rec.get(f), str) and not rec[f].strip() and f != "labeler")
    ]
    if missing:
        raise _Bad(missing[0], f"missing {', '.join(missing)}")
    pid, labeler, task = (rec[f] for f in ("post_id", "labeler", "task"))
    if isinstance(pid, bool) or not isinstance(pid, (str, int)):
        raise _Bad("post_id", f"post_id must be a string, got {pid!r}")
    if not isinstance(labeler, (str, int)) or isinstance(labeler, bool) or not str(labeler).strip():
        raise _Bad("labeler", f"empty labeler {labeler!r}")
    pid, labeler, task = str(pid), str(labeler).strip(), str(task)
    if known is not None and pid not in known:
        raise _Bad("post_id", f"unknown post {pid!r}")
    if specs is not None and task not in specs:
        raise _Bad("task", f"unknown task {task!r}; tasks are {sorted(specs)}")
    label = _raw(rec["label"])
    if label is None:
        raise _Bad("label", f"a label is a string or a list of strings, got {rec['label']!r}")
    if specs is not None:
        unknown = [x for x in ([label] if isinstance(label, str) else label) if x not in specs[task].labels]
        if unknown:
            labels = specs[task].labels
            raise _Bad("label", f"unknown label {unknown[0]!r} for task {task!r}; labels are {labels}")
    return pid, labeler, task, label


def _task_kinds(parsed: list[_Parsed], specs: dict[str, TaskSpec] | None) -> dict[str, str]:
    """Each task's kind: from its spec, else multilabel when any vote on it is a list."""
    kinds: dict[str, str] = {name: s.kind for name, s in specs.items()} if specs is not None else {}
    for *_, task, label in parsed:
        kinds.setdefault(task, "multiclass")
        if isinstance(label, list) and specs is None:
            kinds[task] = "multilabel"
    return kinds


def _merge_votes(parsed: list[_Parsed], out: VoteSet) -> None:
    """One vote per (post, labeler, task): a multiclass repeat is a bad vote (the first is kept), multilabel
    rows by one labeler are the set they ticked."""
    first: dict[tuple[str, str, str], int] = {}  # (post, labeler, task) -> index in out.votes
    for source, row, pid, labeler, task, label in parsed:
        key = (pid, labeler, task)
        if out.kinds[task] != "multiclass":
            chosen = {label} if isinstance(label, str) else set(label)
            if key in first:
                prev = out.votes[first[key]]
                merged = tuple(sorted(set(prev.label) | chosen))
                out.votes[first[key]] = Vote(pid, labeler, task, merged, prev.source, prev.row)
                continue
            first[key] = len(out.votes)
            out.votes.append(Vote(pid, labeler, task, tuple(sorted(chosen)), source, row))
            continue
        if isinstance(label, list):
            if len(set(label)) != 1:
                reason = f"task {task!r} is multiclass; one label per vote, got {label!r}"
                out.problems.append(BadVote(source, row, "label", reason))
                continue
            label = label[0]
        if key in first:
            prev = out.votes[first[key]]
            reason = (
                f"labeler {labeler!r} already voted on post {pid!r} "
                f"task {task!r} at {prev.source}:{prev.row}; keeping that vote"
            )
            out.problems.append(BadVote(source, row, None, reason))
            continue
        first[key] = len(out.votes)
        out.votes.append(Vote(pid, labeler, task, label, source, row))


def check_votes(
    rows: Iterable[tuple[str, int, Any]],
    *,
    tasks: Sequence[TaskSpec] | None = None,
    post_ids: Iterable[str] | None = None,
) -> VoteSet:
    """Validate raw vote rows ``(source, row, record)``; bad ones are reported and skipped.

    Args:
        rows: each record is a mapping with :data:`FIELDS` (or an exception, reported as is).
        tasks: when given, unknown tasks and labels are bad votes and each task's kind comes from its spec;
            otherwise a task is multilabel when any of its votes is a list.
        post_ids: when given, votes on other posts are bad votes.
    """
    specs = {t.name: t for t in tasks} if tasks is not None else None
    known = None if post_ids is None else set(post_ids)
    out = VoteSet()
    parsed: list[_Parsed] = []
    for source, row, rec in rows:
        out.read += 1
        try:
            parsed.append((source, row, *_check_row(rec, specs, known)))
        except _Bad as bad:
            out.problems.append(BadVote(source, row, bad.field, bad.reason))
    out.kinds = _task_kinds(parsed, specs)
    _merge_votes(parsed, out)
    for p in out.problems:
        logger.warning("skipping bad vote: %s", p)
    out.problems.sort(key=lambda p: (p.source, p.row))
    return out


def _vote_rows(votes: Iterable[Vote | Mapping[str, Any]], source: str) -> Iterator[tuple[str, int, Any]]:
    for i, v in enumerate(votes, start=1):
        if isinstance(v, Vote):
            label = list(v.label) if isinstance(v.label, tuple) else v.label
            yield (
                v.source,
                v.row or i,
                {"post_id": v.post_id, "labeler": v.labeler, "task": v.task, "label": label},
            )
        else:
            yield source, i, v


def read_votes(
    source: str | Path | Iterable[Vote | Mapping[str, Any]],
    *,
    tasks: Sequence[TaskSpec] | None = None,
    post_ids: Iterable[str] | None = None,
) -> VoteSet:
    """Read and check votes from a ``.jsonl`` / ``.csv`` / ``.tsv`` / ``.parquet`` file, or from an iterable
    of :class:`Vote` objects or ``{post_id, labeler, task, label}`` mappings. See :func:`check_votes`."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"no such votes file: {path}")
        rows: Iterable[tuple[str, int, Any]] = ((str(path), r, rec) for r, rec in iter_vote_rows(path))
    else:
        rows = _vote_rows(source, "<votes>")
    return check_votes(rows, tasks=tasks, post_ids=post_ids)


def votes_from_posts(posts: Iterable[Post], *, source: str = "<posts>") -> list[tuple[str, int, Any]]:
    """Raw vote rows kept in posts' ``meta["votes"]`` (``[{"labeler", "task", "label"}, ...]``, as the
    MMHS150K adapter writes them), for :func:`check_votes`. The row is the post's 1-based position in the
    manifest, which is its line in a JSONL file without blank lines."""
    rows: list[tuple[str, int, Any]] = []
    for i, post in enumerate(posts, start=1):
        votes = post.meta.get("votes") or []
        if not isinstance(votes, list):
            rows.append((source, i, ValueError(f"post {post.id!r}: meta.votes must be a list")))
            continue
        for v in votes:
            rows.append((source, i, {"post_id": post.id, **v} if isinstance(v, Mapping) else v))
    return rows
