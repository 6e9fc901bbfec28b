"""``ximgctx.bench.refusals``: each timed path took the branch it names (the refusal's reason, the baseline
succeeding), and the ratios are the medians' quotients (tiny sizes; the times themselves are not asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ximgctx.bench.refusals import refusals

from .._offline import watch_network


def _check_section(section: dict, baseline: str, outcomes: dict[str, str], rounds: int) -> None:
    assert section["rounds"] == rounds and section["baseline"] == baseline
    assert section["outcome"] == {baseline: "ok", **outcomes}
    median = section["median_seconds"]
    assert set(median) == {baseline, *outcomes}
    assert all(math.isfinite(s) and s > 0 for s in median.values()), median
    assert set(section["ratio_to_baseline"]) == set(outcomes)
    for name, ratio in section["ratio_to_baseline"].items():
        assert ratio == pytest.approx(median[name] / median[baseline], rel=2e-3), name


def test_refusals_measures_each_refusal_beside_its_baseline(tmp_path: Path, monkeypatch) -> None:
    network = watch_network(monkeypatch)
    result = refusals(tmp_path, image_rounds=2, offline_rounds=1)
    assert json.loads(json.dumps(result)) == result  # JSON-able as it is
    assert result["benchmark"] == "refusals" and result["environment"]["threads"] >= 1
    assert result["images"]["image_px"] == 64
    _check_section(
        result["images"],
        "decode_small_png",
        {
            "refuse_bomb_header": "too_many_pixels",
            "refuse_over_max_pixels": "too_many_pixels",
            "refuse_huge_file": "too_many_bytes",
        },
        rounds=2,
    )
    _check_section(
        result["offline"],
        "load_local_tiny_model",
        {
            "refuse_model_id": "HubModelError",
            "refuse_pretrained_tag": "PretrainedWeightsError",
            "refuse_dataset_id": "HubDatasetError",
        },
        rounds=1,
    )
    assert network.connects == []  # HF_HUB_OFFLINE held for every offline path
    assert not (tmp_path / "images" / "huge.png").exists()  # the sparse 1 GiB file is removed


def test_rounds_must_be_positive(tmp_path: Path) -> None:
    from ximgctx.bench.refusals import image_refusals

    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        image_refusals(tmp_path, rounds=0)
