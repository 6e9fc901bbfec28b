"""Governed everywhere data enters (``index``, ``memory add``) and erasure after an opt-out (``purge``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ximgctx._artifacts import seal_folder, verify_artifact
from ximgctx.cli import purge as purge_cli
from ximgctx.cli.hitl import main as hitl_main
from ximgctx.cli.inference import main as inference_main
from ximgctx.data.io import load_posts, write_posts
from ximgctx.data.record import Post, Reply
from ximgctx.governance import govern
from ximgctx.governance.authors import (
    MODEL_AUTHORS_FILE,
    author_digests_of,
    model_authors_bytes,
    trained_on_counts,
)
from ximgctx.governance.check import is_governed
from ximgctx.inference import Predictor, SearchIndex
from ximgctx.inference._authors import AuthorKey

from ._inference_fixtures import make_posts, model_dir, tiny_model

KEY = b"operator-key-0123456789abcdef"
GONE = {"u_gone", "u_left"}


def _with_authors(posts: list[Post]) -> list[Post]:
    """Public posts by u0..u3, every third by u_gone / u_left (who also reply), for governing."""
    out = []
    for i, p in enumerate(posts):
        author = ["u_gone", "u1", "u2", "u_left", "u3", "u2"][i % 6]
        replies = [Reply(r.text, ["u_gone", "u5", None][j % 3]) for j, r in enumerate(p.replies)]
        out.append(Post(id=p.id, image=p.image, text=p.text, replies=replies, labels=p.labels,
                        meta={"visibility": "public", "author": author}))  # fmt: skip
    return out


def _opt_out(tmp_path: Path) -> Path:
    path = tmp_path / "opt_out.txt"
    path.write_text("@U_GONE\nu_left  # asked later\n")
    return path


# --- refusing ungoverned data ----------------------------------------------------------------------------


def test_index_refuses_ungoverned_posts_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _with_authors(make_posts(6, seed=3))
    data, governed = tmp_path / "raw.jsonl", tmp_path / "governed.jsonl"
    write_posts(raw, data)
    write_posts(govern(raw, key=KEY).posts, governed)
    args = ["--model", str(model_dir()), "--device", "cpu", "--no-progress"]
    assert inference_main([*args, "--data", str(data), "--out", str(tmp_path / "i1")], command="index") == 2
    err = capsys.readouterr().err
    assert "has not passed through data governance" in err and "--allow-ungoverned" in err
    assert not (tmp_path / "i1").exists()
    assert (
        inference_main([*args, "--data", str(governed), "--out", str(tmp_path / "i2")], command="index") == 0
    )
    out = [*args, "--data", str(data), "--out", str(tmp_path / "i3"), "--allow-ungoverned"]
    assert inference_main(out, command="index") == 0


def test_memory_add_refuses_ungoverned_posts_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_model().save_pretrained(tmp_path / "model")
    raw = _with_authors(make_posts(4, seed=4))
    data, governed = tmp_path / "raw.jsonl", tmp_path / "governed.jsonl"
    write_posts(raw, data)
    write_posts(govern(raw, key=KEY).posts, governed)
    memory = tmp_path / "memory"
    reference = tmp_path / "reference.jsonl"  # the governed sample a new memory centres on
    write_posts(govern(_with_authors(make_posts(8, seed=14)), key=KEY).posts, reference)
    base = [
        "add",
        "--model",
        str(model),
        "--memory",
        str(memory),
        "--device",
        "cpu",
        "--reference",
        str(reference),
    ]
    assert hitl_main([*base, "--data", str(data)], command="memory") == 2
    assert "has not passed through data governance" in capsys.readouterr().err
    assert not memory.exists()  # nothing stored
    # an ungoverned reference is refused too
    assert hitl_main([*base[:-1], str(data), "--data", str(governed)], command="memory") == 2
    assert "has not passed through data governance" in capsys.readouterr().err
    assert not memory.exists()
    assert hitl_main([*base, "--data", str(governed)], command="memory") == 0
    assert hitl_main([*base, "--data", str(data), "--allow-ungoverned"], command="memory") == 0


# --- purge: manifests and models -------------------------------------------------------------------------


def test_purge_rewrites_a_manifest_without_the_authors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    posts = _with_authors(make_posts(12, seed=5))
    posts.append(Post(id="quote", text="look", meta={"visibility": "public", "author": "u9",
                                                     "quoted_status": {"user": {"screen_name": "U_Left"}}}))  # fmt: skip  # noqa: E501
    governed = govern(posts, key=KEY).posts
    data = tmp_path / "governed.jsonl"
    write_posts(governed, data)
    report = tmp_path / "purge.jsonl"
    rc = purge_cli.main(["--opt-out", str(_opt_out(tmp_path)), "--data", str(data), "--report", str(report)])
    assert rc == 0
    kept = load_posts(data)
    by_gone = [p for p in governed if p.meta["author"] in GONE or p.id == "quote"]
    replies_gone = sum(r.author == "u_gone" for p in governed if p not in by_gone for r in p.replies)
    assert sorted(p.id for p in kept) == sorted(p.id for p in governed if p not in by_gone)
    assert all(r.author not in GONE for p in kept for r in p.replies) and all(is_governed(p) for p in kept)
    line = json.loads(capsys.readouterr().out)
    assert line == {"command": "purge", "opted_out_authors": 2, "target": "data", "path": str(data),
                    "posts": len(governed), "removed_posts": len(by_gone), "removed_replies": replies_gone,
                    "purge": line["purge"], "state": "completed", "attempt": 1}  # fmt: skip
    assert json.loads(report.read_text()) == line and "u_gone" not in report.read_text()
    assert purge_cli.main(["--opt-out", str(_opt_out(tmp_path)), "--data", str(data)]) == 0  # idempotent
    assert json.loads(capsys.readouterr().out)["removed_posts"] == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "replies": "oops"}\n')
    assert purge_cli.main(["--opt-out", str(_opt_out(tmp_path)), "--data", str(bad)]) == 2
    assert bad.read_text() == '{"id": "x", "replies": "oops"}\n'  # untouched


def _model_with_authors(tmp_path: Path, digests: set[str], key: bytes) -> Path:
    """What training does: the governance author set inside the model folder, listed in its manifest."""
    folder = tiny_model().save_pretrained(tmp_path / "model")
    manifest = json.loads((folder / "manifest.json").read_text())
    found = None if manifest.get("format") == "ximgctx-model" else verify_artifact(folder, "model")
    (folder / "governance").mkdir()
    target = folder / MODEL_AUTHORS_FILE
    target.write_bytes(model_authors_bytes(digests, key))
    if found is None:  # the model saver's own manifest (before model folders went through _artifacts)
        data = target.read_bytes()
        manifest["files"][MODEL_AUTHORS_FILE] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    else:  # the artifact module's manifest, rewritten with the new file listed
        (folder / "manifest.json").unlink()
        seal_folder(folder, found.kind, version=found.version, meta=found.meta)
    return folder


def test_purge_reports_how_many_opted_out_authors_trained_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    posts = _with_authors(make_posts(12, seed=6))
    result = govern(posts, key=KEY)  # u_gone and u_left are not opted out yet: their words are kept
    assert trained_on_counts(result.author_digests, {"U_GONE", "@u_left", "never-posted"}, KEY) == 2
    assert author_digests_of(result.posts, KEY) == result.author_digests  # what training computes
    assert trained_on_counts(result.author_digests, {"u_gone"}, b"another-key-0123456789") == 0
    folder = _model_with_authors(tmp_path, result.author_digests, KEY)
    key_file = tmp_path / "governance.key"
    key_file.write_bytes(KEY)
    opt_out = _opt_out(tmp_path)
    assert (
        purge_cli.main(["--opt-out", str(opt_out), "--model", str(folder), "--key-file", str(key_file)]) == 0
    )
    line = json.loads(capsys.readouterr().out)
    assert line["trained_on_opted_out_authors"] == 2 and line["retrain"] is True
    assert line["authors_in_model"] == len(result.author_digests) == 6  # u1 u2 u3 u5 u_gone u_left
    text = (folder / MODEL_AUTHORS_FILE).read_text()
    assert "u_gone" not in text and KEY.decode() not in text
    other = tmp_path / "other.key"
    other.write_bytes(b"x" * 32)
    assert purge_cli.main(["--opt-out", str(opt_out), "--model", str(folder), "--key-file", str(other)]) == 2
    assert "not the key given" in capsys.readouterr().err
    plain = tiny_model().save_pretrained(tmp_path / "plain")
    assert (
        purge_cli.main(["--opt-out", str(opt_out), "--model", str(plain), "--key-file", str(key_file)]) == 2
    )
    assert "retrain" in capsys.readouterr().err


# --- purge: indexes and memories (SearchIndex/LabelMemory.remove_authors) --------------------------------


def test_index_erasure_finds_every_author_the_identity_rule_names(tmp_path: Path) -> None:
    """An author under any key governance reads (``handle``, ``author_id``, a nested account) and the author
    of a post quoted inside meta are found by erasure, as governance would have dropped them."""
    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    posts = make_posts(5, seed=3)
    metas = [
        {"visibility": "public", "handle": "@U_Gone"},  # a handle: governance keeps it as the identity
        {"visibility": "public", "author_id": "u_gone"},
        {"visibility": "public", "user": {"id": "u_gone", "name": "Gone"}},
        {"visibility": "public", "author": "u1", "quoted_status": {"user": {"screen_name": "@U_GONE"}}},
        {"visibility": "public", "author": "u2"},
    ]
    for p, meta in zip(posts, metas, strict=True):
        p.meta, p.replies = meta, [Reply(r.text, None) for r in p.replies]
    governed = govern(posts, key=KEY).posts  # nobody has opted out yet: all five are kept
    assert [p.id for p in governed] == [p.id for p in posts] and governed[0].meta["handle"] == "u_gone"
    assert governed[3].meta["quoted_status"]["user"]["screen_name"] == "u_gone"  # a quoted author, kept
    index = SearchIndex.build(predictor, governed)
    assert index.remove_authors(["u_gone"]) == 4  # u_gone opts out later
    assert [r["id"] for r in index.records] == [posts[4].id]


def test_purge_removes_authors_from_an_index_and_a_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ximgctx.inference.memory import LabelMemory

    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    governed = govern(_with_authors(make_posts(18, seed=7)), key=KEY).posts
    # a post goes when it or one of its replies is by an opted-out author (the reply is in its embedding)
    gone_ids = {
        p.id for p in governed if p.meta["author"] in GONE or any(r.author in GONE for r in p.replies)
    }
    assert 0 < len(gone_ids) < len(governed)
    index = SearchIndex.build(predictor, governed)
    index_dir = index.save(tmp_path / "index")
    vectors = {p.id: index.indexes["fused"].reconstruct(i) for i, p in enumerate(governed)}
    memory = LabelMemory.for_predictor(predictor, reference=governed)
    memory.add(predictor, governed)
    memory_dir = memory.save(tmp_path / "memory")
    rc = purge_cli.main(
        ["--opt-out", str(_opt_out(tmp_path)), "--index", str(index_dir), "--memory", str(memory_dir)]
    )
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["target"] for x in lines] == ["index", "memory"]
    assert lines[0]["removed"] == len(gone_ids) == lines[1]["removed"]
    index = SearchIndex.load(index_dir)
    assert len(index) == len(governed) - len(gone_ids)
    queries = np.stack([vectors[i] for i in sorted(gone_ids)])
    for hits in index.search_vectors(queries, k=len(index)):  # exact search over the whole index
        assert len(hits) == len(index) and not {h.id for h in hits} & gone_ids
    for pid in gone_ids:
        with pytest.raises(KeyError):
            index.search_post(pid)
    memory = LabelMemory.load(memory_dir)
    assert len(memory) == len(governed) - len(gone_ids) and not set(memory.ids) & gone_ids


# --- purge: one audited, resumable operation (the journal) ----------------------------------------------


def _index_and_memory(tmp_path: Path) -> tuple[list[Post], Path, Path, set[str]]:
    from ximgctx.inference.memory import LabelMemory

    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    governed = govern(_with_authors(make_posts(12, seed=11)), key=KEY).posts
    gone = {p.id for p in governed if p.meta["author"] in GONE or any(r.author in GONE for r in p.replies)}
    index_dir = SearchIndex.build(predictor, governed, author_key=KEY).save(tmp_path / "index")
    memory = LabelMemory.for_predictor(predictor, reference=governed)
    memory.author_key = AuthorKey.operator(KEY)
    memory.add(predictor, governed)
    return governed, index_dir, memory.save(tmp_path / "memory"), gone


def test_a_purge_killed_midway_is_resumed_and_completes_the_same_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ximgctx.inference.memory import LabelMemory

    governed, index_dir, memory_dir, gone = _index_and_memory(tmp_path)
    journal = tmp_path / "journal.json"
    argv = ["--opt-out", str(_opt_out(tmp_path)), "--index", str(index_dir), "--memory", str(memory_dir)]
    key_file = tmp_path / "governance.key"
    key_file.write_bytes(KEY)
    argv += ["--journal", str(journal), "--key-file", str(key_file)]

    def killed(self: object, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process dies while the memory is being written

    with monkeypatch.context() as m:
        m.setattr(LabelMemory, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            purge_cli.main(argv)
    capsys.readouterr()
    (record,) = json.loads(journal.read_text())["purges"]
    assert record["state"] == "started" and record["completed"] is None  # written first, not completed
    states = {t["target"]: t["state"] for t in record["targets"]}
    assert states == {"index": "done", "memory": "running"}
    assert "u_gone" not in journal.read_text() and "u_left" not in journal.read_text()
    assert len(SearchIndex.load(index_dir)) == len(governed) - len(gone)  # the index was already purged
    assert len(LabelMemory.load(memory_dir)) == len(governed)  # the memory not yet
    assert purge_cli.main(argv) == 0
    captured = capsys.readouterr()
    lines = {x["target"]: x for x in map(json.loads, captured.out.splitlines())}
    assert "resumed and completed purge " + record["id"] in captured.err
    # the index reports what the first attempt removed, not "removed 0"
    assert lines["index"]["removed"] == len(gone) and lines["index"]["attempt"] == 1
    assert lines["memory"]["removed"] == len(gone) and lines["memory"]["attempt"] == 2
    assert lines["memory"]["interrupted_attempt_before"] is True
    assert {x["purge"] for x in lines.values()} == {record["id"]} and lines["index"]["state"] == "completed"
    (done,) = json.loads(journal.read_text())["purges"]  # one audit record, not two
    assert done["id"] == record["id"] and done["state"] == "completed" and done["attempts"] == 2
    assert done["counts"] == {"index.removed": len(gone), "memory.removed": len(gone)}
    assert len(LabelMemory.load(memory_dir)) == len(governed) - len(gone)


def test_a_failed_model_check_erases_nothing_and_a_failed_purge_is_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ximgctx.inference.memory import LabelMemory

    governed, index_dir, memory_dir, gone = _index_and_memory(tmp_path)
    folder = _model_with_authors(tmp_path, author_digests_of(governed, KEY), KEY)
    right, wrong = tmp_path / "governance.key", tmp_path / "wrong.key"
    right.write_bytes(KEY)
    wrong.write_bytes(b"w" * 32)
    report = tmp_path / "purge.jsonl"
    argv = ["--opt-out", str(_opt_out(tmp_path)), "--index", str(index_dir), "--memory", str(memory_dir)]
    argv += ["--model", str(folder), "--report", str(report)]
    memory_json = (memory_dir / "memory.json").read_bytes()
    (memory_dir / "memory.json").write_bytes(memory_json.replace(b'"weight": 0.8', b'"weight": 0.9'))
    assert purge_cli.main([*argv, "--key-file", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "not the key given" in err and "recorded as started" in err
    # models are checked first: nothing was erased, and the failure is on record (report and journal)
    assert len(SearchIndex.load(index_dir)) == len(governed)
    (failed,) = [json.loads(x) for x in report.read_text().splitlines()]
    assert (
        failed["target"] == "model"
        and failed["state"] == "started"
        and "not the key given" in failed["error"]
    )
    journal = Path(str(report) + ".journal.json")
    (record,) = json.loads(journal.read_text())["purges"]
    assert record["state"] == "started" and record["targets"][0]["state"] == "failed"
    # the memory fails next (altered on disk): the index is purged, the record stays started
    assert purge_cli.main([*argv, "--key-file", str(right)]) == 2
    assert "recorded as started" in capsys.readouterr().err
    records = json.loads(journal.read_text())["purges"]
    assert [r["state"] for r in records] == ["abandoned", "started"]  # the wrong key's try erased nothing
    assert len(SearchIndex.load(index_dir)) == len(governed) - len(gone)
    (memory_dir / "memory.json").write_bytes(memory_json)  # the operator restores the memory
    assert purge_cli.main([*argv, "--key-file", str(right)]) == 0  # the same command: resumed, completed
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    assert [x["target"] for x in lines] == ["model", "model", "index", "memory", "model", "index", "memory"]
    assert lines[1]["retrain"] is True and lines[1]["trained_on_opted_out_authors"] == 2
    # the rerun reports what the first attempt removed from the index, not "removed 0"
    assert lines[5]["removed"] == lines[6]["removed"] == len(gone) and lines[5]["attempt"] == 1
    assert lines[6]["attempt"] == 2 and lines[6]["state"] == "completed"
    abandoned, done = json.loads(journal.read_text())["purges"]
    assert done["id"] == lines[6]["purge"] != abandoned["id"] and done["state"] == "completed"
    assert done["counts"]["model.trained_on_opted_out_authors"] == 2 and done["attempts"] == 2
    assert len(LabelMemory.load(memory_dir)) == len(governed) - len(gone)


# --- purge --data on a shard folder ------------------------------------------------------------------------


@pytest.mark.parametrize("shard_format", ["parquet", "webdataset"])
def test_purge_data_writes_a_new_verified_shard_artifact_without_the_authors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shard_format: str
) -> None:
    import os

    from ximgctx.cli import main as cli_main
    from ximgctx.data.shards import list_shards

    governed = govern(_with_authors(make_posts(12, seed=13)), key=KEY).posts
    data = tmp_path / "governed.jsonl"
    write_posts(governed, data)
    shards = tmp_path / "shards"
    argv = ["shard", "--data", str(data), "--out", str(shards), "--posts-per-shard", "5"]
    assert cli_main([*argv, "--shard-format", shard_format]) == 0
    capsys.readouterr()
    before = list_shards(shards)
    assert len(before) == 3 and sum(s.count for s in before) == 12
    assert any(b"u_gone" in s.path.read_bytes() for s in before)  # the test can fail
    old = tmp_path / "old-first-shard"
    os.link(before[0].path, old)  # the very file the folder held: an in-place edit would change it
    gone_posts = {p.id for p in governed if p.meta["author"] in GONE}
    gone_images = {Path(p.image).read_bytes() for p in governed if p.id in gone_posts and p.image}
    assert gone_images
    assert purge_cli.main(["--opt-out", str(_opt_out(tmp_path)), "--data", str(shards)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["target"] == "data" and line["removed_posts"] == len(gone_posts) > 0
    assert line["removed_replies"] > 0
    # a new artifact, verified, without the authors: their posts, replies and images are in no file
    verify_artifact(shards, "shards")
    after = list_shards(shards)
    assert sum(s.count for s in after) == 12 - len(gone_posts) and after[0].format == shard_format
    index = json.loads((shards / "shards.json").read_text())
    assert index["governed"] is True and index["shard_format"] == shard_format
    kept = load_posts(shards)
    assert sorted(p.id for p in kept) == sorted(p.id for p in governed if p.id not in gone_posts)
    assert all(is_governed(p) for p in kept) and all(r.author not in GONE for p in kept for r in p.replies)
    for f in shards.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert b"u_gone" not in blob and b"u_left" not in blob, f
            assert not any(img in blob for img in gone_images), f
    assert hashlib.sha256(old.read_bytes()).hexdigest() == before[0].sha256  # never edited in place
    assert not list(tmp_path.glob(".shards*"))  # no leftover temporary or old folder beside it


def test_index_and_memory_add_key_their_digests_with_the_key_file_purge_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    governed = govern(_with_authors(make_posts(8, seed=17)), key=KEY).posts
    data = tmp_path / "governed.jsonl"
    write_posts(governed, data)
    gone = {p.id for p in governed if p.meta["author"] in GONE or any(r.author in GONE for r in p.replies)}
    key_file = tmp_path / "governance.key"
    key_file.write_bytes(KEY)
    common = [
        "--model",
        str(model_dir()),
        "--device",
        "cpu",
        "--data",
        str(data),
        "--key-file",
        str(key_file),
    ]
    assert inference_main([*common, "--no-progress", "--out", str(tmp_path / "idx")], command="index") == 0
    memory_argv = ["add", *common, "--reference", str(data), "--memory", str(tmp_path / "mem")]
    assert hitl_main(memory_argv, command="memory") == 0
    capsys.readouterr()
    argv = [
        "--opt-out",
        str(_opt_out(tmp_path)),
        "--index",
        str(tmp_path / "idx"),
        "--memory",
        str(tmp_path / "mem"),
    ]
    assert (
        purge_cli.main(argv) == 2
    )  # without the key the digests cannot be recomputed: refused, nothing erased
    assert "give that key" in capsys.readouterr().err
    assert purge_cli.main([*argv, "--key-file", str(key_file)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["removed"] for x in lines] == [len(gone), len(gone)] and gone
