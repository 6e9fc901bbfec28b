"""``load_posts`` on Hugging Face ``datasets`` sources: Dataset / IterableDataset / DatasetDict objects,
save_to_disk folders and hub ids, with a column mapping; Image() bytes go through ximgctx's decoder, and a
post read from a Dataset trains and predicts exactly like the same post read from JSONL and image files."""

from __future__ import annotations

import io
import json
import re
import zlib
from itertools import islice
from pathlib import Path

import datasets
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, IterableDataset, List, Value
from PIL import Image as PILImage

from ximgctx import load_posts, write_posts
from ximgctx.contextbench import generate
from ximgctx.data.hf_datasets import ColumnMap, HubDatasetError
from ximgctx.data.record import LoadReport, PostValidationError
from ximgctx.errors import ConfigError, InputError
from ximgctx.governance import govern
from ximgctx.inference.predictor import Predictor
from ximgctx.training import train

from .._offline import watch_network
from ..helpers import tiny_model, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


def png(color: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


RESEARCH_FEATURES = Features(
    {
        "post_id": Value("string"),
        "img": Image(),
        "caption": Value("string"),
        "comments": List({"text": Value("string"), "author": Value("string")}),
        "label": ClassLabel(names=["joke", "protest", "threat", "meme"]),
        "lang": Value("string"),
    }
)
RESEARCH_COLUMNS = {
    "id": "post_id",
    "image": "img",
    "text": "caption",
    "replies": "comments",
    "labels": {"intent": "label"},
    "meta": ["lang"],
}


def research_dataset() -> Dataset:
    """The shape a researcher's dataset has: its own column names, an Image() column, a ClassLabel."""
    return Dataset.from_dict(
        {
            "post_id": ["a", "b", "c"],
            "img": [png((200, 10, 10)), None, png((10, 10, 200))],
            "caption": ["when monday hits", None, "see you saturday"],
            "comments": [[{"text": "lol", "author": "u1"}], [], [{"text": "count me in", "author": None}]],
            "label": [0, 1, -1],  # -1: datasets' "no label"
            "lang": ["en", "de", "en"],
        },
        features=RESEARCH_FEATURES,
    )


def test_dataset_with_a_column_mapping_gives_the_posts() -> None:
    posts = load_posts(research_dataset(), columns=RESEARCH_COLUMNS)
    assert [p.id for p in posts] == ["a", "b", "c"]
    assert posts[0].image == png((200, 10, 10)) and posts[1].image is None  # the stored bytes, undecoded
    assert [p.text for p in posts] == ["when monday hits", "", "see you saturday"]
    assert [(r.text, r.author) for r in posts[0].replies] == [("lol", "u1")]
    assert [(r.text, r.author) for r in posts[2].replies] == [("count me in", None)]
    assert [p.labels for p in posts] == [{"intent": "joke"}, {"intent": "protest"}, {}]  # ClassLabel names
    assert [p.meta for p in posts] == [{"lang": "en"}, {"lang": "de"}, {"lang": "en"}]
    assert load_posts(research_dataset(), columns=ColumnMap(**RESEARCH_COLUMNS)) == posts
    with pytest.raises(PostValidationError, match=r"Dataset row 0 field 'labels.intent'"):  # not a ClassLabel
        load_posts(research_dataset().cast_column("label", Value("int64")), columns=RESEARCH_COLUMNS)


def test_default_columns_follow_the_record_format_and_strings_are_replies() -> None:
    ds = Dataset.from_dict(
        {
            "image": [png((1, 2, 3))],
            "text": ["hi"],
            "replies": [["lol", "same"]],
            "labels": [json.dumps({"intent": ["joke"], "meaning": "ironic"})],  # JSON-string column
            "meta": [{"visibility": "public"}],
        }
    )
    (post,) = load_posts(ds)
    assert post.id == "0"  # no id column: the row index
    assert [r.text for r in post.replies] == ["lol", "same"]
    assert post.labels == {"intent": ["joke"], "meaning": "ironic"} and post.meta == {"visibility": "public"}
    with pytest.raises(InputError, match=r"columns \['nope'\] .* it has \['image', 'text'"):
        load_posts(ds, columns={"text": "nope"})
    with pytest.raises(ConfigError, match="unknown parts"):
        load_posts(ds, columns={"caption": "text"})


def test_a_bad_row_is_one_error_naming_its_index_and_counts_like_jsonl() -> None:
    ds = Dataset.from_dict(
        {
            "id": ["a", "b", "c", "a"],
            "labels": [
                json.dumps({"intent": ["joke"]}),
                json.dumps({"intent": [""]}),
                json.dumps({"meaning": {"literal": -1}}),
                json.dumps({}),
            ],
        }
    )
    with pytest.raises(PostValidationError, match=r"Dataset row 1 field 'labels.intent\[0\]'") as err:
        load_posts(ds)
    assert err.value.row == 1 and err.value.field == "labels.intent[0]"
    report = LoadReport()
    posts = load_posts(ds, on_error="skip", report=report)
    assert [p.id for p in posts] == ["a"]
    assert report.read == 4 and report.skipped == 3
    assert [(e.row, e.field) for e in report.errors] == [
        (1, "labels.intent[0]"),
        (2, "labels.meaning.literal"),
        (3, "id"),
    ]
    assert "first seen at row 0" in str(report.errors[2])
    assert len(load_posts(ds.select([0, 1, 2]), labels="ignore")) == 3  # inference: labels are not read


def test_image_bytes_are_never_decoded_by_datasets() -> None:
    """A 50-byte PNG claiming 10^10 pixels: datasets' own decoding would hand it to Pillow; here it stays
    bytes and the processor refuses it by its header, as a post problem."""
    bomb = bytearray(png((0, 0, 0), size=1))
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width, height
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    ds = Dataset.from_dict({"id": ["bomb", "ok"], "image": [bytes(bomb), png((9, 9, 9))]}).cast_column(
        "image", Image()
    )
    posts = load_posts(ds)
    assert posts[0].image == bytes(bomb)
    batch = tiny_model("concat").processor(posts)
    assert batch.image_mask.tolist() == [False, True]
    assert [(p.field, p.kind) for p in batch.problems[0]] == [("image", "too_many_pixels")]


def test_posts_holding_image_bytes_are_not_written_as_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "posts.jsonl"
    out.write_text("old\n")
    posts = load_posts(research_dataset(), columns=RESEARCH_COLUMNS)
    with pytest.raises(InputError, match="post 'a' field 'image': a JSONL record holds an image path"):
        write_posts(posts, out)
    assert out.read_text() == "old\n" and list(tmp_path.iterdir()) == [out]  # nothing lost, no temp file


def test_dataset_dict_needs_a_split_when_it_has_several() -> None:
    ds = research_dataset()
    both = DatasetDict(train=ds, test=ds.select([2]))
    with pytest.raises(InputError, match=r"splits \['train', 'test'\]: pass split="):
        load_posts(both, columns=RESEARCH_COLUMNS)
    with pytest.raises(InputError, match=r"no split 'val'; its splits are \['train', 'test'\]"):
        load_posts(both, split="val", columns=RESEARCH_COLUMNS)
    assert [p.id for p in load_posts(both, split="test", columns=RESEARCH_COLUMNS)] == ["c"]
    assert [p.id for p in load_posts(DatasetDict(only=ds), columns=RESEARCH_COLUMNS)] == ["a", "b", "c"]


def test_save_to_disk_folders_load_and_stream(tmp_path: Path) -> None:
    ds = research_dataset()
    ds.save_to_disk(str(tmp_path / "one"))
    DatasetDict(train=ds, test=ds.select([0])).save_to_disk(str(tmp_path / "dict"))
    expected = load_posts(ds, columns=RESEARCH_COLUMNS)
    assert load_posts(tmp_path / "one", columns=RESEARCH_COLUMNS) == expected
    streamed = load_posts(str(tmp_path / "one"), columns=RESEARCH_COLUMNS, streaming=True)
    assert not isinstance(streamed, list) and list(streamed) == expected
    assert load_posts(tmp_path / "dict", split="train", columns=RESEARCH_COLUMNS) == expected
    with pytest.raises(InputError, match="pass split="):
        load_posts(tmp_path / "dict", columns=RESEARCH_COLUMNS)


def test_save_to_disk_folder_naming_a_file_outside_is_refused(tmp_path: Path) -> None:
    research_dataset().save_to_disk(str(tmp_path / "ds"))
    state = tmp_path / "ds" / "state.json"
    doc = json.loads(state.read_text())
    doc["_data_files"] = [{"filename": "../../elsewhere.arrow"}]
    state.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="lies outside the folder; refused"):
        load_posts(tmp_path / "ds")


