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
        ({"data": {"max_replies": 1}}, "unknown config keys ['data']"),  # the former name of limits
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


def test_limits_is_the_one_name_of_the_input_caps() -> None:
    """``ModelConfig.limits`` holds the input caps; the former name ``data`` is gone as a key and as an
    attribute (removed in 0.2.0)."""
    config = tiny_config("cross", cross_rank=4)
    d = config.to_dict()
    assert "limits" in d and "data" not in d
    assert ModelConfig.from_dict(d).limits == config.limits
    assert not hasattr(config, "data")
