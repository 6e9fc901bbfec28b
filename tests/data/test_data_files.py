"""Data files under bounds: Parquet dictionary bombs refused before they expand (peak RSS measured against
a normal shard), corrupt Arrow in a ``save_to_disk`` folder a per-file problem (never SIGBUS), symlinks and
FIFOs refused without hanging, hub ids only where a string cannot be a local path, ``Image()`` paths confined
to the dataset folder."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ximgctx.data.data_files import DataFileError, DataLimits, check_arrow_file, iter_parquet_rows
from ximgctx.data.io import load_posts
from ximgctx.data.record import LoadReport, PostValidationError
from ximgctx.data.shards import read_shards

from .._offline import watch_network

ROOT = Path(__file__).resolve().parents[2]
_MiB = 1 << 20


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (i % 256, i * 7 % 256, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _bomb(path: Path, column: str, value: bytes, rows: int = 64) -> None:
    """``rows`` rows whose ``column`` all point at one dictionary value: a kilobyte or two on disk. The Arrow
    schema is not stored, so a reader sees a plain binary/string column, as any other writer's file."""
    dictionary = pa.array([value.decode()] if column == "text" else [value])
    col = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), dictionary)
    ids = pa.array([f"p{i}" for i in range(rows)])
    pq.write_table(pa.table({"id": ids, column: col}), path, compression="zstd", store_schema=False)


def _normal(path: Path, n: int = 2000) -> None:
    rows = {"id": [f"p{i}" for i in range(n)], "image": [_png(i) for i in range(n)]}
    rows["text"] = [f"post {i} " + "words " * 40 for i in range(n)]
    pq.write_table(pa.table(rows), path, row_group_size=256)


@pytest.mark.parametrize(("column", "size"), [("text", 16 * _MiB), ("image", 30 * _MiB)])
def test_dictionary_bomb_is_refused_naming_the_file_and_column(
    tmp_path: Path, column: str, size: int
) -> None:
    (tmp_path / "s").mkdir()
    path = tmp_path / "s" / "shard-00000.parquet"
    _bomb(path, column, b"a" * size)
    assert path.stat().st_size < 4096
    got = [x for _, _, x in read_shards(tmp_path / "s")]
    assert len(got) == 1 and got[0].shard == "shard-00000.parquet"  # no row read, one problem for the file
    assert got[0].kind == "dictionary_too_large" and f"column '{column}'" in got[0].detail
    assert f"declares {size / _MiB:.1f} MiB uncompressed, over the 8.0 MiB allowed" in got[0].detail
    # the same file as a Parquet manifest (read by pyarrow, not datasets): one problem naming file and column
    report = LoadReport()
    assert load_posts(path, on_error="skip", report=report) == []
    assert len(report.errors) == 1 and str(path) in str(report.errors[0]) and column in str(report.errors[0])


def test_a_small_dictionary_value_repeated_past_the_budget_is_refused_at_its_first_batch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "repeat.parquet"
    _bomb(path, "image", b"\x89PNG" + b"\0" * (2 * _MiB), rows=64)  # under the dictionary page limit
    with pytest.raises(
        DataFileError, match=r"row group 0, column 'image': dictionary values are repeated to 126"
    ):
        next(iter_parquet_rows(path, image_columns=frozenset({"image"})))
    assert len(list(iter_parquet_rows(path, limits=DataLimits(max_repeated_bytes=200 * _MiB)))) == 64


def test_plain_pages_that_expand_from_nothing_are_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "zeros.parquet"
    zeros = pa.array([b"\0" * (16 * _MiB)] * 2)  # two plain pages of 16 MiB that zstd stores in ~1 KB each
    pq.write_table(
        pa.table({"id": ["a", "b"], "image": zeros}), path, compression="zstd", use_dictionary=False
    )
    assert path.stat().st_size < 16 * 1024
    with pytest.raises(
        DataFileError, match=r"row group 0, column 'image': a page of .* declares 32.0 MiB uncompressed"
    ):
        next(iter_parquet_rows(path, image_columns=frozenset({"image"})))