def test_iterable_dataset_is_streamed_never_materialised() -> None:
    served = []

    def endless():
        i = 0
        while True:
            served.append(i)
            yield {"post_id": f"p{i}", "caption": f"post {i}", "img": png((i % 256, 0, 0))}
            i += 1

    stream = IterableDataset.from_generator(endless)
    posts = load_posts(stream, columns={"id": "post_id", "text": "caption", "image": "img"})
    first = list(islice(posts, 3))  # an endless stream: a list would never return
    assert [p.id for p in first] == ["p0", "p1", "p2"] and first[1].image == png((1, 0, 0))
    assert len(served) < 100  # read one Arrow batch ahead at most
    finite = research_dataset().to_iterable_dataset()
    assert list(load_posts(finite, columns=RESEARCH_COLUMNS)) == load_posts(
        research_dataset(), columns=RESEARCH_COLUMNS
    )


def test_hub_dataset_id_offline_and_uncached_fails_at_once_naming_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    network = watch_network(monkeypatch)
    with pytest.raises(HubDatasetError) as err:
        load_posts("org/missing-posts", split="train", revision="main", cache_dir=tmp_path)
    assert network.connects == [] and network.sleeps == []  # no download tried, no retry waited for
    message = str(err.value)
    assert "'org/missing-posts'" in message and "HF_HUB_OFFLINE" in message
    assert "save_to_disk('posts_ds')" in message and "load_posts('posts_ds')" in message
    assert isinstance(err.value, InputError)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):  # a missing file is not a hub id
        load_posts("org/posts.jsonl")


