"""Fakeddit v2.0 (Nakamura et al., LREC 2020): fine-grained fake news on Reddit.

Published layout (``src`` holds the TSVs, or ``multimodal_only_samples/`` with them)::

    multimodal_train.tsv  multimodal_validate.tsv  multimodal_test_public.tsv
        author clean_title created_utc domain hasImage id image_url linked_submission_id num_comments
        score subreddit title upvote_ratio 2_way_label 3_way_label 6_way_label
    all_comments.tsv (or comments.tsv; also looked for in comments/)
        id author body isTopLevel parent_id submission_id ubody? ups ...
    public_image_set/<id>.jpg   (the authors' image archive; images/<id>.jpg also accepted)

``all_*.tsv`` (text-only samples included) is read when the ``multimodal_*`` file of a split is absent;
rows with ``hasImage`` false then have no image and that is not a problem. Leading ``Unnamed: 0``
index columns, which the README says to ignore, are dropped. Text is ``clean_title`` as the authors
recommend (``title`` when it is empty). Comments are joined on ``submission_id`` as replies, in file
order; ``[deleted]``/``[removed]`` bodies are not replies and ``[deleted]`` authors become unknown.

Label names: ``2_way_label`` 1 = true, 0 = fake; ``3_way_label`` 0 = true, 1 = fake with true text,
2 = fake with false text; ``6_way_label`` 0 = true, 1 = satire/parody, 2 = false connection,
3 = imposter content, 4 = manipulated content, 5 = misleading content, as the dataset's authors give
them in entitize/Fakeddit issue #14. (Some third-party code lists 2 = misleading, 4 = false connection,
5 = manipulated; the raw integers stay in ``meta["original"]`` so a remap is cheap if the authors'
numbering is ever corrected.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ximgctx.adapters._common import (
    SHAPE_KEY,
    AdapterError,
    ConversionResult,
    MissingImage,
    Problem,
    TaskDef,
    add_post,
    find_file,
    iter_delimited,
    parse_int_label,
    public_meta,
    read_delimited,
    resolve_image,
)
from ximgctx.data.record import LabelValue, Post, Reply
from ximgctx.errors import ConfigError

NAME = "fakeddit"
DESCRIPTION = "Fakeddit: multimodal_{train,validate,test_public}.tsv + all_comments.tsv + public_image_set/"
SPLITS = ("train", "validate", "test_public")
TASKS = (
    TaskDef("fake_2way", ("fake", "true")),
    TaskDef("fake_3way", ("true", "fake_with_true_text", "fake_with_false_text")),
    TaskDef(
        "fake_6way",
        (
            "true",
            "satire_parody",
            "false_connection",
            "imposter_content",
            "manipulated_content",
            "misleading_content",
        ),
    ),
)
_LABEL_COLUMNS = {"fake_2way": "2_way_label", "fake_3way": "3_way_label", "fake_6way": "6_way_label"}
_SUBDIRS = ("", "multimodal_only_samples")
_DELETED = {"[deleted]", "[removed]", ""}


def convert(src: Path, *, split: str | None = None, missing_image: MissingImage = "skip") -> ConversionResult:
    """Convert a Fakeddit folder; ``split`` is one of :data:`SPLITS` or None for all present."""
    src = Path(src)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"fakeddit split must be one of {list(SPLITS)}, got {split!r}")
    found = {
        s: find_file(src, [f"multimodal_{s}.tsv", f"all_{s}.tsv"], subdirs=_SUBDIRS)
        for s in ([split] if split else SPLITS)
    }
    if split and found[split] is None:
        raise AdapterError(
            f"multimodal_{split}.tsv not found in {src} (nor all_{split}.tsv, nor in "
            f"{src / 'multimodal_only_samples'})"
        )
    if not any(found.values()):
        raise AdapterError(
            f"no Fakeddit split file ({', '.join(f'multimodal_{s}.tsv' for s in SPLITS)}) found in {src}"
        )
    image_dirs = [src / "public_image_set", src / "images", src / "multimodal_only_samples" / "images"]
    result = ConversionResult(dataset=NAME)
    seen: dict = {}
    for s, path in found.items():
        if path is None:
            continue
        table = read_delimited(path, delimiter="\t")
        table.require("id", *_LABEL_COLUMNS.values())
        if table.pick("clean_title", "title") is None:
            table.require("clean_title")
        result.files.append(str(path))
        for line, row in table.rows:
            result.rows += 1
            if not table.shape_problem(result, line, row):
                _convert_row(result, seen, path, line, row, s, image_dirs, missing_image)
    _join_comments(result, src)
    return result


def _convert_row(
    result: ConversionResult,
    seen: dict,
    path: Path,
    line: int,
    row: dict[str, Any],
    split: str,
    image_dirs: list[Path],
    missing_image: MissingImage,
) -> None:
    pid = (row.get("id") or "").strip()
    if not pid:
        result.add(Problem(str(path), line, "id", "id is empty"))
        return
    labels: dict[str, LabelValue] = {}
    for task in TASKS:
        col = _LABEL_COLUMNS[task.name]
        v = parse_int_label(row.get(col))
        if v is None or not 0 <= v < len(task.labels):
            result.add(
                Problem(
                    str(path), line, col, f"label {row.get(col)!r} is not an integer 0-{len(task.labels) - 1}"
                )
            )
            return
        labels[task.name] = task.labels[v]
    text = (row.get("clean_title") or "").strip() or (row.get("title") or "").strip()
    has_image = str(row.get("hasImage", "True")).strip().lower() not in ("false", "0", "")
    image = None
    if has_image:
        keep, image = resolve_image(
            result,
            [d / f"{pid}.jpg" for d in image_dirs],
            file=path,
            line=line,
            fld="id",
            shown=f"public_image_set/{pid}.jpg",
            missing_image=missing_image,
        )
        if not keep:
            return
    author = (row.get("author") or "").strip()
    if author and author in _DELETED:
        result.count("posts by a deleted account, kept without an author")
    post = Post(
        id=pid,
        image=image,
        text=text,
        labels=labels,
        meta=public_meta(NAME, split, dict(row), author=None if author in _DELETED else author),
    )
    add_post(result, post, seen, file=path, line=line)


def _join_comments(result: ConversionResult, src: Path) -> None:
    path = find_file(src, ["all_comments.tsv", "comments.tsv"], subdirs=("", "comments"))
    if path is None:
        result.add(
            Problem(
                str(src / "all_comments.tsv"),
                None,
                None,
                "comments file not found (all_comments.tsv or comments.tsv); posts have no replies",
                skipped=False,
            )
        )
        return
    columns, rows = iter_delimited(path, delimiter="\t")
    for col in ("submission_id", "body"):
        if col not in columns:
            raise AdapterError(
                f"{path}: required column {col!r} is missing (columns: {columns}); is this "
                f"the published Fakeddit comments file in {path.parent}?"
            )
    result.files.append(str(path))
    by_id = {p.id: p for p in result.posts}
    for line, row in rows:
        sid = (row.get("submission_id") or "").strip()
        post = by_id.get(sid)
        if post is None:
            result.count("comments on submissions outside the converted splits, skipped")
            continue
        if SHAPE_KEY in row:
            result.add(
                Problem(str(path), line, None, f"malformed comment row: {row[SHAPE_KEY]}; comment skipped")
            )
            continue
        body = (row.get("body") or "").strip()
        if body in _DELETED:
            result.count("empty, deleted or removed comment bodies, skipped")
            continue
        author = (row.get("author") or "").strip()
        if author and author in _DELETED:
            result.count("comments by a deleted account, kept without an author")
        post.replies.append(Reply(text=body, author=None if author in _DELETED else author))
