"""Scorecards: golden values on a model whose heads are set so that every prediction is known, the same card
for the same model, a worse model scoring lower and refused by the gate with its regressions named, and
calibration refit on validation without changing the model.

The tiny model's ``objects`` head reads the image embedding (``source: image``): its ``circle`` row is solved
(least squares) against the model's own image embeddings of the posts, and the null image of posts without
one, so that its logit is +10 or -10 on each post exactly as the test chooses. ``meaning`` and ``intent``
read the fused vector: their weights are zero and their biases decide (a constant prediction).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.helpers import tiny_config, write_image
from ximgctx import ContextModel, Post, Reply
from ximgctx.evaluation import GateRule, Scorecard, gate, score_model, score_model_details
from ximgctx.evaluation.predict import Predictions
from ximgctx.evaluation.scorecard import _category_scores, balanced_accuracy
from ximgctx.models.policy import ModerationPolicy, PolicyError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

POLICY = ModerationPolicy.from_dict(
    {
        "name": "test",
        "flag_on": "block",
        "categories": {
            "round": {"task": "objects", "labels": ["circle"], "block": 0.9, "review": 0.5},
            "threat": {"task": "intent", "labels": ["threat"], "block": 0.9, "review": 0.5},
            "non_literal": {
                "task": "meaning",
                "labels": ["ironic", "symbolic"],
                "reduce": "sum",
                "block": None,
                "review": 0.5,
            },
            "note": {"task": "meaning", "labels": ["ironic"], "block": None, "review": None},
        },
    }
)

#: id -> (has image, labels); circle is the truth of the image task
LABELS: dict[str, tuple[bool, dict]] = {
    "a": (True, {"objects": ["circle"], "meaning": "literal", "intent": ["threat"]}),
    "b": (True, {"objects": ["circle"], "meaning": "ironic", "intent": ["threat", "joke"]}),
    "c": (True, {"objects": [], "meaning": "literal", "intent": ["joke"]}),
    "d": (True, {"objects": ["square"], "intent": ["threat"]}),
    "e": (True, {}),
    "f": (False, {"objects": ["circle"], "meaning": "symbolic", "intent": ["threat"]}),
    "g": (False, {"objects": [], "meaning": {"literal": 0.8, "ironic": 0.2}}),
}
#: the circle decision the serving model's head is set to make on each post (the null image: "f" and "g")
SERVING = {
    "a": True,
    "b": False,
    "c": False,
    "d": True,
    "e": True,
    "f": True,
    "g": True,
}  # f, g: one null image
GOLD = {"a", "c", "f"}  # gold items: a subset with known labels
NEW = {"b", "d"}  # the round's held-out new labels

_COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


@pytest.fixture(scope="module")
def posts(tmp_path_factory: pytest.TempPathFactory) -> list[Post]:
    root = tmp_path_factory.mktemp("scorecard")
    out, colors = [], iter(_COLORS)
    for pid, (has_image, labels) in LABELS.items():
        image = write_image(root / f"{pid}.png", next(colors)) if has_image else None
        out.append(Post(pid, image, f"post {pid}", [Reply("ok")], labels))
    return out


def _base() -> ContextModel:
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg = replace(cfg, fusion=replace(cfg.fusion, dropout=0.3, modality_dropout=0.3))  # eval mode matters
    return ContextModel(cfg)


@torch.no_grad()
def set_heads(model: ContextModel, posts: list[Post], circle: dict[str, bool], threat: bool = True) -> None:
    """Heads that predict exactly what the test says (see the module docstring)."""
    batch = model.processor(posts)
    model.eval()
    images = model.encode(batch).image  # (N, D): unit-norm embeddings, the null image where there is none
    target = torch.tensor([10.0 if circle[p.id] else -10.0 for p in posts])
    solution = torch.linalg.lstsq(torch.cat([images, torch.ones(len(posts), 1)], 1), target[:, None]).solution
    objects = model.heads["objects"].linear
    objects.weight.zero_()
    objects.bias.fill_(-10.0)
    objects.weight[0] = solution[:-1, 0]  # circle
    objects.bias[0] = solution[-1, 0]
    meaning = model.heads["meaning"].linear  # literal always: p(ironic) + p(symbolic) = 2 / (e^2 + 2) < 0.5
    meaning.weight.zero_()
    meaning.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))
    intent = model.heads["intent"].linear  # {threat} always (or nothing)
    intent.weight.zero_()
    intent.bias.copy_(torch.tensor([-5.0, -5.0, 5.0 if threat else -5.0, -5.0]))
    check = model(batch).logits["objects"][:, 0]
    assert [bool(v > 5) for v in check] == [circle[p.id] for p in posts]  # the construction holds
    assert bool((check.abs() > 5).all())
    model.train()


@pytest.fixture(scope="module")
def serving(posts: list[Post]) -> ContextModel:
    model = _base()
    set_heads(model, posts, SERVING)
    return model


def test_golden_values_on_a_model_whose_predictions_are_known(
    serving: ContextModel, posts: list[Post]
) -> None:
    gold = [p for p in posts if p.id in GOLD]
    new = [p for p in posts if p.id in NEW]
    card, details = score_model_details(serving, posts, gold=gold, new_labels=new, policy=POLICY)
    # objects (exact match, posts a, b, c, d, f, g): predicted {circle} on a, d, f, g -> a, c, f right = 3/6
    # meaning (literal always; a, b, c, f, g labeled; g's soft label reads as literal): a, c, g = 3/5
    # intent ({threat} always; a, b, c, d, f labeled): a, d, f = 3/5
    assert card.tasks == pytest.approx({"objects": 3 / 6, "meaning": 3 / 5, "intent": 3 / 5})
    assert {t: e["n"] for t, e in details["tasks"].items()} == {"objects": 6, "meaning": 5, "intent": 5}
    assert card.mean == pytest.approx((3 / 6 + 3 / 5 + 3 / 5) / 3)
    # round (image task: f and g have no image and are left out; e is unlabeled): a, b, c, d
    #   truth a, b; actioned a, d -> recall on positives 1/2, on negatives (c, d) 1/2 -> 0.5
    # threat (always actioned): positives a, b, d, f -> 1; negatives c -> 0 -> 0.5
    # non_literal (never blocks: scored at its review threshold, never reached): positives b, f -> 0;
    #   negatives a, c, g -> 1 -> 0.5
    assert card.categories == pytest.approx({"round": 0.5, "threat": 0.5, "non_literal": 0.5})
    assert details["categories"]["round"] | {"value": None} == {
        "threshold": 0.9,
        "actioned_at": "block",
        "n": 4,
        "positives": 2,
        "actioned": 2,
        "true_positives": 1,
        "true_negatives": 1,
        "value": None,
    }
    assert details["categories"]["non_literal"]["actioned_at"] == "review"
    assert details["categories"]["note"]["value"] is None and "note" not in card.categories
    # gold a, c, f: objects a, c, f right = 1; meaning a, c right, f wrong = 2/3; intent a, f right, c wrong
    assert card.gold == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # new labels b, d: objects b wrong, d ({square} vs {circle}) wrong = 0; meaning b wrong = 0; intent
    # b wrong, d right = 1/2
    assert card.new_labels == pytest.approx((0 + 0 + 1 / 2) / 3)
    assert card.posts == len(posts) == details["posts"]


def test_category_balanced_accuracy_on_hand_made_scores(serving: ContextModel) -> None:
    """The category rule alone: per-post logits chosen by hand, the policy's thresholds, image abstention."""
    n = 6
    threat_logit = torch.tensor([3.0, 1.0, -3.0, 0.5, 3.0, -1.0])  # sigmoid: .95 .73 .05 .62 .95 .27
    intent = torch.full((n, 4), -5.0)
    intent[:, 2] = threat_logit
    meaning = torch.tensor([[0.0, 1.0, 1.0]] * 3 + [[3.0, 0.0, 0.0]] * 3)  # ironic+symbolic .84 / .09
    objects = torch.full((n, 3), -5.0)
    objects[:, 0] = torch.tensor([5.0, 5.0, -5.0, -5.0, 5.0, 5.0])
    preds = Predictions(
        index=torch.arange(n),
        logits={"objects": objects, "meaning": meaning, "intent": intent},
        targets={},
        label_mask={},
        image_mask=torch.tensor([True, True, True, True, False, False]),
    )
    truths = [True, True, False, False, True, None]  # threat truth; post 5 not labeled for intent
    rows = []
    for i, y in enumerate(truths):
        labels: dict = {
            "objects": ["circle"] if i % 2 == 0 else [],
            "meaning": "ironic" if i < 2 else "literal",
        }
        if y is not None:
            labels["intent"] = ["threat"] if y else ["joke"]
        rows.append(Post(f"h{i}", None, "x", [], labels))
    flag_block = _category_scores(serving, preds, rows, POLICY)
    # threat at block 0.9: actioned 0, 4; truth 0, 1, 4 (5 is unlabeled) -> TP 0, 4 (2/3), TN 2, 3 (2/2)
    assert flag_block["threat"]["value"] == pytest.approx((2 / 3 + 1) / 2)
    assert (flag_block["threat"]["n"], flag_block["threat"]["true_positives"]) == (5, 2)
    # round: posts 4 and 5 have no image (the image task abstains); truth circle on 0, 2; actioned 0, 1
    assert flag_block["round"]["n"] == 4
    assert flag_block["round"]["value"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # non_literal at review 0.5: actioned 0, 1, 2; truth ironic on 0, 1 -> TP 2/2, TN 3, 4, 5 of 2..5 = 3/4
    assert flag_block["non_literal"]["value"] == pytest.approx((1 + 3 / 4) / 2)
    # flag_on: review -> threat is actioned at its review threshold 0.5: 0, 1, 3, 4 -> TP 3/3, TN 2 only: 1/2
    review = ModerationPolicy.from_dict({**POLICY.to_dict(), "flag_on": "review"})
    assert _category_scores(serving, preds, rows, review)["threat"]["value"] == pytest.approx((1 + 1 / 2) / 2)
    # scikit-learn's definition with one truth only: the recall on it
    assert balanced_accuracy(np.array([True, True]), np.array([True, False])) == 0.5


def test_the_same_model_gives_the_same_card_and_is_left_as_it_was(
    serving: ContextModel, posts: list[Post]
) -> None:
    before = {k: v.clone() for k, v in serving.state_dict().items()}
    serving.train()
    first = score_model(serving, posts, val_posts=posts[:5], gold=posts[:3], policy=POLICY)
    second = score_model(serving, posts, val_posts=posts[:5], gold=posts[:3], policy=POLICY)
    assert first.to_dict() == second.to_dict()
    assert serving.training  # its mode is restored
    after = serving.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # calibration restored too
    assert Scorecard.from_dict(first.to_dict()).to_dict() == first.to_dict()
    v = gate(first, second)
    assert not v.promote and v.regressions == {} and v.gain == 0.0


def test_calibration_is_refit_on_validation_and_kept_only_when_asked(
    serving: ContextModel, posts: list[Post]
) -> None:
    model = copy.deepcopy(serving)
    _, details = score_model_details(model, posts, val_posts=posts, policy=POLICY)
    fit = details["calibration"]
    assert set(fit) == {"objects", "meaning", "intent"} and fit["meaning"]["temperature"] != 1.0
    assert float(model.heads["meaning"].temperature) == 1.0  # restored
    score_model(model, posts, val_posts=posts, policy=POLICY, keep_calibration=True)
    assert float(model.heads["meaning"].temperature) == pytest.approx(fit["meaning"]["temperature"])


def test_a_worse_model_scores_lower_and_the_gate_refuses_naming_its_regressions(
    serving: ContextModel, posts: list[Post]
) -> None:
    worse = copy.deepcopy(serving)
    flipped = {pid: not v for pid, v in SERVING.items()}
    set_heads(worse, posts, flipped, threat=False)
    old = score_model(serving, posts, gold=[p for p in posts if p.id in GOLD], policy=POLICY)
    new = score_model(worse, posts, gold=[p for p in posts if p.id in GOLD], policy=POLICY)
    # objects: {circle} on b, c only -> right on b and g = 2/6; intent: {} is right on none
    assert new.tasks["objects"] < old.tasks["objects"] and new.tasks["intent"] < old.tasks["intent"]
    assert new.tasks == pytest.approx({"objects": 2 / 6, "meaning": 3 / 5, "intent": 0.0})
    assert new.categories["round"] == pytest.approx(0.5)  # actioned b, c: TP b, TN d -> (1/2 + 1/2) / 2
    verdict = gate(old, new, GateRule(tolerance=0.01))
    assert not verdict.promote
    assert {"task:objects", "task:intent", "gold"} <= set(verdict.regressions)
    assert any(r.startswith("task:objects regressed") for r in verdict.reasons)
    # and the other way round the serving model would be promoted over the worse one
    assert gate(new, old, GateRule(tolerance=0.01)).promote


def test_a_policy_that_does_not_fit_is_an_error_and_the_default_is_used_when_it_fits(
    serving: ContextModel, posts: list[Post]
) -> None:
    other = ModerationPolicy.from_dict({"categories": {"x": {"task": "nope", "labels": ["a"], "block": 0.5}}})
    with pytest.raises(PolicyError, match="nope"):
        score_model(serving, posts, policy=other)
    card, details = score_model_details(serving, posts)  # the shipped default: threat and non_literal
    assert details["policy"] == "default" and set(card.categories) == {"threat"}
    assert details["categories"]["non_literal"]["value"] is None  # no thresholds: never acts
    assert card.categories["threat"] == pytest.approx(0.5)
