"""Writing posts: canonical JSONL (standard JSON, atomically), or JSONL on stdout.

:func:`write_posts` and :class:`WriteReport` are also importable from :mod:`ximgctx.data.record`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ximgctx.data.problems import Problem, count_problems
from ximgctx.data.record import Post, _dumps, standard_record
from ximgctx.errors import InputError

__all__ = ["WriteReport", "write_posts"]

logger = logging.getLogger("ximgctx.data")


@dataclass
class WriteReport:
    """What :func:`write_posts` wrote, and what it changed to keep the output standard JSON."""

    written: int = 0  # posts written
    problems: dict[str, list[Problem]] = field(default_factory=dict)  # post id -> values written as null

    def counts(self) -> dict[str, int]:
        """Posts per ``"field: kind"`` (e.g. ``{"meta: non_finite": 2}``)."""
        return dict(count_problems(self.problems.values()))


def _post_line(p: Post, folder: str, image_paths: str, report: WriteReport) -> str:
    if p.image is not None and not isinstance(p.image, str):
        held = (
            "bytes (read from shards or a datasets Image() column)"
            if isinstance(p.image, bytes)
            else "a PIL image"
        )
        raise InputError(
            f"post {p.id!r} field 'image': a JSONL record holds an image path, but this post holds its image "
            "as "
            f"{held}; write shards instead (`ximgctx shard`, or `govern` with shards as --data and a folder "
            "as "
            f"--out), or save the images as files and give their paths"
        )
    if p.image is not None and os.path.isabs(p.image):
        image = p.image
        if image_paths == "relative":
            with contextlib.suppress(ValueError):  # another drive (Windows): no relative path exists
                image = os.path.relpath(image, folder)
        p = replace(p, image=image)
    record, changed = standard_record(p)
    if changed:
        report.problems.setdefault(p.id, []).extend(changed)
    return _dumps(record) + "\n"


def _write_stdout(posts: Iterable[Post], report: WriteReport) -> int:
    n = 0
    for p in posts:
        sys.stdout.write(_post_line(p, os.getcwd(), "absolute", report))
        n += 1
    sys.stdout.flush()
    return n


def write_posts(
    posts: Iterable[Post],
    path: str | Path,
    *,
    image_paths: Literal["relative", "absolute"] = "relative",
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    report: WriteReport | None = None,
) -> int:
    """Write posts as canonical JSONL, standard JSON, atomically (``path="-"``: to stdout). Returns the count.

    Absolute image paths (what :func:`load_posts` gives) are written so that the new file finds the same
    images: ``"relative"`` (default) to the new file's folder (``../images/a.png``: the dataset tree can be
    moved or copied as a whole), or kept ``"absolute"`` for a manifest that moves without its images. A
    relative path is written as it is: it already means "relative to the manifest's folder".

    The file is written under a unique temporary name beside ``path`` and renamed into place, so two
    writers never share a temporary file and an error leaves the old ``path`` as it was. NaN and infinity
    become null, each counted in ``report`` (and logged). ``inputs`` are the files the posts are read from:
    an output equal to one is refused before anything is written.

    Raises:
        OutputError: ``path`` is an input or a folder, or cannot be written (disk full, read-only, ...);
            the message names ``path``.
    """
    from ximgctx._artifacts import atomic_output, output_errors

    if image_paths not in ("relative", "absolute"):
        raise ValueError(f"image_paths must be 'relative' or 'absolute', got {image_paths!r}")
    report = report if report is not None else WriteReport()
    if str(path) == "-":  # stdout: no folder to be relative to, so image paths stay absolute
        n = _write_stdout(posts, report)
        report.written += n
        return n
    path = Path(path)
    folder = os.path.abspath(path.parent)
    n = 0
    with atomic_output(path, inputs=inputs) as tmp:
        with output_errors(path):
            f = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed below, its errors named as output's
        try:
            for p in posts:  # errors reading the posts stay errors of the input
                line = _post_line(p, folder, image_paths, report)
                with output_errors(path):
                    f.write(line)
                n += 1
        except BaseException:
            with contextlib.suppress(OSError):
                f.close()
            raise
        with output_errors(path):
            f.close()  # the last buffered write (a full disk) fails here
    report.written += n
    if report.problems:
        logger.warning("%s: non-finite numbers written as null: %s", path, report.counts())
    return n
