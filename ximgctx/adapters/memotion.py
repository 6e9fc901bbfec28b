"""Memotion 7K (Sharma et al., SemEval-2020 Task 8), the ``memotion_dataset_7k`` release.

Published layout (``src`` is ``memotion_dataset_7k/`` or its parent)::

    labels.csv     image_name,text_ocr,text_corrected,humour,sarcasm,offensive,motivational,overall_sentiment
    images/image_1.jpg  image_2.jpeg  image_3.JPG ...

Variants handled: the Kaggle copy starts with an unnamed pandas index column; some copies carry a UTF-8
BOM or are Windows-1252; older copies spell columns ``humor``, ``corrected_text``/``ocr_extracted_text``
or capitalise them; a few rows have an empty ``text_corrected`` (the OCR text is used instead) or an HTML
dump as text (kept as is). Labels are the dataset's own strings (``hilarious``, ``very_funny``, ``funny``,
``not_funny``; ``general``, ``twisted_meaning``, ``very_twisted``, ``not_sarcastic``; ``slight``,
``very_offensive``, ``hateful_offensive``, ``not_offensive``; ``motivational``, ``not_motivational``;
``very_positive`` ... ``very_negative``), compared case-insensitively. There is no split: every post is
``split="all"``.
"""

from __future__ import annotations

from pathlib import Path

from ximgctx.adapters._common import (
    AdapterError,
    ConversionResult,
    MissingImage,
    Problem,
    TaskDef,
    add_post,
    find_file,
    norm_label,
    public_meta,
    read_delimited,
    resolve_image,
)
from ximgctx.data.record import LabelValue, Post
from ximgctx.errors import ConfigError

NAME = "memotion"
DESCRIPTION = "Memotion 7K: labels.csv (image_name, text_corrected, humour, sarcasm, ...) + images/"
SPLITS = ("all",)
TASKS = (
    TaskDef("humour", ("not_funny", "funny", "very_funny", "hilarious")),
    TaskDef("sarcasm", ("not_sarcastic", "general", "twisted_meaning", "very_twisted")),
    TaskDef("offensive", ("not_offensive", "slight", "very_offensive", "hateful_offensive")),
    TaskDef("motivational", ("not_motivational", "motivational")),
    TaskDef("sentiment", ("very_negative", "negative", "neutral", "positive", "very_positive")),
)
#: task -> the column spellings seen in published copies (compared case-insensitively)
_LABEL_COLUMNS = {
    "humour": ("humour", "humor"),
    "sarcasm": ("sarcasm", "sarcastic"),
    "offensive": ("offensive",),
    "motivational": ("motivational", "motivation"),
    "sentiment": ("overall_sentiment", "sentiment"),
}


def convert(src: Path, *, split: str | None = None, missing_image: MissingImage = "skip") -> ConversionResult:
    """Convert a Memotion 7K folder (``split`` may only be None or ``"all"``)."""
    src = Path(src)
    if split not in (None, "all"):
        raise ConfigError(f"memotion has no splits (use 'all' or leave it out), got {split!r}")
    path = find_file(src, ["labels.csv"], subdirs=("", "memotion_dataset_7k"))
    if path is None:
        raise AdapterError(f"labels.csv not found in {src} (nor in {src / 'memotion_dataset_7k'})")
    table = read_delimited(path, delimiter=",")
    # Lower-case the header once so capitalised copies read the same.
    lower = {c.lower(): c for c in table.columns}
    table.columns = list(lower)
    table.rows = [(ln, {k.lower(): v for k, v in row.items()}) for ln, row in table.rows]
    table.require("image_name")
    text_col = table.pick("text_corrected", "corrected_text")
    ocr_col = table.pick("text_ocr", "ocr_extracted_text")
    if text_col is None and ocr_col is None:
        table.require("text_corrected")
    label_cols: dict[str, str] = {}
    for task, names in _LABEL_COLUMNS.items():
        col = table.pick(*names)
        if col is None:
            table.require(names[0])  # raises: no published spelling of the column is there
            continue
        label_cols[task] = col
    images = path.parent / "images"
    result = ConversionResult(dataset=NAME, files=[str(path)])
    tasks = {t.name: t.labels for t in TASKS}
    seen: dict = {}
    for line, row in table.rows:
        result.rows += 1
        if table.shape_problem(result, line, row):
            continue
        name = (row.get("image_name") or "").strip()
        if not name:
            result.add(Problem(str(path), line, "image_name", "image_name is empty"))
            continue
        text = (row.get(text_col) or "").strip() if text_col else ""
        if not text and ocr_col:
            text = (row.get(ocr_col) or "").strip()
        labels: dict[str, LabelValue] = {}
        bad = False
        for task, col in label_cols.items():
            raw = row.get(col)
            value = norm_label(raw) if raw is not None else ""
            if value not in tasks[task]:
                result.add(Problem(str(path), line, col, f"label {raw!r} is not one of {list(tasks[task])}"))
                bad = True
                break
            labels[task] = value
        if bad:
            continue
        keep, image = resolve_image(
            result,
            [images / name],
            file=path,
            line=line,
            fld="image_name",
            shown=f"images/{name}",
            missing_image=missing_image,
        )
        if not keep:
            continue
        post = Post(
            id=name,  # the file name, extension included: image_1.jpg and image_1.png are two posts
            image=image,
            text=text,
            labels=labels,
            meta=public_meta(NAME, "all", dict(row)),
        )
        add_post(result, post, seen, file=path, line=line)
    return result
