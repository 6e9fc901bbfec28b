"""LoopConfig: read from YAML with paths resolved against the file's folder, flags on top, bad values
named."""

from __future__ import annotations

import pytest

from ximgctx.errors import ConfigError, InputError
from ximgctx.evaluation.gate import GateRule
from ximgctx.loop import LoopConfig, load_loop_config


def test_yaml_paths_resolve_against_the_file(tmp_path):
    path = tmp_path / "conf" / "loop.yaml"
    path.parent.mkdir()
    path.write_text(
        "loop_db: loop.sqlite\nregistry_root: reg\nexperiment: exp.yaml\nholdout: /data/holdout.jsonl\n"
        "replay: [old.jsonl, /abs/shards]\nmin_new_labels: 5\n"
        "gate: {metric: 'task:meaning', tolerance: 0.02}\n"
    )
    config = load_loop_config(path, min_new_labels=7, registry_root=None)
    assert config.loop_db == str(path.parent / "loop.sqlite")
    assert config.registry_root == str(path.parent / "reg")
    assert config.experiment == str(path.parent / "exp.yaml")
    assert config.holdout == "/data/holdout.jsonl"
    assert config.replay == [str(path.parent / "old.jsonl"), "/abs/shards"]
    assert config.min_new_labels == 7  # a given value wins; None is not given
    assert config.gate == GateRule(metric="task:meaning", tolerance=0.02)
    url = load_loop_config({"loop_db": "postgresql://u@h/db"})
    assert url.loop_db == "postgresql://u@h/db"


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"val_fraction": 1.0}, "val_fraction must be a number in"),
        ({"val_fraction": 0.5, "heldout_fraction": 0.5}, "must leave labels to train on"),
        ({"min_new_labels": -1}, "min_new_labels must be an integer"),
        ({"round_lease_s": 0}, "round_lease_s must be positive"),
        ({"gate": {"metric": "accuracy"}}, "gate.metric must be"),
        ({"surprise": 1}, "unknown config keys"),
    ],
)
def test_bad_values_are_named(given, match):
    with pytest.raises(ConfigError, match=match):
        load_loop_config(given)


def test_require_names_what_is_missing():
    with pytest.raises(ConfigError, match="needs registry_root, holdout"):
        LoopConfig(experiment="x.yaml").require("registry_root", "experiment", "holdout")


def test_a_round_needs_a_promoted_version(tmp_path):
    from ximgctx.loop import run_round
    from ximgctx.queue.rounds import Rounds

    from .._queue_fixtures import make_store

    store = make_store(str(tmp_path / "q.sqlite"))
    config = LoopConfig(registry_root=str(tmp_path / "reg"), experiment="e.yaml", holdout="h.jsonl")
    with pytest.raises(InputError, match="adopt the served model first"):
        run_round(config, who="loop", store=store)
    assert Rounds(store).last() == []  # refused before taking the lock: no round row
    store.close()
