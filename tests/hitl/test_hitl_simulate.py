"""The simulated labeling loop, very small, and the labeling-loop notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ximgctx.cli.hitl import main as hitl_main
from ximgctx.hitl import SimulationConfig, simulate_labeling

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


ROOT = Path(__file__).resolve().parents[2]


def test_simulated_loop_writes_the_curve(tmp_path: Path) -> None:
    config = SimulationConfig(
        out_dir=str(tmp_path / "sim"),
        rounds=2,
        per_round=8,
        labelers=5,
        votes_per_post=3,
        strategies=["random", "entropy", "diverse"],
        tasks=["meaning"],
        n_pool=40,
        n_test=16,
        epochs=2,
        pretrain_epochs=0,
        hidden_dim=32,
        fusion_layers=1,
        seed=3,
    )
    curve = simulate_labeling(config)
    assert set(curve["strategies"]) == {"random", "entropy", "diverse"}
    for points in curve["strategies"].values():
        assert [p["round"] for p in points] == [0, 1]
        assert [p["posts"] for p in points] == [8, 16]  # distinct posts: nothing is labeled twice
        assert [p["labels"] for p in points] == [24, 48]  # 3 votes per post
        assert all(0.0 <= p["accuracy"] <= 1.0 and 0.0 <= p["label_accuracy"] <= 1.0 for p in points)
    # round 0 is the same random batch, from the same model, for every strategy
    first = {name: points[0]["accuracy"] for name, points in curve["strategies"].items()}
    assert len(set(first.values())) == 1, first
    saved = json.loads((tmp_path / "sim" / "curve.json").read_text())
    assert saved["strategies"] == json.loads(json.dumps(curve["strategies"]))
    assert (tmp_path / "sim" / "curve.png").stat().st_size > 1000
    assert saved["governance"]["pool"]["kept"] == 40

    # the CLI reuses the generated data and the cached features
    rc = hitl_main(
        [
            "--out",
            str(tmp_path / "sim"),
            "--rounds",
            "1",
            "--per-round",
            "4",
            "--labelers",
            "4",
            "--strategies",
            "margin",
            "--n-pool",
            "40",
            "--n-test",
            "16",
            "--epochs",
            "1",
            "--pretrain-epochs",
            "0",
            "--method",
            "majority",
            "--seed",
            "3",
        ],
        command="simulate-labeling",
    )
    assert rc == 0
    assert set(json.loads((tmp_path / "sim" / "curve.json").read_text())["strategies"]) == {"margin"}


# notebooks/labeling_loop.ipynb is executed by tests/test_notebooks.py with every other notebook
