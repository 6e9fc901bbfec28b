"""Abstaining without evidence: image-sourced tasks, unusable inputs in moderation, and the shared rules
(fusion registry, label decision, batch selection) that inference reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ximgctx import Post
from ximgctx.evaluation import drop_for, metrics
from ximgctx.inference import ModerationPolicy, Moderator, Predictor
from ximgctx.models import decision
from ximgctx.models.fusion import FUSIONS
from ximgctx.models.modalities import ALL, Modalities

from .._inference_fixtures import bad_posts, make_posts, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

NO_USABLE_IMAGE = {"corrupt-image", "missing-image", "thousand-replies"}  # bad_posts(): no decodable image


@pytest.fixture(scope="module")
def eager() -> Predictor:
    """A model whose objects head would name every label of every post (thresholds 0)."""
    model = tiny_model(0)
    with torch.no_grad():
        model.heads["objects"].thresholds.fill_(0.0)
    return Predictor(model, device="cpu")


def test_image_task_abstains_without_a_usable_image(eager: Predictor) -> None:
    preds = {p.id: p for p in eager.predict(bad_posts())}
    for pid, p in preds.items():
        objects = p.tasks["objects"]
        if pid in NO_USABLE_IMAGE:
            assert objects.labels == [] and objects.abstained, pid
            assert not p.inputs["image"]
            assert p.to_dict()["tasks"]["objects"]["abstained"] == objects.abstained
        else:  # thresholds 0: a post with an image gets every label
            assert objects.labels == ["circle", "square", "star"] and objects.abstained is None, pid
        # fused-sourced tasks still predict on every post
        assert p.tasks["meaning"].abstained is None and len(p.tasks["meaning"].labels) == 1
    assert preds["thousand-replies"].tasks["objects"].abstained.startswith("no image")
    assert preds["corrupt-image"].tasks["objects"].abstained.startswith("no usable image")
    assert any("image" in str(x) for x in preds["corrupt-image"].problems)  # the problem says why


def _allow_all(**extra: object) -> ModerationPolicy:
    """A policy whose categories never review or block: only the unusable-input rule can."""
    return ModerationPolicy.from_dict(
        {
            "categories": {
                "threat": {"task": "intent", "labels": ["threat"], "block": None, "review": None},
                "shapes": {"task": "objects", "labels": ["circle"], "block": 0.0, "review": None},
            },
            **extra,
        }
    )


def test_unreadable_image_is_reviewed_not_allowed_on_text_alone(eager: Predictor) -> None:
    results = {r.id: r for r in Moderator(eager, _allow_all(), explain="all").moderate(bad_posts())}
    assert results["corrupt-image"].decision == "review"
    assert results["corrupt-image"].unusable_inputs == ["image"]
    assert results["missing-image"].decision == "review"
    # a post that gives no image is not missing one (image is not required by default)...
    assert results["thousand-replies"].unusable_inputs == []
    # ...and its image-only category has no evidence: null score, allowed
    assert results["thousand-replies"].category_scores["shapes"] is None
    assert results["thousand-replies"].category_decisions["shapes"] == "allow"
    assert results["thousand-replies"].decision == "allow"
    assert results["thousand-replies"].explanation.scores_without["text"]["shapes"] is None
    # posts with a usable image: the image category blocks at 0.0, as its rule says
    assert results["good-0"].decision == "block" and results["good-0"].unusable_inputs == []
    assert results["good-0"].category_scores["shapes"] is not None
    assert results["good-0"].explanation.scores_without["image"]["shapes"] is None  # image dropped


def test_unusable_input_rule_is_configurable(eager: Predictor) -> None:
    posts = [p for p in bad_posts() if p.id in ("corrupt-image", "thousand-replies", "good-1")]
    off = {r.id: r.decision for r in Moderator(eager, _allow_all(unreadable_input="allow")).moderate(posts)}
    assert off["corrupt-image"] == "allow"
    required = Moderator(eager, _allow_all(required_inputs=["image"], unreadable_input="block"))
    strict = {r.id: r for r in required.moderate(posts)}
    assert strict["thousand-replies"].decision == "block"  # no image, and the policy requires one
    assert strict["thousand-replies"].unusable_inputs == ["image"]
    with pytest.raises(ValueError, match="unreadable_input must be one of"):
        _allow_all(unreadable_input="ignore")
    with pytest.raises(ValueError, match="required_inputs must be a list"):
        _allow_all(required_inputs="image")
    policy = _allow_all(required_inputs=["text"])
    assert ModerationPolicy.from_dict(policy.to_dict()).required_inputs == ["text"]  # round trip


def test_every_fusion_declares_whether_it_learns_reply_weights() -> None:
    assert {k: v.learns_reply_weights for k, v in FUSIONS.items()} == {
        "concat": False,
        "cross": False,
        "attention": True,
    }
    posts = make_posts(3, seed=5)
    for kind, want in (("concat", "uniform"), ("attention", "attention")):
        moderator = Moderator(Predictor(tiny_model(0, kind), device="cpu"), explain="all")
        assert {r.explanation.reply_weights for r in moderator.moderate(posts)} == {want}


def test_one_decision_rule() -> None:
    assert metrics.decide is decision.decide
    spec = tiny_model(0).heads["intent"].spec
    probs = np.array([[0.5, 0.49, 0.9, 0.0]], dtype=np.float32)  # float32, as the heads give them
    thresholds = np.array([0.5, 0.5, 0.9, 0.0], dtype=np.float32)  # as the heads store them
    assert decision.decided_labels(spec, probs, thresholds) == [["joke", "threat", "meme"]]  # >= is in
    assert decision.decided_labels(tiny_model(0).heads["meaning"].spec, probs[:, :3]) == [["symbolic"]]


def test_post_batch_select_keeps_rows_and_only_their_replies(eager: Predictor) -> None:
    posts = bad_posts()
    batch = eager.collate(posts)
    sub = batch.select([4, 0])
    assert sub.ids == ["empty-text", "good-0"]
    assert torch.equal(sub.pixels, batch.pixels[[4, 0]])
    assert torch.equal(sub.image_mask, batch.image_mask[[4, 0]])
    for j, i in enumerate([4, 0]):  # every kept reply slot points at the same tokens as before
        for k in range(batch.reply_mask.shape[1]):
            if batch.reply_mask[i, k]:
                assert torch.equal(
                    sub.reply_tokens[sub.reply_index[j, k]], batch.reply_tokens[batch.reply_index[i, k]]
                )
    used = {int(x) for x in batch.reply_index[[4, 0]][batch.reply_mask[[4, 0]]]}
    assert sub.reply_tokens.shape[0] == len(used) < batch.reply_tokens.shape[0]


def test_post_batch_select_of_posts_without_any_reply(eager: Predictor) -> None:
    batch = eager.collate([Post(id=f"t{i}", text=f"words {i}") for i in range(3)])
    assert batch.reply_tokens.shape[0] == 0 and not bool(batch.reply_mask.any())
    sub = batch.select([2, 1])  # explaining part of a batch of text-only posts (the service does)
    assert sub.ids == ["t2", "t1"] and torch.equal(sub.text_tokens, batch.text_tokens[[2, 1]])
    assert sub.reply_tokens.shape[0] == 0 and not bool(sub.reply_mask.any())


def test_one_modality_set_type(eager: Predictor) -> None:
    assert Modalities.parse("text+image") == Modalities.without("replies") == Modalities(("image", "text"))
    assert Modalities.parse("text+image").key == "image+text"
    assert Modalities.without("replies").dropped == ("replies",) and ALL.dropped == ()
    assert drop_for("image") == Modalities.parse("image").dropped == ("text", "replies")
    for bad in ("audio", "", "image+audio"):
        with pytest.raises(ValueError, match="kept-modality key"):
            Modalities.parse(bad)
    batch = eager.collate(make_posts(3, seed=5))
    a = eager.forward(batch, "image+text").fused
    with torch.inference_mode():
        b = eager.model(batch, drop=("replies",)).fused
    assert torch.equal(a, b)
    assert not torch.equal(a, eager.forward(batch).fused)  # replies do matter: the test can fail


def test_calibration_skips_posts_an_image_task_abstains_on(eager: Predictor) -> None:
    from dataclasses import replace

    from ximgctx.inference import calibrate_policy

    posts = [replace(p, labels={"objects": ["circle"], "intent": ["threat"]}) for p in bad_posts()]
    _, report = calibrate_policy(Moderator(eager, _allow_all(), explain="none"), posts, target_precision=0.5)
    assert report["categories"]["shapes"]["labeled_posts"] == 3  # the three posts with a usable image
    assert report["posts"] == 6


def test_shipped_default_policy_reviews_an_unreadable_image(eager: Predictor) -> None:
    results = {r.id: r for r in Moderator(eager, explain="none").moderate(bad_posts())}
    for pid in ("corrupt-image", "missing-image"):
        assert results[pid].decision in ("review", "block") and results[pid].unusable_inputs == ["image"]


def test_calibration_keeps_a_review_only_category_review_only(eager: Predictor) -> None:
    from dataclasses import replace

    from ximgctx.inference import calibrate_policy
    from ximgctx.models.policy import CategoryRule, ModerationPolicy

    policy = ModerationPolicy(
        categories={
            "threat": CategoryRule("threat", "intent", ["threat"], block=0.9, review=0.5),
            "context": CategoryRule("context", "meaning", ["ironic"], block=None, review=0.5),
        }
    )
    rng = np.random.default_rng(0)
    posts = [
        replace(p, labels={"intent": ["threat"] if rng.random() < 0.5 else [], "meaning": "ironic"})
        for p in make_posts(24, seed=11)
    ]
    new, report = calibrate_policy(Moderator(eager, policy, explain="none"), posts, target_precision=0.5)
    assert new.categories["context"].block is None  # review-only stays review-only
    assert "review-only" in report["categories"]["context"]["block_note"]
    assert (
        new.categories["threat"].block is not None
        or report["categories"]["threat"]["block"]["threshold"] is None
    )
