"""Moderation policies, decisions at their exact boundaries, explanations, and threshold calibration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ximgctx.cli.inference import main as cli_main
from ximgctx.data.io import write_posts
from ximgctx.inference import ModerationPolicy, Moderator, PolicyError, Predictor, default_policy_path
from ximgctx.inference.calibration import (
    category_truth,
    choose_block_threshold,
    choose_review_threshold,
    operating_point,
)

from .._inference_fixtures import TASKS, bad_posts, make_posts, model_dir


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_pretrained(model_dir(), device="cpu")


@pytest.fixture(scope="module")
def posts() -> list:
    return make_posts(16, seed=2)


def _policy(
    block: float | None, review: float | None, *, labels: tuple[str, ...] = ("threat",)
) -> ModerationPolicy:
    return ModerationPolicy.from_dict(
        {
            "categories": {
                "threat": {"task": "intent", "labels": list(labels), "block": block, "review": review},
            }
        }
    )


# ------------------------------------------------------------------------------------------- policy
def test_shipped_policy_validates_against_the_default_tasks() -> None:
    path = default_policy_path()
    # the documented copy in configs/ is the package's file
    assert path == (Path(__file__).resolve().parents[2] / "configs" / "moderation" / "default.yaml").resolve()
    policy = ModerationPolicy.from_yaml(path)
    policy.check_tasks(TASKS, source=str(path))
    assert policy.categories["threat"].task == "intent" and policy.categories["threat"].labels == ["threat"]
    for rule in policy.categories.values():
        if rule.block is not None and rule.review is not None:
            assert 0 <= rule.review <= rule.block <= 1
    assert path.read_text().startswith("# ximgctx moderate")  # first comment: the command that uses it
    # round trip through YAML keeps every value
    assert ModerationPolicy.from_dict(yaml.safe_load(yaml.safe_dump(policy.to_dict()))) == policy


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"task": "intent", "labels": ["threat"], "block": 1.5},
            "categories.threat.block must be in [0, 1], got 1.5",
        ),
        (
            {"task": "intent", "labels": ["threat"], "block": "high"},
            "categories.threat.block must be a number in [0, 1] or null, got 'high'",
        ),
        (
            {"task": "intent", "labels": ["threat"], "block": 0.4, "review": 0.6},
            "review (0.6) must be <= block (0.4)",
        ),
        ({"task": "intent", "labels": []}, "categories.threat.labels must be a non-empty list"),
        (
            {"task": "intent", "labels": ["threat"], "reduce": "mean"},
            "reduce must be one of ['max', 'sum'], got 'mean'",
        ),
        (
            {"task": "intent", "labels": ["threat"], "blok": 0.9},
            "unknown config keys ['categories.threat.blok']",
        ),
        ({"labels": ["threat"]}, "categories.threat: missing ['task']"),
    ],
)
def test_policy_errors_name_the_field_and_value(rule: dict, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        ModerationPolicy.from_dict({"categories": {"threat": rule}}, source="my_policy.yaml")
    assert str(e.value).startswith("my_policy.yaml: ") and message in str(e.value)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"task": "intnet", "labels": ["threat"]},
            "categories.threat.task is 'intnet', which is not a task of the model",
        ),
        (
            {"task": "intent", "labels": ["threats"]},
            "categories.threat.labels has ['threats'], not labels of task 'intent'",
        ),
        (
            {"task": "intent", "labels": ["threat", "joke"], "reduce": "sum"},
            "reduce is 'sum' but task 'intent' is multilabel",
        ),
    ],
)
def test_policy_checked_against_the_model(predictor: Predictor, rule: dict, message: str) -> None:
    policy = ModerationPolicy.from_dict({"categories": {"threat": rule}})
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Moderator(predictor, policy)


def test_decision_boundaries_are_exact() -> None:
    rule = _policy(0.8, 0.3).categories["threat"]
    assert rule.decide(0.8) == "block"  # score >= block -> block
    assert rule.decide(math.nextafter(0.8, 0.0)) == "review"  # just under block
    assert rule.decide(0.3) == "review"  # review <= score -> review
    assert rule.decide(math.nextafter(0.3, 0.0)) == "allow"  # just under review
    assert rule.decide(1.0) == "block" and rule.decide(0.0) == "allow"
    assert _policy(None, 0.3).categories["threat"].decide(1.0) == "review"  # null block never blocks
    assert _policy(0.8, None).categories["threat"].decide(0.79) == "allow"  # null review: no band
    assert _policy(0.0, None).categories["threat"].decide(0.0) == "block"


def test_moderator_decisions_at_model_score_boundaries(predictor: Predictor, posts: list) -> None:
    """Thresholds set to a post's real score decide exactly as documented, through the whole pipeline."""
    scores = [
        r.category_scores["threat"]
        for r in Moderator(predictor, _policy(None, None), explain="none").moderate(posts)
    ]
    i = int(np.argsort(scores)[len(scores) // 2])  # a post with a middling score
    s = scores[i]
    assert 0.0 < s < 1.0
    up = math.nextafter(s, 1.0)
    cases = [
        (_policy(s, None), "block"),  # score == block
        (_policy(up, s), "review"),  # score == review < block
        (_policy(up, up), "allow"),  # score just under review
        (_policy(1.0, 0.0), "review"),
    ]
    for policy, want in cases:
        results = Moderator(predictor, policy, explain="none").moderate(posts)
        r = results[i]
        assert r.category_scores["threat"] == s
        assert r.decision == want, (policy.categories["threat"], s)
        assert r.flagged == (want == "block") and r.categories["threat"] == (want == "block")
        for other, sc in zip(results, scores, strict=True):  # every post follows the same rule
            rule = policy.categories["threat"]
            assert other.decision == rule.decide(sc)


def test_category_scores_reduce_over_labels(predictor: Predictor, posts: list) -> None:
    preds = predictor.predict(posts)
    policy = ModerationPolicy.from_dict(
        {
            "categories": {
                "any_intent": {"task": "intent", "labels": ["threat", "protest"], "reduce": "max"},
                "non_literal": {"task": "meaning", "labels": ["ironic", "symbolic"], "reduce": "sum"},
            }
        }
    )
    results = Moderator(predictor, policy, explain="none").moderate(posts)
    for r, p in zip(results, preds, strict=True):
        assert r.category_scores["any_intent"] == max(
            p.tasks["intent"].scores["threat"], p.tasks["intent"].scores["protest"]
        )
        assert r.category_scores["non_literal"] == pytest.approx(
            p.tasks["meaning"].scores["ironic"] + p.tasks["meaning"].scores["symbolic"], abs=1e-12
        )
        assert r.decision == "allow" and r.category_decisions == {
            "any_intent": "allow",
            "non_literal": "allow",
        }


# ------------------------------------------------------------------------------------- explanations
def test_explanation_scores_are_real_forward_passes(predictor: Predictor, posts: list) -> None:
    all_posts = posts[:6] + list(bad_posts())
    with pytest.warns(RuntimeWarning):
        results = Moderator(predictor, _policy(0.9, 0.5), explain="all").moderate(
            all_posts, batch_size=len(all_posts)
        )
    model = predictor.model
    with pytest.warns(RuntimeWarning):
        batch = model.processor(all_posts)
    threat = model.config.task("intent").labels.index("threat")
    with torch.no_grad():
        full = model(batch)
        for m in ("image", "text", "replies"):
            want = model.scores(model(batch, drop=(m,)).logits)["intent"][:, threat].numpy()
            got = np.array([r.explanation.scores_without[m]["threat"] for r in results])
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=m)
            assert (
                np.abs(got - [r.category_scores["threat"] for r in results]).max() > 1e-3
            )  # removal matters
    weights = full.reply_weights.numpy()
    for i, (r, post) in enumerate(zip(results, all_posts, strict=True)):
        top = r.explanation.top_replies
        assert len(top) == min(3, int((weights[i] > 0).sum()))
        assert [t["weight"] for t in top] == sorted((t["weight"] for t in top), reverse=True)
        for t in top:
            assert t["text"] == post.replies[t["index"]].text
            assert t["weight"] == pytest.approx(float(weights[i, t["index"]]), abs=1e-7)
        assert r.explanation.reply_weights == "attention"
        assert r.explanation.decisions_without == {
            m: _policy(0.9, 0.5).categories["threat"].decide(r.explanation.scores_without[m]["threat"])
            for m in ("image", "text", "replies")
        }
    assert results[-1].problems == ["replies: capped: 1000 replies, kept the first 8"]
    assert results[-1].category_applied_input_types["threat"] == ["text", "replies"]  # no image on that post


def test_flagged_only_explanations_match_the_full_batch(predictor: Predictor, posts: list) -> None:
    # thresholds from this random model's own scores, so that the batch holds allow, review and block
    threat = np.array([p.tasks["intent"].scores["threat"] for p in predictor.predict(posts)])
    policy = _policy(float(np.quantile(threat, 0.85)), float(np.quantile(threat, 0.4)))
    full = Moderator(predictor, policy, explain="all").moderate(posts)
    flagged = Moderator(predictor, policy, explain="flagged").moderate(posts)
    decisions = [r.decision for r in flagged]
    assert "allow" in decisions and set(decisions) - {"allow"}, decisions  # a mix, or the test proves nothing
    for a, b in zip(full, flagged, strict=True):
        assert a.decision == b.decision
        if b.decision == "allow":
            assert b.explanation is None
        else:
            for m in ("image", "text", "replies"):
                assert b.explanation.scores_without[m]["threat"] == pytest.approx(
                    a.explanation.scores_without[m]["threat"], abs=2e-5
                )
            assert b.explanation.top_replies == a.explanation.top_replies


# -------------------------------------------------------------------------------------- calibration
def _brute(scores: np.ndarray, y: np.ndarray, t: float) -> tuple[float, float, float]:
    flagged = scores >= t
    tp, fp = (flagged & y).sum(), (flagged & ~y).sum()
    return (tp / (tp + fp) if tp + fp else float("nan")), tp / y.sum(), fp / (~y).sum()


def test_threshold_choice_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    scores = np.clip(np.where(y, rng.normal(0.7, 0.15, 400), rng.normal(0.35, 0.15, 400)), 0, 1).round(
        3
    )  # ties
    candidates = np.unique(scores)
    for p in (0.7, 0.85, 0.95):
        point = choose_block_threshold(scores, y, target_precision=p)
        meets = [t for t in candidates if _brute(scores, y, t)[0] >= p]
        assert point.met and point.threshold == min(meets)
        assert point.precision == pytest.approx(_brute(scores, y, point.threshold)[0])
    for f in (0.01, 0.05, 0.2):
        point = choose_block_threshold(scores, y, target_fpr=f)
        assert point.threshold == min(t for t in candidates if _brute(scores, y, t)[2] <= f)
        assert point.fpr <= f
    for r in (0.5, 0.9, 1.0):
        point = choose_review_threshold(scores, y, target_recall=r)
        assert point.threshold == max(t for t in candidates if _brute(scores, y, t)[1] >= r)
        assert point.recall >= r
    unreachable = choose_block_threshold(np.array([0.9, 0.8]), np.array([False, True]), target_precision=1.0)
    assert not unreachable.met and unreachable.threshold is None
    assert operating_point(scores, y, None).flagged == 0


def test_category_truth() -> None:
    meaning, intent = TASKS[1], TASKS[2]
    assert category_truth(None, intent, ["threat"]) is None
    assert category_truth(["joke", "threat"], intent, ["threat"]) is True
    assert category_truth("literal", meaning, ["ironic", "symbolic"]) is False
    assert (
        category_truth({"ironic": 0.3, "symbolic": 0.3, "literal": 0.4}, meaning, ["ironic", "symbolic"])
        is True
    )
    assert category_truth({"threat": 0.4}, intent, ["threat"]) is False


def test_calibrate_cli_writes_a_valid_policy_with_measured_thresholds(
    predictor: Predictor, tmp_path: Path
) -> None:
    val = make_posts(40, seed=3)
    data = tmp_path / "val.jsonl"
    write_posts(val, data)
    out, report = tmp_path / "policy.yaml", tmp_path / "report.json"
    assert (
        cli_main(
            [
                "--model",
                str(model_dir()),
                "--data",
                str(data),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--target-fpr",
                "0.2",
                "--review-recall",
                "0.9",
                "--report",
                str(report),
                "--batch-size",
                "16",
                "--no-progress",
            ],
            command="calibrate",
        )
        == 0
    )
    policy = ModerationPolicy.from_yaml(out)
    policy.check_tasks(TASKS)
    assert out.read_text().startswith("# ximgctx calibrate")
    # the same thresholds, recomputed from the moderator's own category scores on the same posts
    moderator = Moderator(predictor, default_policy_path(), explain="none")
    results = moderator.moderate(val, batch_size=16)
    scores = np.array([r.category_scores["threat"] for r in results])
    y = np.array(["threat" in p.labels["intent"] for p in val])
    block = choose_block_threshold(scores, y, target_fpr=0.2)
    review = choose_review_threshold(scores, y, target_recall=0.9)
    threat = policy.categories["threat"]
    assert threat.block == pytest.approx(block.threshold, abs=2e-6)
    assert threat.review == pytest.approx(min(review.threshold, block.threshold), abs=2e-6)
    assert threat.calibration["block"]["target"] == "fpr<=0.2"
    assert policy.categories["non_literal"].block is None and policy.categories["non_literal"].review is None
    rep = json.loads(report.read_text())
    assert rep["posts"] == 40 and rep["categories"]["threat"]["labeled_posts"] == 40
    assert rep["categories"]["threat"]["final"]["block_fpr"] <= 0.2


def test_moderate_cli(predictor: Predictor, posts: list, tmp_path: Path) -> None:
    data = tmp_path / "posts.jsonl"
    write_posts(posts, data)
    policy = tmp_path / "p.yaml"
    _policy(0.95, 0.5).to_yaml(policy, header="test policy")
    for out in (tmp_path / "m.jsonl", tmp_path / "m.parquet"):
        assert (
            cli_main(
                [
                    "--model",
                    str(model_dir()),
                    "--data",
                    str(data),
                    "--out",
                    str(out),
                    "--policy",
                    str(policy),
                    "--device",
                    "cpu",
                    "--batch-size",
                    "16",
                    "--no-progress",
                ],
                command="moderate",
            )
            == 0
        )
    import pyarrow.parquet as pq

    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    table = pq.read_table(tmp_path / "m.parquet").to_pylist()
    direct = Moderator(predictor, policy).moderate(posts, batch_size=16)
    assert [x["id"] for x in lines] == [p.id for p in posts] == [x["id"] for x in table]
    for line, row, r in zip(lines, table, direct, strict=True):
        assert line == r.to_dict()
        assert set(line) >= {
            "flagged",
            "categories",
            "category_scores",
            "category_applied_input_types",
            "decision",
            "explanation",
        }
        assert row["decision"] == line["decision"] and row["category_scores"] == line["category_scores"]
    with pytest.raises(SystemExit) as missing:  # a missing policy is an argument error
        cli_main(
            [
                "--model",
                str(model_dir()),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "x.jsonl"),
                "--policy",
                str(tmp_path / "nope.yaml"),
                "--device",
                "cpu",
                "--no-progress",
            ],
            command="moderate",
        )
    assert missing.value.code == 2
