"""``ximgctx bench dataloader``: the JSON it writes, and the memory bound of streaming shards (small
sizes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ximgctx.bench.dataloader import generate, stream_rss_in_process
from ximgctx.bench.streaming import _reset_peak
from ximgctx.cli.bench import main as bench_main


def test_bench_dataloader_quick_writes_json_with_the_fields(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert bench_main(["dataloader", "--quick", "--arch", "ximgctx-tiny", "--out", str(out)]) == 0
    capsys.readouterr()
    r = json.loads(out.read_text())
    assert r["benchmark"] == "dataloader" and r["arch"] == "ximgctx-tiny" and r["quick"] is True
    assert [p["workers"] for p in r["pipeline"]] == [0, 1, 2]
    for p in r["pipeline"]:
        assert p["posts"] >= 64 and p["posts_per_s"] > 0 and p["posts_with_problems"] == 0
    assert (
        r["step"]["device"] == "cpu"
        and r["step"]["posts_per_s"] > 0
        and 0 < r["step"]["trainable_parameters"] < r["step"]["parameters"]
    )
    assert set(r["ratio_pipeline_to_step"]) == {"0", "1", "2"}
    assert r["ratio_pipeline_to_step"]["0"] == pytest.approx(
        r["pipeline"][0]["posts_per_s"] / r["step"]["posts_per_s"], rel=0.01
    )
    assert r["bottleneck"] in ("data pipeline", "model step")
    assert r["stages"]["posts"] == 64 and set(r["stages"]["posts_per_s"]) == {
        "read",
        "decode",
        "resize_normalize",
        "tokenize",
    }
    assert sum(r["stages"]["share_of_time"].values()) == pytest.approx(1.0, abs=0.01)
    assert sorted(r["memory"], key=int) == ["1000", "2000"]
    assert all(m["posts"] == int(n) for n, m in r["memory"].items())
    assert r["generated"]["posts"] == 2000 and r["generated"]["shards"] == 4


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _reset_peak(), reason="needs a resettable VmHWM"
)
@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_streaming_shards_keeps_memory_flat(tmp_path: Path, fmt: str) -> None:
    """Streaming 20k posts (one shard) peaks within 1.5x the RSS of streaming 2k, and grows by < 5 MiB more.

    Holding the 18k extra posts (text, replies, labels, meta and an image each) would take tens of MiB;
    tarfile's list of every header read, which the reader clears, took 12.5 MiB more (measured).
    """
    generate(tmp_path / "s", 20_000, posts_per_shard=20_000, image_px=16, fmt=fmt)
    small = stream_rss_in_process(tmp_path / "s", 2_000)
    large = stream_rss_in_process(tmp_path / "s", 20_000)
    assert (small["posts"], large["posts"]) == (2_000, 20_000)
    assert large["peak_rss_mib"] <= 1.5 * small["peak_rss_mib"]
    assert large["peak_growth_mib"] - small["peak_growth_mib"] < 5.0, (small, large)
