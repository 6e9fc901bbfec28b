"""The promotion gate: golden verdicts on hand-made scorecards."""

import math

import pytest

from ximgctx.errors import ConfigError
from ximgctx.evaluation.gate import GateRule, Scorecard, gate


def card(intent=0.80, meaning=0.70, threat=0.90, gold=1.0, new=None):
    return Scorecard(
        tasks={"intent": intent, "meaning": meaning}, categories={"threat": threat}, gold=gold, new_labels=new
    )


def test_improvement_without_regression_is_promoted():
    v = gate(card(), card(intent=0.84), GateRule(tolerance=0.01))
    assert v.promote
    assert v.gain == pytest.approx(0.02)  # mean over two tasks: +0.04 / 2
    assert v.regressions == {}
    assert v.reasons[0].startswith("mean improved")


def test_a_category_regression_beyond_tolerance_refuses_even_with_a_gain():
    v = gate(card(), card(intent=0.95, threat=0.85), GateRule(tolerance=0.01))
    assert not v.promote
    assert v.regressions == {"category:threat": pytest.approx(0.05)}
    assert any("category:threat regressed" in r for r in v.reasons)


def test_a_drop_within_tolerance_is_allowed():
    v = gate(card(), card(intent=0.90, meaning=0.695), GateRule(tolerance=0.01))
    assert v.promote and v.regressions == {}


def test_gold_regression_refuses():
    v = gate(card(), card(intent=0.9, gold=0.5), GateRule(tolerance=0.1))
    assert not v.promote and v.regressions == {"gold": pytest.approx(0.5)}


def test_no_gain_refuses_and_says_why():
    v = gate(card(), card(intent=0.79), GateRule(tolerance=0.05))
    assert not v.promote and v.gain == pytest.approx(-0.005)
    assert "did not improve" in v.reasons[-1]


def test_a_tie_on_the_holdout_promotes_on_better_new_label_accuracy():
    assert gate(card(new=0.5), card(new=0.8)).promote
    assert not gate(card(new=0.8), card(new=0.8)).promote
    assert not gate(card(), card()).promote  # no new labels held out: nothing improved


def test_min_gain_and_named_metric():
    rule = GateRule(metric="task:meaning", min_gain=0.05)
    assert not gate(card(), card(meaning=0.74), rule).promote
    assert gate(card(), card(meaning=0.76), rule).promote
    assert gate(card(), card(threat=0.95), GateRule(metric="category:threat")).promote


def test_a_missing_score_on_the_candidate_is_a_regression():
    cand = Scorecard(tasks={"intent": 0.99}, categories={"threat": 0.99}, gold=1.0)
    v = gate(card(), cand)
    assert not v.promote and math.isinf(v.regressions["task:meaning"])


def test_round_trip_and_bad_rules():
    c = card(new=0.3)
    assert Scorecard.from_dict(c.to_dict()) == c
    assert c.to_dict()["mean"] == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="gate.metric"):
        GateRule(metric="accuracy")
    with pytest.raises(ConfigError, match="gate.tolerance"):
        GateRule(tolerance=-1)
    with pytest.raises(ConfigError, match="gate.min_gain"):
        GateRule(min_gain=float("nan"))


def test_a_drop_of_exactly_the_tolerance_passes_despite_float_rounding():
    assert 0.315 - 0.305 > 0.01  # what binary floats make of it
    v = gate(card(gold=0.315), card(intent=0.9, gold=0.305), GateRule(tolerance=0.01))
    assert v.promote and v.regressions == {}
    assert not gate(card(gold=0.315), card(intent=0.9, gold=0.3049), GateRule(tolerance=0.01)).promote
