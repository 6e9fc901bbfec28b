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
from ximgctx.inference._authors import AuthorKey
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
    assert loaded.author_key.key == memory.author_key.key and loaded.author_key.id == memory.author_key.id
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


KEY = b"operator-governance-key-0123456789"


def test_saved_folder_alone_cannot_tell_whether_an_author_is_in_it(
    predictor: Predictor, tmp_path: Path
) -> None:
    """The digests are keyed by the operator's key, which the folder never holds: from the folder alone an
    author's digest cannot be recomputed, so membership cannot be tested; with the key it can."""
    from ximgctx.governance.identity import author_digest
    from ximgctx.governance.keys import key_id

    memory = LabelMemory(predictor.model.config.tasks, predictor.model.config.fusion.hidden_dim)
    memory.author_key = AuthorKey.operator(KEY)
    memory.add(predictor, _labeled(), reference=make_posts(32, seed=31, with_labels=False))
    folder = memory.save(tmp_path / "mem")
    saved = b"".join(f.read_bytes() for f in folder.rglob("*") if f.is_file())
    assert KEY not in saved and KEY.hex().encode() not in saved
    meta = json.loads((folder / "memory.json").read_text())
    assert "author_key" not in meta and meta["author_key_id"] == key_id(KEY) and meta["author_key_held"]
    stored = {d for e in meta["entries"] for d in e["authors"]}
    # what an attacker with the folder can try: every key-like value the folder holds
    candidates = {str(v).encode() for v in meta.values() if isinstance(v, (str, int))}
    candidates |= {meta["author_key_id"].encode(), bytes.fromhex(meta["author_key_id"])}
    assert all(author_digest("u_gone", c) not in stored for c in candidates)
    assert author_digest("u_gone", KEY) in stored  # the operator's key does find them
    # without the key the memory still reads, but cannot erase or add: the error names the key id
    other = LabelMemory.load(folder, author_key=b"another-operator-key-000000000000")
    assert other.ids == memory.ids and other.author_key.key is None
    with pytest.raises(ArtifactError, match=f"governance key {key_id(KEY)}"):
        other.remove_authors(["u_gone"])
    with pytest.raises(ArtifactError, match="--key-file"):
        other.add(predictor, _labeled()[:1])
    held = LabelMemory.load(folder, author_key=KEY)
    assert held.remove_authors(["u_gone"]) == 2


def test_older_memory_with_its_key_inside_is_refused_with_a_rebuild_note(
    predictor: Predictor, tmp_path: Path
) -> None:
    from ximgctx._artifacts import seal_folder

    memory = LabelMemory.for_predictor(predictor, reference=make_posts(32, seed=31, with_labels=False))
    memory.add(predictor, _labeled()[:2])
    folder = memory.save(tmp_path / "mem")
    meta = json.loads((folder / "memory.json").read_text())
    del meta["author_key_id"], meta["author_key_held"]
    meta.update(format_version=2, author_key="ab" * 32)  # what ximgctx 0.1 wrote
    (folder / "memory.json").write_text(json.dumps(meta))
    (folder / "manifest.json").unlink()
    seal_folder(folder, "label-memory", version=2)
    with pytest.raises(ArtifactError, match=r"ximgctx < 0.2.*stored its author key.*rebuild"):
        LabelMemory.load(folder)


def test_erasure_leaves_the_memory_a_memory_that_never_had_the_author(predictor: Predictor) -> None:
    """After erasure the memory equals one built without the author: the same entries and embeddings, and
    the same centre (the governed reference's, which entries never move), so every post scores alike."""
    import numpy as np

    posts = _labeled()
    reference = make_posts(32, seed=31, with_labels=False)
    kept = [p for p in posts if p.id not in ("p8-0001", "p8-0005")]
    erased = LabelMemory.for_predictor(predictor, reference=reference)
    erased.add(predictor, posts)
    never = LabelMemory.for_predictor(predictor, reference=reference)
    never.add(predictor, kept)
    assert len(erased) == len(never) + 2  # the test can fail: the author's posts were in the memory
    assert erased.remove_authors(["u_gone"]) == 2
    assert erased.ids == never.ids
    assert erased.center is not None and never.center is not None
    assert float(np.abs(erased.center - never.center).max()) < 1e-6
    assert float(np.abs(erased.embeddings - never.embeddings).max()) < 1e-6
    probe = [replace(p, id=p.id + "-probe", text=p.text + "!") for p in posts]
    a = Predictor(predictor.model, device="cpu", memory=erased).predict(probe)
    b = Predictor(predictor.model, device="cpu", memory=never).predict(probe)
    scores = [{t: p.scores for t, p in x.tasks.items()} for x in a]
    assert scores == [{t: p.scores for t, p in x.tasks.items()} for x in b]
    queries = [replace(p, id=p.id + "-near", text=p.text + "!") for p in posts]  # near-duplicates
    fused = predictor.embed(queries)
    for task in ("meaning",):
        s1, r1 = erased.neighbours(fused, task)
        s2, r2 = never.neighbours(fused, task)
        assert [[erased.ids[i] for i in row] for row in r1] == [[never.ids[i] for i in row] for row in r2]
        assert float(np.abs(s1 - s2).max()) < 1e-6
    import torch

    scores = {"meaning": torch.full((len(queries), len(never.tasks["meaning"].labels)), 0.5)}
    a, b = erased.blend(scores, fused)["meaning"], never.blend(scores, fused)["meaning"]
    assert float((a - b).abs().max()) < 1e-6
    assert erased.remove_authors(["u_stay"]) == 6 and len(erased) == 0
    assert erased.center is not None  # the governed reference's centre stays: entries never made it
