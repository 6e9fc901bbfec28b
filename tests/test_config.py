"""Config dataclasses validate values and keys, naming them."""

from __future__ import annotations

import pytest

from ximgctx.config import ConfigError, ModelConfig, TaskSpec

from .helpers import tiny_config


def test_round_trip() -> None:
    config = tiny_config("cross", cross_rank=4)
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"fusion": {"kind": "gated"}}, "fusion.kind must be one of"),
        ({"fusion": {"hidden_dim": 30, "heads": 4}}, "fusion.heads must divide fusion.hidden_dim=30"),
        ({"fusion": {"hiden_dim": 3}}, "fusion.hiden_dim"),
        ({"lora": {"r": 0}}, "lora.r must be a positive integer, got 0"),
        ({"lora": {"towers": ["audio"]}}, "lora.towers"),
        ({"encoder": {"arch": ""}}, "encoder.arch"),
        ({"limits": {"max_replies": -1}}, "limits.max_replies must be >= 0, got -1"),
        ({"data": {"max_replies": -1}}, "limits.max_replies must be >= 0, got -1"),  # the former key
        ({"data": {}, "limits": {}}, "data is the former name of limits"),
        ({"tasks": []}, "at least one task"),
        (
            {"tasks": [{"name": "a", "labels": ["x", "y"]}, {"name": "a", "labels": ["x", "y"]}]},
            "duplicate task names",
        ),
        ({"fusion": {"layers": "two"}}, "fusion.layers must be int"),
    ],
)
def test_bad_values_named(patch, message) -> None:
    d = tiny_config().to_dict()
    for key, value in patch.items():
        if key == "data":  # the former name of limits: it replaces it
            d.pop("limits")
        d[key] = value if not isinstance(value, dict) else {**(d.get(key) or {}), **value}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ["a"]}, "at least 2 labels"),
        ({"labels": ["a", "a"]}, "duplicate labels"),
        ({"labels": ["a", "b"], "kind": "ranking"}, "kind must be"),
        ({"labels": ["a", "b"], "source": "text"}, "source must be"),
        ({"labels": ["a", "b"], "prompt": "a photo"}, "must contain"),
    ],
)
def test_task_spec_validation(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TaskSpec(name="t", **kwargs)


def test_limits_is_the_input_caps_key_and_data_still_reads() -> None:
    """``ModelConfig.limits`` holds the input caps; configs saved with the former ``data`` key load the
    same."""
    config = tiny_config("cross", cross_rank=4)
    d = config.to_dict()
    assert "limits" in d and "data" not in d
    legacy = {("data" if k == "limits" else k): v for k, v in d.items()}
    assert ModelConfig.from_dict(legacy) == config
    assert config.data is config.limits  # the former attribute name reads the same object