def fill_datasets_cache(cache: Path, repo_id: str, splits: dict[str, Dataset], work: Path) -> None:
    """What ``datasets.load_dataset(repo_id)`` leaves in its cache: Arrow files prepared by the Parquet
    builder under ``org___name/default/0.0.0/<hash>/``, named after the dataset (read offline by datasets'
    cache module)."""
    files = {}
    for split, ds in splits.items():
        files[split] = str(work / f"{split}.parquet")
        ds.to_parquet(files[split])
    datasets.load_dataset("parquet", data_files=files, cache_dir=str(work / "build"))
    (built,) = [p for p in (work / "build" / "parquet").glob("*/0.0.0/*") if p.is_dir()]
    org, name = repo_id.split("/")
    target = cache / f"{org}___{name}" / "default" / "0.0.0" / "0123abcd"
    target.mkdir(parents=True)
    for f in built.iterdir():
        (target / f.name.replace("parquet-", f"{name}-")).write_bytes(f.read_bytes())


def test_hub_dataset_id_reads_the_datasets_cache_offline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    ds = research_dataset()
    cache = tmp_path / "cache"
    fill_datasets_cache(cache, "org/posts", {"train": ds, "test": ds.select([2])}, tmp_path)
    expected = load_posts(ds, columns=RESEARCH_COLUMNS)
    got = load_posts("org/posts", split="train", cache_dir=cache, columns=RESEARCH_COLUMNS)
    assert got == expected and isinstance(got[0].image, bytes)
    streamed = load_posts(
        "org/posts", split="test", cache_dir=cache, columns=RESEARCH_COLUMNS, streaming=True
    )
    assert not isinstance(streamed, list) and [p.id for p in streamed] == ["c"]
    with pytest.raises(InputError, match=r"hub dataset 'org/posts' has the splits \['train', 'test'\]"):
        load_posts("org/posts", cache_dir=cache, columns=RESEARCH_COLUMNS)
    with pytest.raises(HubDatasetError, match=r"dataset 'org/posts': .*val"):
        load_posts("org/posts", split="val", cache_dir=cache)