def test_repeated_values_within_budget_still_read(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    _bomb(path, "text", b"the same short caption", rows=500)  # repeated strings are normal
    rows = [r for _, r in iter_parquet_rows(path)]
    assert len(rows) == 500 and rows[-1] == {"id": "p499", "text": "the same short caption"}


def test_budgets_name_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y" * 300, "z"]}), path)
    with pytest.raises(DataFileError, match=r"a.parquet: row group 0, row 1, column 'text': 300 bytes"):
        list(iter_parquet_rows(path, limits=DataLimits(max_value_bytes=200)))
    with pytest.raises(DataFileError, match="row 1: 301 bytes decoded, over the 250 bytes one row"):
        list(iter_parquet_rows(path, limits=DataLimits(max_row_bytes=250)))


_LOAD = """
import json, resource, sys
from ximgctx.data.io import load_posts
from ximgctx.data.record import LoadReport
report = LoadReport()
posts = load_posts(sys.argv[1], on_error="skip", report=report)
print(json.dumps({"posts": len(posts), "errors": [str(e) for e in report.errors],
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _load_in_child(source: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(source)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]  # never a signal (SIGBUS, SIGKILL)
    return json.loads(done.stdout.splitlines()[-1])


def test_peak_rss_of_a_dictionary_bomb_is_within_twice_a_normal_shard(tmp_path: Path) -> None:
    for name in ("normal", "text", "image"):
        (tmp_path / name).mkdir()
    _normal(tmp_path / "normal" / "shard-00000.parquet")
    _bomb(tmp_path / "text" / "shard-00000.parquet", "text", b"t" * (16 * _MiB))
    _bomb(tmp_path / "image" / "shard-00000.parquet", "image", b"\x89PNG" + b"\0" * (30 * _MiB))
    normal = _load_in_child(tmp_path / "normal")
    assert normal["posts"] == 2000 and normal["errors"] == []
    for name in ("text", "image"):
        bomb = _load_in_child(tmp_path / name)
        assert bomb["posts"] == 0 and len(bomb["errors"]) == 1 and "shard-00000.parquet" in bomb["errors"][0]
        assert bomb["rss_kib"] < 2 * normal["rss_kib"], (name, bomb["rss_kib"], normal["rss_kib"])


# ----------------------------------------------------------------------------------------- corrupt Arrow
def _saved(tmp_path: Path, n: int = 50) -> Path:
    ds = datasets.Dataset.from_dict(
        {"id": [f"p{i}" for i in range(n)], "text": [f"post {i}" for i in range(n)]}
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    return tmp_path / "ds"


def _corrupt_offsets(arrow: Path) -> None:
    """Set the last string offset of ``text`` far past its data buffer, in place (as a flipped byte or a
    hostile writer leaves it); the stream's framing stays valid."""
    with pa.OSFile(str(arrow)) as f:
        text = list(pa.ipc.open_stream(f))[-1].column("text")  # the last record batch's
    offsets = text.buffers()[1].to_pybytes()[: 4 * (len(text) + 1)]
    data = arrow.read_bytes()
    assert data.count(offsets) == 1
    at = data.index(offsets) + len(offsets) - 4
    arrow.write_bytes(data[:at] + (1 << 30).to_bytes(4, "little") + data[at + 4 :])


def test_corrupt_arrow_is_a_problem_naming_the_file_not_a_crash(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    (arrow,) = folder.glob("*.arrow")
    _corrupt_offsets(arrow)
    with pytest.raises(DataFileError, match=rf"{arrow.name}: record batch 0 .* is corrupt"):
        check_arrow_file(arrow)
    got = _load_in_child(folder)  # a child process: before the fix, it died of SIGBUS/SIGSEGV here
    assert got["posts"] == 0 and len(got["errors"]) == 1 and str(arrow) in got["errors"][0]
    assert "corrupt" in got["errors"][0]
    with pytest.raises(PostValidationError, match=f"{arrow}: corrupt"):
        load_posts(folder)


def test_arrow_files_are_measured_too(tmp_path: Path) -> None:
    big = pa.array([b"x" * (2 * _MiB)]).dictionary_encode()
    col = pa.DictionaryArray.from_arrays(pa.array([0] * 64, pa.int32()), big.dictionary)
    batch = pa.record_batch({"id": pa.array([f"p{i}" for i in range(64)]), "image": col})
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as f, pa.ipc.new_stream(f, batch.schema) as w:
        w.write_batch(batch)
    with pytest.raises(
        DataFileError, match=r"d.arrow: column 'image': dictionary values are repeated to 126"
    ):
        check_arrow_file(tmp_path / "d.arrow", image_columns=frozenset({"image"}))
    assert check_arrow_file(tmp_path / "d.arrow", limits=DataLimits(max_repeated_bytes=200 * _MiB)) == 64


def test_predict_on_a_corrupt_saved_folder_names_the_file(tmp_path: Path) -> None:
    from tests._inference_fixtures import model_dir

    folder = _saved(tmp_path)
    (arrow,) = folder.glob("*.arrow")
    _corrupt_offsets(arrow)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--model", str(model_dir()), "--data", str(folder), "--out", str(tmp_path / "o.jsonl")]
    args += ["--device", "cpu", "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-m", "ximgctx.cli", "predict", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode >= 0, done.stderr[-2000:]  # exited, not killed by a signal
    assert str(arrow) in done.stderr and "corrupt" in done.stderr


# ----------------------------------------------------------------------------------- symlinks and FIFOs
def test_saved_folder_whose_arrow_file_is_a_symlink_to_another_dataset_is_refused(tmp_path: Path) -> None:
    other = _saved(tmp_path / "other")
    ours = _saved(tmp_path / "ours", n=3)
    (arrow,) = ours.glob("*.arrow")
    arrow.unlink()
    arrow.symlink_to(next(other.glob("*.arrow")))
    with pytest.raises(PostValidationError, match=f"{arrow}: not_a_file: is a symbolic link"):
        load_posts(ours)


class _Alarm:
    def __enter__(self) -> None:
        def fail(*_: object) -> None:
            raise TimeoutError("the load hung on a FIFO")

        self.old = signal.signal(signal.SIGALRM, fail)
        signal.alarm(30)

    def __exit__(self, *_: object) -> None:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".arrow"])
def test_fifo_data_file_is_refused_naming_it_without_hanging(tmp_path: Path, suffix: str) -> None:
    if suffix == ".arrow":
        folder = _saved(tmp_path, n=3)
        (fifo,) = folder.glob("*.arrow")
        fifo.unlink()
    else:
        folder = tmp_path / "posts"
        folder.mkdir()
        fifo = folder / f"a{suffix}"
    os.mkfifo(fifo)
    report = LoadReport()
    with _Alarm():
        assert load_posts(folder, on_error="skip", report=report) == []
    assert len(report.errors) == 1 and f"{fifo}: not_a_file: is a FIFO" in str(report.errors[0])


def test_symlinked_jsonl_in_a_folder_is_refused_but_a_named_file_is_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text('{"id": "secret", "text": "from another dataset"}\n')
    folder = tmp_path / "posts"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"id": "a", "text": "ours"}\n')
    (folder / "b.jsonl").symlink_to(elsewhere)
    report = LoadReport()
    assert [p.id for p in load_posts(folder, on_error="skip", report=report)] == ["a"]
    assert "b.jsonl: not_a_file: is a symbolic link" in str(report.errors[0])
    named = tmp_path / "named.jsonl"
    named.symlink_to(elsewhere)  # a file the user names is read where it lies
    assert [p.id for p in load_posts(named)] == ["secret"]


