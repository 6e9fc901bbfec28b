"""MMSD / MMSD2.0: multimodal sarcasm detection on Twitter (Cai et al., 2019; Qin et al., ACL 2023).

Published layout (the ``data/`` folder of the MMSD2.0 repository; ``src`` is that folder or its parent)::

    text_json_final/train.json  valid.json  test.json     MMSD2.0 (re-annotated, spurious cues removed)
    text_json_clean/train.json  valid.json  test.json     MMSD (the original labels, cleaned text)
    dataset_image/<image_id>.jpg

Each JSON file is a list of ``{"image_id": 915657464401580032, "text": "...", "label": 1}`` with
``label`` 1 = sarcastic, 0 = not. ``image_id`` is the tweet id (a number; kept as a string). MMSD2.0 is
used when both are present; ``meta["version"]`` says which one was read. JSON files placed directly in
``src`` are read too. The original MMSD release's Python-literal ``text/train.txt`` files are not read:
use the cleaned JSON of the MMSD2.0 repository instead.

The files are single-line JSON arrays, so problems name the element (``[<index>].field``).
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
    parse_int_label,
    public_meta,
    resolve_image,
)
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError

NAME = "mmsd"
DESCRIPTION = "MMSD / MMSD2.0: text_json_final|text_json_clean/{train,valid,test}.json + dataset_image/"
SPLITS = ("train", "valid", "test")
TASKS = (TaskDef("sarcasm", ("not_sarcastic", "sarcastic")),)
_VERSIONS = (("text_json_final", "mmsd2.0"), ("text_json_clean", "mmsd"), ("", "unknown"))


def _locate(src: Path) -> tuple[Path, str, Path]:
    """(folder with the split JSONs, version, folder of dataset_image)."""
    for base in (src, src / "data"):
        for sub, version in _VERSIONS:
            d = base / sub if sub else base
            if any((d / f"{s}.json").is_file() for s in SPLITS):
                return d, version, base
    if (src / "text" / "train.txt").is_file():
        raise AdapterError(
            f"{src} holds the original MMSD release (text/*.txt, Python literals), which is not "
            "read; use text_json_clean/ (MMSD) or text_json_final/ (MMSD2.0) from the "
            "MMSD2.0 repository"
        )
    raise AdapterError(
        f"no MMSD split file (text_json_final/ or text_json_clean/ with "
        f"{', '.join(s + '.json' for s in SPLITS)}) found in {src}"
    )


def convert(src: Path, *, split: str | None = None, missing_image: MissingImage = "skip") -> ConversionResult:
    """Convert an MMSD / MMSD2.0 folder; ``split`` is one of :data:`SPLITS` or None for all present."""
    src = Path(src)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"mmsd split must be one of {list(SPLITS)}, got {split!r}")
    folder, version, base = _locate(src)
    image_dirs = [
        base / "dataset_image",
        base.parent / "dataset_image",
        src / "dataset_image",
        base / "images",
    ]
    result = ConversionResult(dataset=NAME)
    seen: dict = {}
    for s in [split] if split else SPLITS:
        path = folder / f"{s}.json"
        if not path.is_file():
            if split:
                raise AdapterError(f"{s}.json not found in {folder}")
            continue
        result.files.append(str(path))
        try:
            items = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as e:
            raise AdapterError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from e
        if not isinstance(items, list):
            raise AdapterError(
                f"{path}: expected a JSON list of {{image_id, text, label}}, got {type(items).__name__}"
            )
        for i, rec in enumerate(items):
            result.rows += 1
            _convert_item(result, seen, path, i, rec, s, version, image_dirs, missing_image)
    return result


def _convert_item(
    result: ConversionResult,
    seen: dict,
    path: Path,
    i: int,
    rec: object,
    split: str,
    version: str,
    image_dirs: list[Path],
    missing_image: MissingImage,
) -> None:
    def bad(fld: str, reason: str) -> None:
        result.add(Problem(str(path), None, f"[{i}].{fld}" if fld else f"[{i}]", reason))

    if not isinstance(rec, dict):
        return bad("", f"an item is an object, got {type(rec).__name__}")
    for col in ("image_id", "text", "label"):
        if col not in rec:
            return bad(col, f"required field {col!r} is missing")
    iid = rec["image_id"]
    if isinstance(iid, bool) or not isinstance(iid, (int, str)) or not str(iid).strip():
        return bad("image_id", f"image_id must be a number or a string, got {type(iid).__name__}")
    iid = str(iid).strip()
    if not isinstance(rec["text"], str):
        return bad("text", f"text must be a string, got {type(rec['text']).__name__}")
    value = parse_int_label(rec["label"])
    if value not in (0, 1):
        return bad("label", f"label must be 0 (not sarcastic) or 1 (sarcastic), got {rec['label']!r}")
    keep, image = resolve_image(
        result,
        [d / f"{iid}.jpg" for d in image_dirs],
        file=path,
        line=None,
        fld=f"[{i}].image_id",
        shown=f"dataset_image/{iid}.jpg",
        missing_image=missing_image,
    )
    if not keep:
        return None
    post = Post(
        id=iid,
        image=image,
        text=rec["text"],
        labels={"sarcasm": TASKS[0].labels[value]},
        meta=public_meta(NAME, split, dict(rec), version=version),
    )
    add_post(result, post, seen, file=path, line=None)
    return None
