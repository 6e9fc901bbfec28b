"""MultiOFF (Suryawanshi et al., TRAC 2020): offensive memes about the 2016 US election.

Published layout (``MultiOFF_Dataset/``; ``src`` is that folder)::

    Split Dataset/Training_meme_dataset.csv  Validation_meme_dataset.csv  Testing_meme_dataset.csv
    Labelled Images/<image_name>

Columns ``image_name, sentence, label``; ``label`` is ``offensive`` or ``Non-offensiv`` (the published
spelling, truncated; ``non-offensive`` is accepted too). Some copies carry a leading unnamed index
column or put the CSVs directly in ``src``; both are handled.
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
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError

NAME = "multioff"
DESCRIPTION = "MultiOFF: Split Dataset/{Training,Validation,Testing}_meme_dataset.csv + Labelled Images/"
SPLITS = ("train", "val", "test")
TASKS = (TaskDef("offensive", ("not_offensive", "offensive")),)
_FILES = {
    "train": "Training_meme_dataset.csv",
    "val": "Validation_meme_dataset.csv",
    "test": "Testing_meme_dataset.csv",
}
_LABELS = {
    "offensive": "offensive",
    "non_offensiv": "not_offensive",
    "non_offensive": "not_offensive",
    "not_offensive": "not_offensive",
}


def convert(src: Path, *, split: str | None = None, missing_image: MissingImage = "skip") -> ConversionResult:
    """Convert a MultiOFF folder; ``split`` is one of :data:`SPLITS` or None for all present."""
    src = Path(src)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"multioff split must be one of {list(SPLITS)}, got {split!r}")
    subdirs = ("Split Dataset", "")
    found = {s: find_file(src, [_FILES[s]], subdirs=subdirs) for s in ([split] if split else SPLITS)}
    if split and found[split] is None:
        raise AdapterError(f"{_FILES[split]} not found in {src / 'Split Dataset'} (nor in {src})")
    if not any(found.values()):
        raise AdapterError(
            f"no MultiOFF split file ({', '.join(_FILES.values())}) found in "
            f"{src / 'Split Dataset'} (nor in {src})"
        )
    image_dirs = [src / "Labelled Images", src / "Labelled Images" / "Labelled Images"]
    result = ConversionResult(dataset=NAME)
    seen: dict = {}
    for s, path in found.items():
        if path is None:
            continue
        table = read_delimited(path, delimiter=",")
        table.require("image_name", "sentence", "label")
        result.files.append(str(path))
        for line, row in table.rows:
            result.rows += 1
            if table.shape_problem(result, line, row):
                continue
            name = (row.get("image_name") or "").strip()
            if not name:
                result.add(Problem(str(path), line, "image_name", "image_name is empty"))
                continue
            label = _LABELS.get(norm_label(row.get("label") or ""))
            if label is None:
                result.add(
                    Problem(
                        str(path),
                        line,
                        "label",
                        f"label {row.get('label')!r} is not 'offensive' or 'Non-offensiv'",
                    )
                )
                continue
            keep, image = resolve_image(
                result,
                [d / name for d in image_dirs],
                file=path,
                line=line,
                fld="image_name",
                shown=f"Labelled Images/{name}",
                missing_image=missing_image,
            )
            if not keep:
                continue
            post = Post(
                id=name,  # the file name, extension included: image_1.jpg and image_1.png are two posts
                image=image,
                text=(row.get("sentence") or "").strip(),
                labels={"offensive": label},
                meta=public_meta(NAME, s, dict(row)),
            )
            add_post(result, post, seen, file=path, line=line)
    return result
