"""Search index as an artifact: safe output folders, erasure by author or id, image filters that need an
image."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ximgctx.cli.inference import main as cli_main
from ximgctx.data.io import write_posts
from ximgctx.data.record import Reply
from ximgctx.errors import ArtifactError, OutputError
from ximgctx.inference import Predictor, SearchIndex, SearchIndexError

from .._inference_fixtures import bad_posts, make_posts, model_dir, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_pretrained(model_dir(), device="cpu")


def _authored() -> list:
    """20 posts; u_gone wrote p*-0003 and p*-0011 and replied under p*-0007; u_stay wrote the rest."""
    posts = make_posts(20, seed=9)
    out = []
    for i, p in enumerate(posts):
        author = "u_gone" if i in (3, 11) else "u_stay"
        replies = list(p.replies) + ([Reply("me too", "U_Gone")] if i == 7 else [])
        out.append(replace(p, meta={"author": author}, replies=replies))
    return out


GONE = {"p9-0003", "p9-0007", "p9-0011"}


def _all_hits(index: SearchIndex, queries: np.ndarray, space: str) -> set[str]:
    """Ids of every hit of an exhaustive search (k = every post) for each query."""
    hits = index.search_vectors(queries, space=space, k=max(len(index), 1))
    return {h.id for hs in hits for h in hs}


@pytest.mark.parametrize("mode", ["exact", "ivf"])
def test_remove_authors_erases_posts_and_replies(predictor: Predictor, mode: str, tmp_path: Path) -> None:
    posts = _authored()
    index = SearchIndex.build(predictor, posts, mode=mode, nlist=2 if mode == "ivf" else None)
    queries = {"fused": predictor.embed(posts), "image": predictor.embed(posts, space="image")}
    assert _all_hits(index, queries["fused"], "fused") >= GONE  # the test can fail
    # no author id is written into the records: only keyed digests
    assert all("u_gone" not in json.dumps(r) for r in index.records)
    n_image = index.indexes["image"].ntotal
    assert index.remove_authors([" @U_GONE "]) == 3  # one identity rule: case, space and @ do not matter
    assert index.remove_authors(["u_gone"]) == 0  # already gone
    assert len(index) == 17 and index.indexes["fused"].ntotal == 17
    assert index.indexes["image"].ntotal == n_image - len([p for p in posts if p.id in GONE and p.image])
    for space in ("fused", "image"):
        found = _all_hits(index, queries[space], space)
        assert found.isdisjoint(GONE) and found, space
    # the survivors keep their vectors: "more like this" on a kept post still works, exactly as before
    kept = next(p.id for p in posts if p.id not in GONE)
    assert index.search_post(kept, k=3)
    path = index.save(tmp_path / "idx")
    loaded = SearchIndex.load(path)
    assert _all_hits(loaded, queries["fused"], "fused").isdisjoint(GONE) and len(loaded) == 17
    assert loaded.remove_ids(["p9-0000", "nope"]) == 1
    assert "p9-0000" not in _all_hits(loaded, queries["fused"], "fused")
    with pytest.raises(KeyError):
        loaded.search_post("p9-0000")


def test_image_task_filter_never_matches_imageless_posts() -> None:
    model = tiny_model(0)
    with torch.no_grad():
        model.heads["objects"].thresholds.fill_(0.0)  # every post with an image gets every object label
    eager = Predictor(model, device="cpu")
    posts = bad_posts()
    index = SearchIndex.build(eager, posts)
    usable = {"good-0", "good-1", "empty-text"}
    q = eager.embed(posts)
    hits = index.search_vectors(q, space="fused", k=len(posts), where=["objects=circle"])
    assert {h.id for hs in hits for h in hs} == usable


def _index_cli(data: Path, out: Path | str, *extra: str) -> int:
    args = ["--model", str(model_dir()), "--data", str(data), "--out", str(out), "--device", "cpu"]
    # the posts are not governed (this tests the output folder; the governance refusal is in
    # tests/test_purge.py)
    return cli_main([*args, "--no-progress", "--allow-ungoverned", *extra], command="index")


def test_index_cli_never_clobbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data" / "posts.jsonl"
    write_posts(make_posts(6, seed=3), data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _index_cli(data, out) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert _index_cli(data, out, "--overwrite") == 0  # told to: it proceeds
    assert SearchIndex.load(out).records and not (out / "notes.txt").exists()
    assert _index_cli(data, out) == 0  # an index replaces an index
    # the folder holding the input is refused, even with --overwrite
    assert _index_cli(data, data.parent, "--overwrite") == 2
    assert "is also an input" in capsys.readouterr().err and data.is_file()
    # the working folder is never replaced
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "keep.txt").write_text("x")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        assert _index_cli(data, ".", "--overwrite") == 2
    finally:
        os.chdir(old)
    assert (cwd / "keep.txt").read_text() == "x"
    with pytest.raises(OutputError):
        SearchIndex.load(out).save(tmp_path / "data")  # the library refuses too (not an index folder)


def test_index_folder_is_verified(tmp_path: Path, predictor: Predictor) -> None:
    index = SearchIndex.build(predictor, make_posts(4, seed=6))
    path = index.save(tmp_path / "idx")
    (path / "extra.bin").write_bytes(b"\0")
    with pytest.raises(SearchIndexError, match="extra.bin: not listed in manifest.json"):
        SearchIndex.load(path)
    (path / "extra.bin").unlink()
    meta = json.loads((path / "index.json").read_text())
    pin = (path / "manifest.json").read_bytes()
    assert SearchIndex.load(path, expected_sha256=hashlib.sha256(pin).hexdigest()).records
    with pytest.raises(SearchIndexError, match="does not match the expected"):
        SearchIndex.load(path, expected_sha256="0" * 64)
    assert "author_key" not in meta and len(meta["author_key_id"]) == 16


def test_saved_index_alone_cannot_tell_whether_an_author_is_in_it(
    predictor: Predictor, tmp_path: Path
) -> None:
    """index.json names the operator key's id, never the key: the folder alone cannot recompute an author's
    digest; the key holder can erase them; a format-2 folder (key inside) is refused with a rebuild note."""
    from ximgctx._artifacts import seal_folder
    from ximgctx.governance.identity import author_digest
    from ximgctx.governance.keys import key_id

    key = b"operator-governance-key-for-index"
    path = SearchIndex.build(predictor, _authored(), author_key=key).save(tmp_path / "idx")
    meta = json.loads((path / "index.json").read_text())
    assert "author_key" not in meta and meta["author_key_id"] == key_id(key) and meta["author_key_held"]
    assert all(key not in f.read_bytes() and key.hex().encode() not in f.read_bytes() for f in path.iterdir())
    stored = {d for r in SearchIndex.load(path).records for d in r["authors"]}
    candidates = [str(v).encode() for v in meta.values() if isinstance(v, (str, int))]
    assert all(author_digest("u_gone", c) not in stored for c in candidates)
    assert author_digest("u_gone", key) in stored
    with pytest.raises(ArtifactError, match=f"governance key {key_id(key)}"):
        SearchIndex.load(path, author_key=b"some-other-operator-key-00000").remove_authors(["u_gone"])
    assert SearchIndex.load(path, author_key=key).remove_authors(["u_gone"]) == 3
    meta.update(format_version=2, author_key="cd" * 32)  # what ximgctx 0.1 wrote
    del meta["author_key_id"], meta["author_key_held"]
    (path / "index.json").write_text(json.dumps(meta))
    (path / "manifest.json").unlink()
    seal_folder(path, "search-index", version=2)
    with pytest.raises(SearchIndexError, match=r"ximgctx < 0.2.*rebuild"):
        SearchIndex.load(path)
