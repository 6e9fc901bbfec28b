"""data.train as a list: several manifests read one after the other, each resolving its own image paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ximgctx import load_posts
from ximgctx.config import ConfigError
from ximgctx.training import train
from ximgctx.training.config import DataSources

from .test_training import bench, experiment  # noqa: F401  (the module-scoped ContextBench fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _relocated(posts: list, folder: Path) -> Path:
    """The posts in ``folder/posts.jsonl`` with their images copied to ``folder/images`` and named by
    relative paths, so they resolve only against this manifest's folder."""
    (folder / "images").mkdir(parents=True)
    with open(folder / "posts.jsonl", "w") as f:
        for post in posts:
            rec = post.to_dict()
            if isinstance(post.image, str):
                name = Path(post.image).name
                shutil.copy(post.image, folder / "images" / name)
                rec["image"] = f"images/{name}"
            f.write(json.dumps(rec) + "\n")
    return folder / "posts.jsonl"


def test_several_manifests_each_resolve_their_own_images(bench: Path, tmp_path: Path) -> None:  # noqa: F811
    posts = load_posts(bench / "governed_train.jsonl")
    first = _relocated(posts[:20], tmp_path / "old")
    second = _relocated(posts[20:32], tmp_path / "export")
    cfg = experiment(bench, tmp_path / "run", max_steps=2, save_every=100, eval_every=100)
    cfg["data"]["train"] = [str(first), str(second)]
    result = train(cfg)
    assert result.data["train_posts"] == 32
    assert not [k for k in result.data.get("problems", {}) if k.startswith("image")]


def test_data_train_values() -> None:
    assert DataSources(train=["a.jsonl"]).train == "a.jsonl"  # a list of one is the path
    two = DataSources(train=["a.jsonl", "shards/"])
    assert two.train_sources == ["a.jsonl", "shards/"] and two.train_name == "a.jsonl + shards/"
    assert DataSources().train_sources == [] and DataSources().train_name is None
    for bad in ([], ["a.jsonl", ""], ["a.jsonl", 3], ""):
        with pytest.raises(ConfigError, match="data.train must be a path or a non-empty list"):
            DataSources(train=bad)  # type: ignore[arg-type]


def test_train_data_flag_gives_data_train_a_list(tmp_path: Path) -> None:
    from ximgctx.cli.train import build_parser, config_overrides
    from ximgctx.training.config import load_experiment

    odd = tmp_path / "old posts: 1.jsonl"  # a name YAML would misread unquoted
    (tmp_path / "shards").mkdir()
    odd.write_text("")
    cfg = tmp_path / "exp.yaml"
    model = {"tasks": [{"name": "intent", "labels": ["joke", "threat"], "kind": "multilabel"}]}
    cfg.write_text(json.dumps({"model": model, "train": {"max_steps": 1}}))  # JSON is YAML
    args = build_parser("train").parse_args(
        ["--config", str(cfg), "--data", str(odd), "--data", str(tmp_path / "shards")]
    )
    data = load_experiment(str(cfg), config_overrides(args)).data
    assert data.train_sources == [str(odd), str(tmp_path / "shards")]
    one = build_parser("train").parse_args(["--config", str(cfg), "--data", str(odd)])
    assert load_experiment(str(cfg), config_overrides(one)).data.train == str(odd)
    with pytest.raises(SystemExit):  # a missing path is an argument error, before anything is imported
        build_parser("train").parse_args(["--config", str(cfg), "--data", str(tmp_path / "nope.jsonl")])
