"""Shards through the commands: ``shard``, ``load_posts``, ``predict``, ``index``, ``evaluate`` and ``govern``
read a shard folder and give what they give for the same posts in JSONL."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from ximgctx import ContextModel, Post, evaluate, govern
from ximgctx.cli.govern import main as govern_main
from ximgctx.cli.inference import main as cli_main
from ximgctx.cli.shard import main as shard_main
from ximgctx.data.io import load_posts, write_posts
from ximgctx.data.record import LoadReport, PostValidationError
from ximgctx.data.shard_write import write_shards
from ximgctx.data.shards import list_shards

from .._inference_fixtures import make_posts, model_dir

FORMATS = ("parquet", "webdataset")


@pytest.fixture(scope="module")
def posts() -> list[Post]:
    return make_posts(13, seed=3)


def _jsonl_and_shards(tmp_path: Path, posts: list[Post], fmt: str) -> tuple[Path, Path]:
    data = tmp_path / "posts.jsonl"
    write_posts(posts, data)
    write_shards(posts, tmp_path / "shards", format=fmt, posts_per_shard=5)
    return data, tmp_path / "shards"


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_posts_streams_a_shard_folder(tmp_path: Path, posts: list[Post], fmt: str) -> None:
    _, shards = _jsonl_and_shards(tmp_path, posts, fmt)
    it = load_posts(shards, streaming=True)
    assert not isinstance(it, list)
    got = list(it)
    assert [p.id for p in got] == [p.id for p in posts]
    assert all(
        q.image == (Path(p.image).read_bytes() if p.image else None) for p, q in zip(posts, got, strict=True)
    )
    assert [p.id for p in load_posts(shards / "shards.json")] == [p.id for p in posts]


def test_load_posts_names_the_shard_and_record_of_a_bad_one(tmp_path: Path) -> None:
    plain = tmp_path / "plain"  # a folder of tars (no index) is a shard source too
    plain.mkdir()
    with tarfile.open(plain / "0.tar", "w") as tf:
        for name, data in (("k1.json", b'{"id": "ok"}'), ("k2.json", b'{"id": ""}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(PostValidationError) as e:
        list(load_posts(plain, streaming=True))
    assert e.value.source == str((plain / "0.tar").resolve()) and e.value.line == 2 and e.value.field == "id"
    report = LoadReport()
    assert [p.id for p in load_posts(plain, on_error="skip", report=report)] == ["ok"]
    assert report.read == 2 and report.skipped == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_from_shards_equals_predict_from_jsonl(tmp_path: Path, posts: list[Post], fmt: str) -> None:
    data, shards = _jsonl_and_shards(tmp_path, posts, fmt)
    common = ["--model", str(model_dir()), "--batch-size", "4", "--device", "cpu", "--no-progress"]
    assert (
        cli_main([*common, "--data", str(data), "--out", str(tmp_path / "a.jsonl")], command="predict") == 0
    )
    assert (
        cli_main([*common, "--data", str(shards), "--out", str(tmp_path / "b.jsonl")], command="predict") == 0
    )
    a = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert len(a) == len(posts) and a == b


def test_index_from_shards_finds_what_the_jsonl_index_finds(
    tmp_path: Path, posts: list[Post], capsys
) -> None:
    data, shards = _jsonl_and_shards(tmp_path, posts, "webdataset")
    common = ["--model", str(model_dir()), "--device", "cpu", "--no-progress", "--allow-ungoverned"]
    hits = []
    for src, out in ((data, "ia"), (shards, "ib")):
        assert cli_main([*common, "--data", str(src), "--out", str(tmp_path / out)], command="index") == 0
        capsys.readouterr()
        assert (
            cli_main(["--index", str(tmp_path / out), "--post", posts[2].id, "-k", "4"], command="search")
            == 0
        )
        hits.append([(h["id"], round(h["score"], 5)) for h in json.loads(capsys.readouterr().out)["data"]])
    assert len(hits[0]) == 4 and hits[0] == hits[1]


def test_index_from_shards_refuses_ungoverned_posts(tmp_path: Path, posts: list[Post]) -> None:
    _, shards = _jsonl_and_shards(tmp_path, posts, "parquet")
    args = ["--model", str(model_dir()), "--device", "cpu", "--no-progress", "--data", str(shards)]
    assert cli_main([*args, "--out", str(tmp_path / "idx")], command="index") == 2
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_evaluate_from_shards_equals_evaluate_from_jsonl(tmp_path: Path, posts: list[Post], fmt: str) -> None:
    data, shards = _jsonl_and_shards(tmp_path, posts, fmt)
    model = ContextModel.from_pretrained(model_dir(), device="cpu")
    a = evaluate(model, data, batch_size=4, plots=False, keys=("image+text+replies", "text"))
    b = evaluate(model, shards, batch_size=4, plots=False, keys=("image+text+replies", "text"))
    assert a["posts"] == b["posts"] == len(posts)
    assert a["tasks"] == b["tasks"] and a["problems"] == b["problems"]


def test_shard_cli_refuses_ungoverned_posts_and_shards_governed_ones(tmp_path: Path, capsys) -> None:
    raw = [
        Post(p.id, p.image, p.text, p.replies, p.labels, {"visibility": "public"})
        for p in make_posts(6, seed=4)
    ]
    ungoverned = tmp_path / "raw.jsonl"
    write_posts(raw, ungoverned)
    assert shard_main(["--data", str(ungoverned), "--out", str(tmp_path / "s")]) == 2
    assert "has not passed through data governance" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    governed = tmp_path / "governed.jsonl"
    write_posts(govern(raw).posts, governed)
    args = [
        "--data",
        str(governed),
        "--out",
        str(tmp_path / "s"),
        "--shard-format",
        "webdataset",
        "--posts-per-shard",
        "4",
    ]
    assert shard_main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["posts"] == 6 and summary["shards"] == 2 and summary["images_kept"] == 5
    index = json.loads((tmp_path / "s" / "shards.json").read_text())
    assert index["governed"] is True and [e["count"] for e in index["shards"]] == [4, 2]
    assert shard_main(["--data", str(ungoverned), "--out", str(tmp_path / "u"), "--allow-ungoverned"]) == 0
    assert json.loads((tmp_path / "u" / "shards.json").read_text())["governed"] is False


def test_govern_reads_shards_and_writes_governed_shards(tmp_path: Path) -> None:
    raw = make_posts(6, seed=5)
    raw = [
        Post(p.id, p.image, f"{p.text} mail me at a.b@example.com", p.replies, p.labels, {"visibility": v})
        for p, v in zip(raw, ["public", "public", "private", "public", "public", "public"], strict=True)
    ]
    write_shards(raw, tmp_path / "raw", format="webdataset", posts_per_shard=4)
    args = ["--data", str(tmp_path / "raw"), "--report", str(tmp_path / "audit.json")]
    assert govern_main([*args, "--out", str(tmp_path / "g.jsonl")]) == 2  # shards carry bytes: not JSONL
    assert govern_main([*args, "--out", str(tmp_path / "g")]) == 0
    (shard,) = list_shards(tmp_path / "g")
    assert shard.format == "webdataset"
    got = list(load_posts(tmp_path / "g"))
    kept = [p for p in raw if p.meta["visibility"] == "public"]
    assert [p.id for p in got] == [p.id for p in kept]
    assert all("example.com" not in p.text and p.meta.get("governance") for p in got)
    assert [q.image for q in got] == [Path(p.image).read_bytes() if p.image else None for p in kept]
    assert (
        shard_main(["--data", str(tmp_path / "g"), "--out", str(tmp_path / "again")]) == 0
    )  # governed: accepted


def test_shard_dataset_reads_images_lazily_in_any_order(tmp_path: Path, posts: list[Post]) -> None:
    from ximgctx.data.shard_dataset import ShardPostDataset

    _, shards = _jsonl_and_shards(tmp_path, posts, "parquet")
    ds = ShardPostDataset(shards)
    assert len(ds) == len(posts) and all(p.image is None for p in ds.posts)  # held without image bytes
    want = [Path(p.image).read_bytes() if p.image else None for p in posts]
    order = [12, 0, 5, 4, 3, 11, 6, 7, 1]  # backwards, across shards, forwards
    assert [ds[i].image for i in order] == [want[i] for i in order]
    assert [ds[i].id for i in order] == [posts[i].id for i in order]


def test_a_folder_of_parquet_is_shards_only_when_it_stores_image_bytes(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ximgctx.data.shards import is_shard_source

    (tmp_path / "bytes").mkdir()
    (tmp_path / "paths").mkdir()
    pq.write_table(pa.table({"id": ["a"], "image": [b"\x89PNG"]}), tmp_path / "bytes" / "0.parquet")
    pq.write_table(pa.table({"id": ["a"], "image": ["img/a.png"]}), tmp_path / "paths" / "0.parquet")
    assert is_shard_source(tmp_path / "bytes") and not is_shard_source(tmp_path / "paths")
    assert [p.image for p in load_posts(tmp_path / "bytes")] == [b"\x89PNG"]
    assert [p.image for p in load_posts(tmp_path / "paths")] == [str(tmp_path / "paths" / "img" / "a.png")]
