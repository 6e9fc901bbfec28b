"""Masked losses, soft labels, zero-shot heads, label encoding."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from ximgctx import Post, TaskSpec
from ximgctx.data.processor import LabelError, encode_label
from ximgctx.models.heads import masked_task_loss

from ..helpers import tiny_model


def test_missing_task_contributes_nothing_to_loss_or_gradient(posts) -> None:
    model = tiny_model("concat")
    batch = model.processor(posts)
    out = model(batch)
    loss = model.loss(out, batch)
    # p3 and p5 carry no labels; p2 only meaning; p1 no meaning
    assert loss.labeled == {"objects": 1, "meaning": 3, "intent": 3}
    logits = {k: v.detach().requires_grad_(True) for k, v in out.logits.items()}
    total = sum(
        masked_task_loss(logits[t.name], batch.targets[t.name], batch.label_mask[t.name], t.kind)
        for t in model.config.tasks
    )
    total.backward()
    for task in model.config.tasks:
        unlabeled = ~batch.label_mask[task.name]
        assert torch.all(logits[task.name].grad[unlabeled] == 0), task.name
        assert torch.any(logits[task.name].grad[~unlabeled] != 0), task.name
    # changing the (ignored) targets of unlabeled posts changes nothing
    targets = {k: v.clone() for k, v in batch.targets.items()}
    targets["meaning"][~batch.label_mask["meaning"]] = torch.tensor([0.0, 0.0, 1.0])
    a = masked_task_loss(
        out.logits["meaning"], batch.targets["meaning"], batch.label_mask["meaning"], "multiclass"
    )
    b = masked_task_loss(out.logits["meaning"], targets["meaning"], batch.label_mask["meaning"], "multiclass")
    assert torch.equal(a, b)


def test_all_unlabeled_is_exact_zero_with_graph() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    loss = masked_task_loss(logits, torch.zeros(4, 3), torch.zeros(4, dtype=torch.bool), "multiclass")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_soft_one_hot_equals_hard_label() -> None:
    spec = TaskSpec("meaning", ["literal", "ironic", "symbolic"])
    hard = encode_label("ironic", spec)
    soft = encode_label({"ironic": 1.0}, spec)
    assert torch.equal(hard, soft)
    logits = torch.randn(5, 3)
    mask = torch.ones(5, dtype=torch.bool)
    ce = F.cross_entropy(logits, torch.full((5,), 1))
    torch.testing.assert_close(masked_task_loss(logits, hard.expand(5, 3), mask, "multiclass"), ce)
    torch.testing.assert_close(masked_task_loss(logits, soft.expand(5, 3), mask, "multiclass"), ce)
    # a real distribution: the expected cross-entropy under it
    dist = encode_label({"literal": 3, "ironic": 1}, spec)
    assert torch.allclose(dist, torch.tensor([0.75, 0.25, 0.0]))
    expected = -(dist * F.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(masked_task_loss(logits, dist.expand(5, 3), mask, "multiclass"), expected)


def test_multilabel_bce_golden() -> None:
    logits = torch.tensor([[0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0]])
    loss = masked_task_loss(logits, target, torch.tensor([True]), "multilabel")
    expected = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(2.0)))) / 2
    torch.testing.assert_close(loss, expected)


def test_label_errors_are_named() -> None:
    spec = TaskSpec("meaning", ["literal", "ironic", "symbolic"])
    with pytest.raises(LabelError, match="unknown label 'sarcastic' for task 'meaning'"):
        encode_label("sarcastic", spec)
    with pytest.raises(LabelError, match="multiclass"):
        encode_label(["literal", "ironic"], spec)
    multi = TaskSpec("intent", ["joke", "threat"], "multilabel")
    assert encode_label(["joke", "threat"], multi).tolist() == [1.0, 1.0]
    assert encode_label({"joke": 0.25}, multi).tolist() == [0.25, 0.0]


def test_unknown_label_is_an_error_naming_post_task_and_label_or_masks_that_task_when_dropped() -> None:
    model = tiny_model("concat")
    posts = [Post("x", None, "hi", [], {"meaning": "sarcastic", "intent": ["joke"]})]
    with pytest.raises(LabelError, match="post 'x': unknown label 'sarcastic' for task 'meaning'"):
        model.processor(posts)
    batch = model.processor(posts, invalid_labels="drop")
    assert batch.label_mask["meaning"].tolist() == [False]
    assert batch.label_mask["intent"].tolist() == [True]
    assert any("unknown label 'sarcastic'" in str(p) for p in batch.problems[0])
    assert [(p.field, p.kind) for p in batch.problems[0]] == [("labels.meaning", "invalid_label")]


def test_zero_shot_head_reproduces_clip_similarity(posts) -> None:
    model = tiny_model("attention")
    spec = model.config.task("objects")
    batch = model.processor(posts)
    with torch.no_grad():
        logits = model(batch).logits["objects"]
        clip = model.encoder.clip
        tokens = open_clip.get_tokenizer("ximgctx-tiny")([spec.prompt.format(x) for x in spec.labels])
        text = F.normalize(clip.encode_text(tokens), dim=-1)
        present = batch.image_mask
        image = F.normalize(clip.encode_image(batch.pixels[present]), dim=-1)
        expected = clip.logit_scale.exp() * image @ text.T
    torch.testing.assert_close(logits[present], expected, rtol=1e-4, atol=1e-4)
