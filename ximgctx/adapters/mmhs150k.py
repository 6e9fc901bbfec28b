"""MMHS150K (Gomez et al., WACV 2020): multimodal hate speech on Twitter.

Published layout (``MMHS150K.zip``)::

    MMHS150K_GT.json              {tweet_id: {img_url, labels, tweet_url, tweet_text, labels_str}}
    splits/train_ids.txt  val_ids.txt  test_ids.txt      one tweet id per line
    img_resized/<tweet_id>.jpg
    img_txt/<tweet_id>.json       {"img_text": "..."} OCR of the image, only where text was found

``labels`` holds one vote from each of three annotators, 0 = NotHate, 1 = Racist, 2 = Sexist,
3 = Homophobe, 4 = Religion, 5 = OtherHate (``labels_str`` spells them out). The three votes are kept in
``meta["votes"]`` as ``{"labeler": "annotator_<k>", "task", "label"}`` for vote aggregation; the
labeler names are *slots* (the k-th vote), not stable worker ids, which the dataset does not publish.
The post gets two labels: ``hate_category``, the vote distribution (soft label), and ``hateful``, the
majority of hate vs not-hate votes. The author's screen name is taken from ``tweet_url``.

The ground-truth file is one JSON object, so problems name the entry (``[<tweet_id>].field``) rather
than a line.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from ximgctx.adapters._common import (
    AdapterError,
    ConversionResult,
    MissingImage,
    Problem,
    TaskDef,
    parse_int_label,
    public_meta,
    resolve_image,
)
from ximgctx.data.record import LabelValue, Post
from ximgctx.errors import ConfigError

NAME = "mmhs150k"
DESCRIPTION = "MMHS150K: MMHS150K_GT.json + splits/*_ids.txt + img_resized/ (+ img_txt/ OCR), 3 votes"
SPLITS = ("train", "val", "test")
CATEGORIES = ("not_hate", "racist", "sexist", "homophobe", "religion", "other_hate")
TASKS = (
    TaskDef("hateful", ("not_hateful", "hateful")),
    TaskDef("hate_category", CATEGORIES),
)
_GT = "MMHS150K_GT.json"
_AUTHOR = re.compile(r"twitter\.com/(?:#!/)?([A-Za-z0-9_]{1,30})/status", re.IGNORECASE)


def _read_ids(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]


def convert(src: Path, *, split: str | None = None, missing_image: MissingImage = "skip") -> ConversionResult:
    """Convert an MMHS150K folder; ``split`` is one of :data:`SPLITS` or None for every tweet in the
    ground truth (each tagged with the split file that lists it, or ``None`` if none does)."""
    src = Path(src)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"mmhs150k split must be one of {list(SPLITS)}, got {split!r}")
    gt_path = src / _GT
    if not gt_path.is_file():
        raise AdapterError(f"{_GT} not found in {src}")
    split_of: dict[str, str] = {}
    for s in SPLITS:
        p = src / "splits" / f"{s}_ids.txt"
        if p.is_file():
            for tid in _read_ids(p):
                split_of.setdefault(tid, s)
        elif split == s:
            raise AdapterError(f"splits/{s}_ids.txt not found in {src}")
    result = ConversionResult(dataset=NAME)
    result.files.append(str(gt_path))
    try:
        gt = json.loads(gt_path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise AdapterError(f"{gt_path}: malformed JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(gt, dict):
        raise AdapterError(f"{gt_path}: expected an object keyed by tweet id, got {type(gt).__name__}")
    ids = [t for t in gt if split is None or split_of.get(t) == split]
    if split is not None:
        missing = [t for t, s in split_of.items() if s == split and t not in gt]
        for t in missing:
            result.add(
                Problem(
                    str(src / "splits" / f"{split}_ids.txt"),
                    None,
                    t,
                    f"tweet id {t} is listed in the split but absent from {_GT}",
                )
            )
    for tid in ids:
        result.rows += 1
        _convert_entry(result, src, gt_path, tid, gt[tid], split_of.get(tid), missing_image)
    return result


def _convert_entry(
    result: ConversionResult,
    src: Path,
    gt_path: Path,
    tid: str,
    rec: object,
    split: str | None,
    missing_image: MissingImage,
) -> None:
    def bad(fld: str, reason: str) -> None:
        result.add(Problem(str(gt_path), None, f"[{tid}].{fld}" if fld else f"[{tid}]", reason))

    if not isinstance(rec, dict):
        return bad("", f"an entry is an object, got {type(rec).__name__}")
    text = rec.get("tweet_text")
    if not isinstance(text, str):
        return bad("tweet_text", f"tweet_text must be a string, got {type(text).__name__}")
    votes_raw = rec.get("labels")
    if not isinstance(votes_raw, list) or len(votes_raw) != 3:
        return bad("labels", f"labels must be a list of 3 annotator votes, got {votes_raw!r}")
    votes: list[int] = []
    for v in votes_raw:
        iv = parse_int_label(v)
        if iv is None or not 0 <= iv < len(CATEGORIES):
            return bad("labels", f"each vote must be an integer 0-5, got {v!r}")
        votes.append(iv)
    keep, image = resolve_image(
        result,
        [src / "img_resized" / f"{tid}.jpg"],
        file=gt_path,
        line=None,
        fld=f"[{tid}].img",
        shown=f"img_resized/{tid}.jpg",
        missing_image=missing_image,
    )
    if not keep:
        return None
    counts = Counter(CATEGORIES[v] for v in votes)
    n_hate = sum(1 for v in votes if v != 0)
    labels: dict[str, LabelValue] = {
        "hate_category": {c: counts[c] / len(votes) for c in CATEGORIES if counts[c]},
        "hateful": "hateful" if n_hate * 2 > len(votes) else "not_hateful",
    }
    ocr = None
    ocr_path = src / "img_txt" / f"{tid}.json"
    if ocr_path.is_file():
        try:
            ocr_rec = json.loads(ocr_path.read_text(encoding="utf-8-sig"))
            ocr = ocr_rec.get("img_text") if isinstance(ocr_rec, dict) else None
        except json.JSONDecodeError as e:
            result.add(
                Problem(
                    str(ocr_path),
                    e.lineno,
                    "img_text",
                    f"malformed OCR JSON ({e.msg}); ignored",
                    skipped=False,
                )
            )
    m = _AUTHOR.search(str(rec.get("tweet_url") or ""))
    meta = public_meta(
        NAME,
        split if split is not None else "unassigned",
        dict(rec),
        author=m.group(1) if m else None,
        ocr_text=ocr if isinstance(ocr, str) else None,
        votes=[
            {"labeler": f"annotator_{k}", "task": "hate_category", "label": CATEGORIES[v]}
            for k, v in enumerate(votes)
        ],
    )
    result.posts.append(Post(id=str(tid), image=image, text=text, labels=labels, meta=meta))
    return None
