"""ContextBench's opt-in new meme template (drift experiments): the default dataset is unchanged, template
posts carry the goose symbol and follow its rule, and the oracle gives their ceilings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ximgctx import contextbench
from ximgctx.contextbench import _oracle
from ximgctx.contextbench import _rules as R
from ximgctx.contextbench._text import NEW_TEMPLATE_PHRASES
from ximgctx.data.io import load_posts

SMALL = {"seed": 5, "n_train": 12, "n_val": 4, "n_test": 6, "n_compositional": 4, "image_size": 24}
#: digests of the default dataset above, written by the code before the template option existed:
#: every non-image file (name and bytes), and every image's decoded pixels
GOLDEN_FILES = "bb884e4ac6b302eb06346cb3b38975cef419dfaa7d307e8fe7688fa5734df72c"
GOLDEN_PIXELS = "60769aa8fb95e2e223cc9e0593bd88051033a5876479f2c1049733e7ed684362"
SYMBOL = "🪿"


def _digests(folder: Path) -> tuple[str, str]:
    files, pixels = hashlib.sha256(), hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".png":
            pixels.update(np.asarray(Image.open(p).convert("RGB")).tobytes())
        elif p.is_file():
            files.update(p.name.encode() + b"\0" + p.read_bytes())
    return files.hexdigest(), pixels.hexdigest()


def test_default_output_is_unchanged(tmp_path: Path) -> None:
    contextbench.generate(tmp_path / "default", **SMALL)
    assert _digests(tmp_path / "default") == (GOLDEN_FILES, GOLDEN_PIXELS)
    contextbench.generate(tmp_path / "zero", **SMALL, new_template=0.0)
    assert _digests(tmp_path / "zero") == (GOLDEN_FILES, GOLDEN_PIXELS)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cb_template")
    contextbench.generate(
        out, seed=5, n_train=300, n_val=0, n_test=300, n_compositional=0, image_size=24, new_template=0.4
    )
    return out


def test_template_posts_carry_the_symbol_and_follow_its_rule(drifted: Path, tmp_path: Path) -> None:
    contextbench.generate(
        tmp_path, seed=5, n_train=300, n_val=0, n_test=300, n_compositional=0, image_size=24
    )
    for split in ("train", "test"):
        plain = {p.id: p for p in load_posts(tmp_path / f"{split}.jsonl")}
        posts = load_posts(drifted / f"{split}.jsonl")
        template = [p for p in posts if p.meta["latent"]["text"].get("template") == R.NEW_TEMPLATE]
        others = [p for p in posts if p not in template]
        assert 0.3 * len(posts) <= len(template) <= 0.5 * len(posts)
        for p in template:
            assert SYMBOL in p.text and any(phrase in p.text for phrase in NEW_TEMPLATE_PHRASES), p.text
            assert p.meta["latent"]["image"]["format"] == "meme"
            assert p.labels["intent"] == ["threat", "meme"] == p.meta["clean_labels"]["intent"]
            meaning = R.MEANING[
                (
                    p.meta["latent"]["image"]["scene"],
                    p.meta["latent"]["image"]["emblem"],
                    p.meta["latent"]["text"]["tone"],
                )
            ]
            assert p.labels["meaning"] == meaning
            # the caption replaces the cue phrase: no cue phrase's fixed words remain
            assert "last warning" not in p.text and "join us at" not in p.text
            assert Image.open(p.image).size == (24, 24)
        # a post without the template is the default dataset's post, record for record and pixel for pixel
        for p in others:
            assert SYMBOL not in p.text and "goose" not in p.text
            q = plain[p.id]
            assert p.to_dict() | {"image": None} == q.to_dict() | {"image": None}
            assert np.array_equal(np.asarray(Image.open(p.image)), np.asarray(Image.open(q.image)))


def test_oracle_gives_the_template_ceilings(drifted: Path) -> None:
    import json

    oracle = json.loads((drifted / "oracle.json").read_text())
    nt = oracle["new_template"]
    assert nt["name"] == R.NEW_TEMPLATE and nt["share"] == 0.4 and nt["intent"] == ["threat", "meme"]
    test = nt["ceilings"]["test"]
    # the symbol decides intent: any modality that shows it gets every post right
    assert test["intent"]["text"] == 1.0 and test["intent"]["image+text+replies"] == 1.0
    # meaning follows the usual table: image and text both needed (sunny or stormy, tone, emblem)
    assert test["meaning"]["image+text"] == 1.0 and test["meaning"]["text"] < 0.7
    # the default posts' ceilings are those of a dataset without the template
    assert oracle["ceilings"] == _oracle.oracle(seed=5, label_noise=0.0, max_replies=8)["ceilings"]
    assert "goose" in (drifted / "README.md").read_text()
    # realised on the template posts, by the Bayes rule: every label is right
    posts = [p for p in load_posts(drifted / "test.jsonl") if p.meta["latent"]["text"].get("template")]
    realised = _oracle.sample_ceilings(posts, "test")
    assert realised["intent"]["image+text+replies"] == 1.0 and realised["intent"]["text"] == 1.0
    # a lookup table on the template posts' own (tone, template) text key agrees: one intent per key
    seen: dict[tuple, set] = {}
    for p in posts:
        key = _oracle.observed(("text",), p.meta["latent"]["image"], p.meta["latent"]["text"], "amused", True)
        seen.setdefault(key, set()).add(tuple(p.labels["intent"]))
    assert all(v == {("threat", "meme")} for v in seen.values())


def test_bad_share_is_named(tmp_path: Path) -> None:
    from ximgctx.errors import ConfigError

    with pytest.raises(ConfigError, match="new_template"):
        contextbench.generate(tmp_path, n_train=1, n_val=0, n_test=0, n_compositional=0, new_template=1.5)
