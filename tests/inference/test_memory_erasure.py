"""Label memory as an artifact: verified on load, never clobbering, erasure by author or id."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from ximgctx.data.record import Reply
from ximgctx.errors import ArtifactError, OutputError
from ximgctx.inference import Predictor
from ximgctx.inference.memory import LabelMemory

from .._inference_fixtures import make_posts, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(tiny_model(0), device="cpu")


def _labeled() -> list:
    """8 labeled posts: u_gone wrote p8-0001, replied under p8-0005; others by u_stay."""
    out = []
    for i, p in enumerate(make_posts(8, seed=8)):
        replies = list(p.replies) + ([Reply("same", "@U_gone")] if i == 5 else [])
        out.append(replace(p, meta={"author": "u_gone" if i == 1 else "u_stay"}, replies=replies))
    return out


def test_remove_authors_then_no_neighbour_is_theirs(predictor: Predictor, tmp_path: Path) -> None:
    posts = _labeled()
    memory = LabelMemory.for_predictor(predictor, reference=make_posts(32, seed=31, with_labels=False))
    assert memory.add(predictor, posts) == 8
    assert "u_gone" not in json.dumps(memory.authors)  # keyed digests only
    assert memory.remove_authors(["U_GONE"]) == 2
    assert sorted(memory.ids) == sorted(p.id for p in posts if p.id not in ("p8-0001", "p8-0005"))
    assert len(memory.posts) == len(memory.authors) == len(memory.embeddings) == 6
    # an exhaustive neighbour search over the whole memory finds none of the removed posts
    memory.config = replace(memory.config, k=len(posts))
    _, rows = memory.neighbours(predictor.embed(posts), "meaning")
    found = {memory.ids[r] for r in rows.ravel() if r >= 0}
    assert found == set(memory.ids)
    folder = memory.save(tmp_path / "mem")
    loaded = LabelMemory.load(folder)
    assert loaded.ids == memory.ids and loaded.authors == memory.authors
    assert loaded.author_key == memory.author_key
    assert loaded.remove_authors(["u_gone"]) == 0
    assert loaded.remove_ids([memory.ids[0]]) == 1 and len(loaded) == 5
    # the posts file holds only the kept posts
    stored = [json.loads(line)["id"] for line in (folder / "posts.jsonl").read_text().splitlines()]
    assert sorted(stored) == sorted(memory.ids)


def test_memory_folder_is_verified_and_never_clobbers(predictor: Predictor, tmp_path: Path) -> None:
    memory = LabelMemory.for_predictor(predictor, reference=make_posts(32, seed=31, with_labels=False))
    memory.add(predictor, _labeled()[:3])
    folder = memory.save(tmp_path / "mem")
    text = (folder / "memory.json").read_text()
    (folder / "memory.json").write_text(text.replace('"weight": 0.8', '"weight": 1.0'))
    with pytest.raises(ArtifactError, match="memory.json"):
        LabelMemory.load(folder)
    memory.save(folder)  # a label memory replaces a label memory
    assert LabelMemory.load(folder).ids == memory.ids
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("months of work")
    with pytest.raises(OutputError, match="refusing to replace it"):
        memory.save(other)
    assert os.listdir(other) == ["thesis.tex"]
    memory.save(other, overwrite=True)
    assert LabelMemory.load(other).ids == memory.ids
