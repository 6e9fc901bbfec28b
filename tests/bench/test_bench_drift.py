"""The drift simulation (``ximgctx bench drift``), very small: deterministic, the no-loop arm never changes,
the gate alone decides promotions, and a refused round leaves the serving model as it was."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ximgctx.bench.drift import DriftConfig, is_template, simulate_drift
from ximgctx.cli import main as cli_main
from ximgctx.errors import ConfigError
from ximgctx.evaluation.gate import GateRule, Scorecard, gate

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = DriftConfig(
    seed=2,
    n_train=60,
    n_old_holdout=40,
    n_new_holdout=30,
    n_gold=10,
    n_traffic=120,
    share_start=0.2,
    share_end=0.8,
    rounds=3,
    labels_per_round=30,
    labelers=6,
    replay_size=20,
    epochs=2,
    initial_epochs=2,
    hidden_dim=32,
    fusion_layers=1,
    image_size=32,
)
FLAGS = {
    "--seed": "2", "--n-train": "60", "--n-old-holdout": "40", "--n-new-holdout": "30", "--n-gold": "10",
    "--n-traffic": "120", "--share-start": "0.2", "--share-end": "0.8", "--rounds": "3",
    "--labels-per-round": "30", "--labelers": "6", "--replay-size": "20", "--epochs": "2",
    "--initial-epochs": "2",
    "--hidden-dim": "32", "--fusion-layers": "1", "--image-size": "32",
}  # fmt: skip


def _stable(report: dict[str, Any]) -> dict[str, Any]:
    """Everything but wall times (and where the CLI wrote its files)."""
    keep = ("config", "gate_rule", "template", "loop", "no_loop", "summary", "metric")
    return json.loads(json.dumps({k: report[k] for k in keep}))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("drift")
    return simulate_drift(replace(SMALL, workdir=str(work)))


def test_same_seed_same_report_and_the_cli_writes_json_and_plot(
    report: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "drift.json"
    args = [x for kv in FLAGS.items() for x in kv]
    assert cli_main(["bench", "drift", *args, "--workdir", str(tmp_path / "w"), "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["benchmark"] == "drift"
    mine = _stable(report)
    mine["config"]["workdir"] = again["config"]["workdir"]
    assert _stable(again) == mine
    assert (tmp_path / "drift.png").stat().st_size > 1000


def test_no_loop_arm_never_changes_the_model(report: dict[str, Any]) -> None:
    start = report["loop"][0]
    assert (
        [p["labels"] for p in report["loop"]] == [p["labels"] for p in report["no_loop"]] == [0, 30, 60, 90]
    )
    for p in report["no_loop"]:
        assert p["serving"] == start["serving"]
        assert p["new"] == start["new"] and p["old"] == start["old"]


def test_promotions_are_the_gates_verdicts(report: dict[str, Any]) -> None:
    rule = GateRule(**report["gate_rule"])
    previous = report["loop"][0]["serving"]
    for p in report["loop"][1:]:
        cards = p["scorecards"]
        verdict = gate(Scorecard.from_dict(cards["serving"]), Scorecard.from_dict(cards["candidate"]), rule)
        assert verdict.promote == p["verdict"]["promote"]
        assert verdict.reasons == p["verdict"]["reasons"]
        if verdict.promote:
            assert p["serving"] == p["candidate"]["digest"] != previous
            assert p["new"] == p["candidate"]["new"] and p["old"] == p["candidate"]["old"]
        else:
            assert p["serving"] == previous
        previous = p["serving"]
    # the gate's cards hold the per-template accuracies the report shows
    first = report["loop"][1]["scorecards"]["serving"]
    assert first["categories"]["old/intent"] == report["loop"][0]["old"]["intent"]
    assert first["categories"]["new/intent"] == report["loop"][0]["new"]["intent"]


def test_a_refused_round_leaves_serving_unchanged(tmp_path: Path) -> None:
    refused = simulate_drift(replace(SMALL, workdir=str(tmp_path), gate_min_gain=1.0, n_gold=0))
    start = refused["loop"][0]
    assert refused["loop"][1]["scorecards"]["serving"]["gold"] is None  # no gold items, no gold score
    for p, q in zip(refused["loop"][1:], refused["no_loop"][1:], strict=True):
        assert p["verdict"]["promote"] is False
        assert any("did not improve" in r for r in p["verdict"]["reasons"])
        assert p["candidate"]["digest"] != start["serving"]  # a candidate was trained ...
        assert p["serving"] == start["serving"]  # ... and not served
        assert p["new"] == q["new"] and p["old"] == q["old"] and p["traffic"] == q["traffic"]
    assert refused["summary"]["promoted_rounds"] == [] and refused["summary"]["refused_rounds"] == [1, 2, 3]


def test_traffic_and_holdout_carry_the_new_template(report: dict[str, Any]) -> None:
    from ximgctx.bench.drift import _posts

    config = SMALL
    new = _posts(config, "val", range(5), lambda i: 1.0)
    old = _posts(config, "test", range(5), lambda i: 0.0)
    assert all(
        is_template(p) and "🪿" in (p.text or "") and p.labels["intent"] == ["threat", "meme"] for p in new
    )
    assert not any(is_template(p) or "🪿" in (p.text or "") for p in old)
    # the traffic's template share grows: the last round sees more of it than the first
    counts = [p["traffic_new_template"] for p in report["loop"][1:]]
    assert counts[-1] > counts[0]
    assert sum(counts) <= config.n_traffic
    # the template's ceiling: the symbol decides intent
    assert report["template"]["ceiling"]["intent"] == 1.0 == report["template"]["ceiling_on_sample"]["intent"]


def test_serving_replay_targets_keep_the_serving_models_answers(tmp_path: Path) -> None:
    """Replay towards the serving model's own answers (distillation) keeps the candidate serving what the
    serving model serves, on the replayed posts and on the old-template holdout, far more than replay towards
    the posts' ground truth does (here 98-100% against 35-57%)."""
    assert SMALL.replay_targets == "serving"  # the default
    longer = replace(SMALL, epochs=10, replay_size=60, workdir=str(tmp_path))
    kept = simulate_drift(longer)
    moved = simulate_drift(replace(longer, replay_targets="labels"))
    # the same start: only the replay targets differ
    assert kept["loop"][0]["serving"] == moved["loop"][0]["serving"]

    def agreement(rep: dict[str, Any], part: str) -> list[float]:
        return [p["candidate"]["agrees_with_serving"][part] for p in rep["loop"][1:]]

    for part in ("replay", "old_holdout"):
        a, b = agreement(kept, part), agreement(moved, part)
        assert all(0.0 <= x <= 1.0 for x in a + b)
        assert min(a) >= 0.9, (part, a)
        assert sum(a) / len(a) > sum(b) / len(b) + 0.2, (part, a, b)
    with pytest.raises(ConfigError, match="replay_targets"):
        DriftConfig(replay_targets="truth")
