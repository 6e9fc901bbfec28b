"""Hateful Memes (Kiela et al., 2020), as released by Facebook AI / DrivenData.

Published layout (``src`` is the folder holding the JSONL files; the Kaggle copy nests them in ``data/``)::

    img/42953.png ...
    train.jsonl  dev_seen.jsonl  dev_unseen.jsonl  test_seen.jsonl  test_unseen.jsonl
    dev.jsonl  test.jsonl                       # phase-1 files, still in many copies

Each line is ``{"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}``; ``label`` is
0 = not hateful, 1 = hateful, and is absent from the unlabeled test files (their posts have no label). The
``img`` path is relative to the folder of the JSONL file. ``dev_unseen`` repeats some ``dev_seen`` memes
and ``dev`` repeats ``dev_seen``: identical repeats are merged (first split wins), conflicting ones are
reported.
"""

from __future__ import annotations

import json
from pathlib import Path

from ximgctx.adapters._common import (
    AdapterError,
    ConversionResult,
    MissingImage,
    Problem,
    TaskDef,
    add_post,
    find_file,
    parse_int_label,
    public_meta,
    resolve_image,
)
from ximgctx.data.record import LabelValue, Post
from ximgctx.errors import ConfigError

NAME = "hateful_memes"
DESCRIPTION = "Hateful Memes: img/ + train/dev_seen/test_seen(.jsonl) with id,img,label,text"
SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen", "dev", "test")
TASKS = (TaskDef("hateful", ("not_hateful", "hateful")),)
_SUBDIRS = ("", "data")


def convert(src: Path, *, split: str | None = None, missing_image: MissingImage = "skip") -> ConversionResult:
    """Convert a Hateful Memes folder; ``split`` is one of :data:`SPLITS` or None for every file present."""
    src = Path(src)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"hateful_memes split must be one of {list(SPLITS)}, got {split!r}")
    result = ConversionResult(dataset=NAME)
    wanted = [split] if split else list(SPLITS)
    files = [(s, find_file(src, [f"{s}.jsonl"], subdirs=_SUBDIRS)) for s in wanted]
    if split and files[0][1] is None:
        raise AdapterError(f"{split}.jsonl not found in {src} (nor in {src / 'data'})")
    if not any(f for _, f in files):
        raise AdapterError(
            f"no Hateful Memes annotation file ({', '.join(s + '.jsonl' for s in SPLITS)}) found in {src}"
        )
    labels = TASKS[0].labels
    seen: dict = {}
    for s, path in files:
        if path is None:
            continue
        result.files.append(str(path))
        with open(path, encoding="utf-8-sig") as fh:
            for line, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                result.rows += 1
                _convert_line(result, seen, path, line, raw, s, labels, missing_image)
    return result


def _convert_line(
    result: ConversionResult,
    seen: dict,
    path: Path,
    line: int,
    raw: str,
    split: str,
    labels: tuple[str, ...],
    missing_image: MissingImage,
) -> None:
    def bad(fld: str | None, reason: str) -> None:
        result.add(Problem(str(path), line, fld, reason))

    try:
        rec = json.loads(raw)
    except json.JSONDecodeError as e:
        return bad(None, f"malformed JSON ({e.msg} at column {e.colno})")
    if not isinstance(rec, dict):
        return bad(None, f"a row is a JSON object, got {type(rec).__name__}")
    for col in ("id", "img", "text"):
        if col not in rec:
            return bad(col, f"required field {col!r} is missing")
    pid = rec["id"]
    if isinstance(pid, bool) or not isinstance(pid, (int, str)) or not str(pid).strip():
        return bad("id", f"id must be an integer or a string, got {type(pid).__name__}")
    text = rec["text"]
    if not isinstance(text, str):
        return bad("text", f"text must be a string, got {type(text).__name__}")
    img = rec["img"]
    if not isinstance(img, str) or not img.strip():
        return bad("img", f"img must be a path string, got {type(img).__name__}")
    post_labels: dict[str, LabelValue] = {}
    if rec.get("label") is not None:
        value = parse_int_label(rec["label"])
        if value is None or not 0 <= value < len(labels):
            return bad("label", f"label must be 0 (not hateful) or 1 (hateful), got {rec['label']!r}")
        post_labels["hateful"] = labels[value]
    keep, image = resolve_image(
        result,
        [path.parent / img, path.parent.parent / img],
        file=path,
        line=line,
        fld="img",
        shown=img,
        missing_image=missing_image,
    )
    if not keep:
        return None
    post = Post(
        id=str(pid), image=image, text=text, labels=post_labels, meta=public_meta(NAME, split, dict(rec))
    )
    add_post(result, post, seen, file=path, line=line)
    return None