# ------------------------------------------------------------------------------- end to end: train, predict
def _run(posts, val, out: Path) -> Path:
    config = {
        "model": {
            "tasks": "contextbench",
            "encoder": {"arch": "ximgctx-tiny"},
            "fusion": {"kind": "concat", "hidden_dim": 32, "dropout": 0.0},
            "lora": {"r": 2, "alpha": 4.0, "targets": ["attn"]},
        },
        "data": {},
        "train": {
            "output_dir": str(out),
            "batch_size": 8,
            "max_steps": 3,
            "eval_every": 3,
            "save_every": 3,
            "eval_batch_size": 8,
            "progress_bar": False,
            "tensorboard": False,
            "metric_for_best": "intent/accuracy",
            "optim": {"lr": {"lora": 3e-3, "fusion": 3e-3, "heads": 3e-3}},
        },
    }
    return Path(train(config, train_posts=posts, val_posts=val).model_dir)


def _as_dataset(posts) -> Dataset:
    """The posts as a researcher's Dataset: an Image() column of the files' bytes, JSON label/meta columns."""
    return Dataset.from_dict(
        {
            "post_id": [p.id for p in posts],
            "img": [None if p.image is None else Path(p.image).read_bytes() for p in posts],
            "caption": [p.text for p in posts],
            "comments": [[r.to_dict() for r in p.replies] for p in posts],
            "labels": [json.dumps(p.labels) for p in posts],
            "meta": [json.dumps(p.meta) for p in posts],
        }
    ).cast_column("img", Image())


def test_dataset_posts_train_and_predict_like_the_same_jsonl_posts(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    generate(bench, seed=5, n_train=24, n_val=8, n_test=4, n_compositional=4, image_size=32)
    for split in ("train", "val"):
        write_posts(govern(load_posts(bench / f"{split}.jsonl")).posts, bench / f"g_{split}.jsonl")
    jsonl_train, jsonl_val = load_posts(bench / "g_train.jsonl"), load_posts(bench / "g_val.jsonl")
    columns = {"id": "post_id", "image": "img", "text": "caption", "replies": "comments"}
    ds_train = load_posts(_as_dataset(jsonl_train), columns=columns)
    ds_val = load_posts(_as_dataset(jsonl_val), columns=columns)
    assert all(isinstance(p.image, bytes) for p in ds_train if p.image is not None)
    assert [(p.id, p.text, p.replies, p.labels, p.meta) for p in ds_train] == [
        (p.id, p.text, p.replies, p.labels, p.meta) for p in jsonl_train
    ]
    from_dataset = Predictor.from_pretrained(_run(ds_train, ds_val, tmp_path / "a"), device="cpu", dtype=None)
    from_jsonl = Predictor.from_pretrained(
        _run(jsonl_train, jsonl_val, tmp_path / "b"), device="cpu", dtype=None
    )
    test_posts = load_posts(bench / "test.jsonl")
    a = from_dataset.predict(load_posts(_as_dataset(test_posts), columns=columns))
    b = from_jsonl.predict(test_posts)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]  # exactly equal, every score of every task
    assert any(p.inputs["image"] for p in a)
    untrained = tiny_model("concat")
    with torch.no_grad():
        x = untrained(untrained.processor(ds_train, invalid_labels="drop")).logits
        y = untrained(untrained.processor(jsonl_train, invalid_labels="drop")).logits
    assert all(torch.equal(x[t], y[t]) for t in x)


# ------------------------------------------------------------------------------------------- the README
_README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_datasets_snippet_runs(tmp_path: Path, monkeypatch) -> None:
    text = _README.read_text(encoding="utf-8")
    found = re.search(r"^### Hugging Face datasets.*?```python\n(.*?)```", text, re.S | re.M)
    assert found, "README.md has no python block under '### Hugging Face datasets'"
    monkeypatch.chdir(tmp_path)
    tiny_model("concat").save_pretrained(tmp_path / "my-model")
    write_image(tmp_path / "cat.png", (200, 100, 50))
    scope: dict = {}
    exec(compile(found.group(1), "README.md", "exec"), scope)
    assert [p.id for p in scope["posts"]] == ["p1", "p2"] and isinstance(scope["posts"][0].image, bytes)
    assert [p.id for p in scope["predictions"]] == ["p1", "input-1"]
    assert scope["predictions"][0].inputs["image"] and scope["predictions"][1].inputs["image"]
