"""CrisisMMD v2.0 (Alam et al., ICWSM 2018), with the benchmark splits of Ofli et al. (2020).

Published layout (``CrisisMMD_v2.0/``; ``src`` is that folder)::

    data_image/<event>/<date>/<tweet_id>_<k>.jpg
    crisismmd_datasplit_all/task_{informative,humanitarian,damage}_text_img_{train,dev,test}.tsv
        event_name tweet_id image_id tweet_text image label label_text label_image label_text_image

The split archive sometimes unpacks one level deeper (``crisismmd_datasplit_all/crisismmd_datasplit_all``);
both are searched, and so is ``src`` itself. ``image`` is relative to the dataset root
(``data_image/...``). The damage files have only ``event_name ... image label`` (the damage task is
labelled on the image); ``label_text``/``label_image`` are kept in ``meta["original"]`` when present.
The TSVs are read line by line without quote handling, as the authors' loader does (tweets contain
unbalanced quotes).

A tweet-image pair (``image_id``) appearing in several task files becomes **one** post carrying each task's
label; ``meta["original"]`` then maps each task to its row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ximgctx.adapters._common import (
    AdapterError,
    ConversionResult,
    MissingImage,
    Problem,
    TaskDef,
    norm_label,
    public_meta,
    read_delimited,
    resolve_image,
)
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError

NAME = "crisismmd"
DESCRIPTION = "CrisisMMD v2: crisismmd_datasplit_all/task_{informative,humanitarian,damage}_text_img_*.tsv"
SPLITS = ("train", "dev", "test")
TASKS = (
    TaskDef("informative", ("informative", "not_informative")),
    TaskDef(
        "humanitarian",
        (
            "affected_individuals",
            "infrastructure_and_utility_damage",
            "injured_or_dead_people",
            "missing_or_found_people",
            "not_humanitarian",
            "other_relevant_information",
            "rescue_volunteering_or_donation_effort",
            "vehicle_damage",
        ),
    ),
    TaskDef("damage", ("little_or_no_damage", "mild_damage", "severe_damage"), source="image"),
)
_SUBDIRS = ("crisismmd_datasplit_all", "crisismmd_datasplit_all/crisismmd_datasplit_all", "")


def _task_file(src: Path, task: str, split: str) -> Path | None:
    name = f"task_{task}_text_img_{split}.tsv"
    for sub in _SUBDIRS:
        p = src / sub / name if sub else src / name
        if p.is_file():
            return p
    return None


def convert(src: Path, *, split: str | None = None, missing_image: MissingImage = "skip") -> ConversionResult:
    """Convert a CrisisMMD v2.0 folder; ``split`` is one of :data:`SPLITS` or None for all present."""
    src = Path(src)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"crisismmd split must be one of {list(SPLITS)}, got {split!r}")
    splits = [split] if split else list(SPLITS)
    found = {(t.name, s): _task_file(src, t.name, s) for s in splits for t in TASKS}
    if not any(found.values()):
        names = ", ".join(f"task_{t.name}_text_img_{s}.tsv" for s in splits for t in TASKS)
        raise AdapterError(
            f"no CrisisMMD task file ({names}) found in {src / 'crisismmd_datasplit_all'} (nor in {src})"
        )
    result = ConversionResult(dataset=NAME)
    posts: dict[str, Post] = {}
    origin: dict[str, tuple[str, int]] = {}
    for s in splits:
        for task in TASKS:
            path = found[(task.name, s)]
            if path is None:
                result.add(
                    Problem(
                        str(src / "crisismmd_datasplit_all" / f"task_{task.name}_text_img_{s}.tsv"),
                        None,
                        None,
                        f"not found; no {task.name!r} labels for split {s!r}",
                        skipped=False,
                    )
                )
                continue
            table = read_delimited(path, delimiter="\t", quoting=False)
            table.require("tweet_id", "image_id", "tweet_text", "image", "label")
            result.files.append(str(path))
            roots = [src, path.parent, path.parent.parent, path.parent.parent.parent]
            for line, row in table.rows:
                result.rows += 1
                if not table.shape_problem(result, line, row):
                    _convert_row(result, posts, origin, path, line, row, s, task, roots, missing_image)
    result.posts = list(posts.values())
    return result


def _convert_row(
    result: ConversionResult,
    posts: dict[str, Post],
    origin: dict[str, tuple[str, int]],
    path: Path,
    line: int,
    row: dict[str, Any],
    split: str,
    task: TaskDef,
    roots: list[Path],
    missing_image: MissingImage,
) -> None:
    def bad(fld: str | None, reason: str) -> None:
        result.add(Problem(str(path), line, fld, reason))

    iid = (row.get("image_id") or "").strip()
    if not iid:
        return bad("image_id", "image_id is empty")
    label = norm_label(row.get("label") or "")
    if label not in task.labels:
        return bad("label", f"label {row.get('label')!r} is not one of {list(task.labels)}")
    text = row.get("tweet_text") or ""
    prev = posts.get(iid)
    if prev is not None:
        pfile, pline = origin[iid]
        if prev.text != text or prev.meta["split"] != split:
            return bad(
                "tweet_text",
                f"image_id {iid!r} was converted from {pfile}:{pline} with a different "
                "text or split; this row is skipped",
            )
        prev.labels[task.name] = label
        prev.meta["original"][task.name] = dict(row)
        return None
    rel = (row.get("image") or "").strip()
    if not rel:
        return bad("image", "image path is empty")
    keep, image = resolve_image(
        result,
        [r / rel for r in roots],
        file=path,
        line=line,
        fld="image",
        shown=rel,
        missing_image=missing_image,
    )
    if not keep:
        return None
    meta = public_meta(
        NAME,
        split,
        {task.name: dict(row)},
        tweet_id=(row.get("tweet_id") or "").strip() or None,
        event=(row.get("event_name") or "").strip() or None,
    )
    posts[iid] = Post(id=iid, image=image, text=text, labels={task.name: label}, meta=meta)
    origin[iid] = (str(path), line)
    return None
