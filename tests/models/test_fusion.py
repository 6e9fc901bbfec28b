"""Every fusion ignores padding, survives missing modalities and caps reply floods."""

from __future__ import annotations

import pytest
import torch

from ximgctx import Post, Reply
from ximgctx.config import FusionConfig
from ximgctx.models.fusion import FUSIONS, build_fusion

from ..helpers import tiny_model

KINDS = sorted(FUSIONS)


@pytest.mark.parametrize("kind", KINDS + ["cross-lowrank"])
def test_padding_replies_do_not_change_output(kind) -> None:
    torch.manual_seed(0)
    cfg = FusionConfig(
        kind=kind.split("-")[0],
        hidden_dim=32,
        heads=4,
        cross_dim=8,
        cross_rank=4 if kind.endswith("lowrank") else None,
        dropout=0.0,
    )
    fusion = build_fusion(16, cfg).eval()
    b, k, d = 3, 2, 16
    img, txt, rep = torch.randn(b, d), torch.randn(b, d), torch.randn(b, k, d)
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    base = fusion(img, txt, rep, mask)
    # append 5 padded slots holding garbage
    rep_pad = torch.cat([rep, torch.randn(b, 5, d) * 100], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(b, 5, dtype=torch.bool)], dim=1)
    padded = fusion(img, txt, rep_pad, mask_pad)
    torch.testing.assert_close(padded.fused, base.fused, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded.reply_weights[:, :k], base.reply_weights, rtol=1e-5, atol=1e-5)
    assert torch.all(padded.reply_weights[:, k:] == 0)
    # garbage in a masked slot of the original width changes nothing either
    rep2 = rep.clone()
    rep2[1, 1] = 1e3
    torch.testing.assert_close(fusion(img, txt, rep2, mask).fused, base.fused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_model_padding_invariance_end_to_end(kind, posts) -> None:
    model = tiny_model(kind)
    with torch.no_grad():
        alone = model(model.processor(posts[2:3]))  # a post without replies, batched alone (K = 1)
        together = model(model.processor(posts))  # batched with posts that have 3 replies (K = 3)
    for task, logits in alone.logits.items():
        torch.testing.assert_close(together.logits[task][2:3], logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_modalities_give_finite_outputs(kind, tmp_path) -> None:
    model = tiny_model(kind)
    posts = [
        Post("no-image", None, "text only", [Reply("a reply")]),
        Post("empty-text", None, "", [Reply("only a reply")]),
        Post("no-replies", None, "just text", []),
        Post("nothing", None, "", []),
        Post("corrupt", str(tmp_path / "missing.png"), "  ", [Reply("")]),
    ]
    with torch.no_grad():
        out = model(model.processor(posts))
        for drop in [("image",), ("text",), ("replies",), ("image", "text", "replies")]:
            dropped = model(model.processor(posts), drop=drop)
            assert all(torch.isfinite(v).all() for v in dropped.logits.values())
    assert all(torch.isfinite(v).all() for v in out.logits.values())
    assert torch.isfinite(out.fused).all()
    present = out.embeddings.present
    assert present["image"].tolist() == [False] * 5
    assert present["text"].tolist() == [True, False, True, False, False]
    assert present["replies"].tolist() == [True, True, False, False, False]
    # posts with no real reply put no weight on any reply
    assert torch.all(out.reply_weights[2:] == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_thousand_replies_capped_with_warning(kind) -> None:
    model = tiny_model(kind)
    post = Post("flood", None, "look at this", [Reply(f"reply number {i}") for i in range(1000)])
    with pytest.warns(RuntimeWarning, match="1000 replies, kept the first 8"):
        batch = model.processor([post])
    assert batch.reply_mask.shape == (1, model.config.limits.max_replies)
    assert any("kept the first 8" in str(p) for p in batch.problems[0])
    assert [(p.field, p.kind) for p in batch.problems[0]] == [("replies", "capped")]
    with torch.no_grad():
        out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.logits.values())


def test_drop_skips_and_changes_only_that_modality(posts) -> None:
    model = tiny_model("concat")
    batch = model.processor(posts)
    with torch.no_grad():
        full = model.encode(batch)
        no_img = model.encode(batch, drop=("image",))
    assert torch.equal(no_img.text, full.text) and torch.equal(no_img.replies, full.replies)
    assert torch.equal(no_img.image, model.null_image.expand_as(full.image))
    with pytest.raises(ValueError, match="modalities"):
        model.encode(batch, drop=("audio",))


def test_unknown_fusion_kind_named() -> None:
    with pytest.raises(ValueError, match="fusion.kind must be one of"):
        FusionConfig(kind="gated")


def test_attention_interaction_token_learns_an_image_text_xor_quickly() -> None:
    """Meaning that lives in the combination (sunny photo x gloomy words = irony) is an XOR of an image and a
    text feature. One attention layer with the interaction token fits it in a few hundred steps; the token's
    shape follows cross_dim / cross_rank, and without it there is none."""
    torch.manual_seed(0)
    d = 16
    n = 512
    scene, tone = torch.randint(0, 2, (n,)), torch.randint(0, 2, (n,))
    base_img, base_txt = torch.randn(2, d), torch.randn(2, d)
    img = torch.nn.functional.normalize(base_img[scene] + 0.3 * torch.randn(n, d), dim=-1)
    txt = torch.nn.functional.normalize(base_txt[tone] + 0.3 * torch.randn(n, d), dim=-1)
    y = (scene ^ tone).float()
    rep, mask = torch.zeros(n, 1, d), torch.ones(n, 1, dtype=torch.bool)
    cfg = FusionConfig(kind="attention", hidden_dim=32, heads=4, layers=1, cross_dim=8, dropout=0.0)
    fusion = build_fusion(d, cfg)
    head = torch.nn.Linear(32, 1)
    opt = torch.optim.AdamW([*fusion.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(300):
        logits = head(fusion(img, txt, rep, mask).fused).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (
            ((head(fusion(img, txt, rep, mask).fused).squeeze(-1) > 0).float() == y).float().mean().item()
        )
    assert accuracy >= 0.95
    assert fusion.inter_proj.in_features == 8 * 8 and fusion.type_embed.shape[0] == 4
    low = build_fusion(d, FusionConfig(kind="attention", hidden_dim=32, heads=4, cross_dim=8, cross_rank=3))
    assert low.inter_proj.in_features == 3
    plain = build_fusion(d, FusionConfig(kind="attention", hidden_dim=32, heads=4, interaction=False))
    assert plain.interaction is None and plain.type_embed.shape[0] == 3