# ------------------------------------------------------------------------------------------------ hub ids
def test_missing_local_paths_are_not_hub_ids(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    network = watch_network(monkeypatch)
    for missing in ("data/posts", "./x", "posts"):
        with pytest.raises(FileNotFoundError, match=rf"^{missing.lstrip('./')}: no such file or folder"):
            load_posts(missing)
    assert network.connects == []


def test_hub_prefix_is_always_a_hub_id(tmp_path: Path, monkeypatch) -> None:
    from ximgctx.data.hf_datasets import HubDatasetError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubDatasetError, match="'data/posts'"):
        load_posts("hub:data/posts", split="train", cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------------------ Image() paths
def test_image_paths_leaving_the_saved_folder_are_refused_by_default(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    (tmp_path / "ds").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "inside.png")
    ds = datasets.Dataset.from_dict(
        {"id": ["in", "out", "abs"], "image": ["ok.png", "../outside.png", str(tmp_path / "outside.png")]}
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    Image.new("RGB", (8, 8)).save(tmp_path / "ds" / "ok.png")
    (tmp_path / "ds" / "link.png").symlink_to(tmp_path / "outside.png")
    report = LoadReport()
    got = load_posts(tmp_path / "ds", on_error="skip", report=report)
    assert [p.id for p in got] == ["in"] and got[0].image == str(tmp_path / "ds" / "ok.png")
    errors = [str(e) for e in report.errors]
    assert "row 1 field 'image': column 'image' holds the image path '../outside.png'" in errors[0]
    assert "row 2 field 'image'" in errors[1] and "leaves the dataset folder" in errors[1]
    everything = load_posts(tmp_path / "ds", confine_images=False)
    assert [p.image for p in everything][1] == str(tmp_path / "outside.png")
    linked = datasets.Dataset.from_dict({"id": ["l"], "image": ["link.png"]})
    linked.save_to_disk(str(tmp_path / "ds2"))
    (tmp_path / "ds2" / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(PostValidationError, match="leaves the dataset folder"):
        load_posts(tmp_path / "ds2")
