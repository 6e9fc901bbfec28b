"""``--confine-images`` on the inference commands: images outside the root are per-post problems."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from ximgctx.cli.inference import main as cli_main
from ximgctx.data.io import write_posts
from ximgctx.data.record import Post

from .._inference_fixtures import model_dir


@pytest.mark.parametrize("confine", [True, False])
def test_predict_confine_images_refuses_reads_outside_the_root(tmp_path, confine):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(secret)
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(root / "good.png")
    os.symlink(secret, root / "link.png")
    posts = [
        Post("good", str(root / "good.png"), "hello"),
        Post("dotdot", "../secret.png", "hello"),  # relative: written as it is
        Post("absolute", str(secret), "hello"),
        Post("symlink", str(root / "link.png"), "hello"),
        Post("nul", "good.png\x00", "hello"),
    ]
    write_posts(posts, root / "posts.jsonl", image_paths="absolute")
    args = [
        "--model",
        str(model_dir()),
        "--data",
        str(root / "posts.jsonl"),
        "--out",
        str(tmp_path / "o.jsonl"),
    ]
    args += ["--no-progress", "--device", "cpu"] + (["--confine-images"] if confine else [])
    assert cli_main(args, command="predict") == 0
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "o.jsonl").read_text().splitlines())}
    assert list(rows) == ["good", "dotdot", "absolute", "symlink", "nul"]  # every post has a result
    assert rows["good"]["inputs"]["image"] and rows["good"]["problems"] == []
    assert rows["nul"]["problems"][0].startswith("image: invalid_path")
    outside = ("dotdot", "absolute", "symlink")
    if confine:
        for pid in outside:
            assert not rows[pid]["inputs"]["image"]
            assert rows[pid]["problems"][0].startswith("image: outside_root: post"), rows[pid]
            assert str(tmp_path) not in rows[pid]["problems"][0]
    else:  # without the switch the files outside are read, as before
        assert all(rows[pid]["inputs"]["image"] for pid in outside)


def test_predict_with_hostile_strips_gives_every_post_a_result(tmp_path):
    from tests.data.test_processor import _strip_png

    (tmp_path / "wide.png").write_bytes(_strip_png(1_000_000, 1))
    (tmp_path / "tall.png").write_bytes(_strip_png(1, 10_000_000))
    Image.new("RGB", (64, 48), (10, 200, 10)).save(tmp_path / "good.png")
    posts = [
        Post("good-0", "good.png", "a"),
        Post("wide", "wide.png", "b"),
        Post("tall", "tall.png", "c"),
        Post("good-1", "good.png", "d"),
    ]
    write_posts(posts, tmp_path / "posts.jsonl")
    out = tmp_path / "o.jsonl"
    args = ["--model", str(model_dir()), "--data", str(tmp_path / "posts.jsonl"), "--out", str(out)]
    assert cli_main([*args, "--no-progress", "--device", "cpu"], command="predict") == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["good-0", "wide", "tall", "good-1"]
    assert [r["inputs"]["image"] for r in rows] == [True, False, False, True]
    assert [r["problems"][0].split(":")[:2] for r in rows[1:3]] == [["image", " too_elongated"]] * 2
    assert all(set(r["tasks"]) for r in rows)  # scored on what is left


@pytest.mark.parametrize("flag", [None, "--no-confine-images"])
def test_predict_confines_a_datasets_folders_image_paths_unless_told(tmp_path, flag, caplog):
    import datasets

    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "outside.png")
    ds = datasets.Dataset.from_dict(
        {"id": ["in", "out"], "image": ["ok.png", "../outside.png"], "text": ["a", "b"]}
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "ds" / "ok.png")
    out = tmp_path / "o.jsonl"
    args = ["--model", str(model_dir()), "--data", str(tmp_path / "ds"), "--out", str(out)]
    args += ["--no-progress", "--device", "cpu"] + ([flag] if flag else [])
    assert cli_main(args, command="predict") == 0
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    if flag is None:  # the row leaving the folder is a skipped record, named with its column and row
        assert list(rows) == ["in"] and rows["in"]["inputs"]["image"]
        assert "row 1 field 'image': column 'image' holds the image path '../outside.png'" in caplog.text
    else:
        assert list(rows) == ["in", "out"] and rows["out"]["inputs"]["image"]
