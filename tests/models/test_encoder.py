"""The encoder matches open_clip, trimming and reply dedupe change nothing, offline tags fail fast."""

from __future__ import annotations

import open_clip
import pytest
import torch

from ximgctx import ContextModel, EncoderConfig, LoraSpec, ModelConfig
from ximgctx.data.text import trim_tokens
from ximgctx.models.encoder import PretrainedWeightsError
from ximgctx.models.open_clip_encoder import ClipEncoder, _pools_class_token

from .._offline import watch_network
from ..helpers import TASKS, tiny_model

TEXTS = [
    "when monday hits",
    "lol",
    "a much longer post text that goes on for a while about a protest downtown",
    "",
]


@pytest.fixture(scope="module", params=["ximgctx-tiny", "ximgctx-tiny-rn"])
def encoder(request) -> ClipEncoder:
    torch.manual_seed(0)
    return ClipEncoder(EncoderConfig(arch=request.param)).eval()


def test_embeddings_equal_open_clip(encoder: ClipEncoder) -> None:
    tokenizer = open_clip.get_tokenizer(encoder.config.arch)
    tokens = tokenizer(TEXTS)  # (4, 77), open_clip's fixed padding
    pixels = torch.randn(3, 3, encoder.image_size, encoder.image_size)
    with torch.no_grad():
        ours_img = encoder.encode_image(pixels)
        ours_txt = encoder.encode_text(tokens)
        ref_img = encoder.clip.encode_image(pixels)
        ref_txt = encoder.clip.encode_text(tokens)
    # a ViT runs its last block for the class token alone (ResNets go through open_clip unchanged)
    assert _pools_class_token(encoder.clip.visual) == (not encoder.config.arch.endswith("-rn"))
    torch.testing.assert_close(ours_img, ref_img, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_txt, ref_txt, rtol=1e-5, atol=1e-5)


def test_pooled_position_shortcut_equals_open_clip_with_adapters() -> None:
    """The last-block shortcut goes through LoRA-adapted attention and MLPs exactly as open_clip's forward."""
    torch.manual_seed(0)
    model = ContextModel(
        ModelConfig(
            tasks=TASKS,
            encoder=EncoderConfig(arch="ximgctx-tiny"),
            lora=LoraSpec(r=2, alpha=4.0, targets=["all"]),
        )
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_A" in name:
                p.add_(torch.randn_like(p) * 0.1)
        tokens = open_clip.get_tokenizer("ximgctx-tiny")(TEXTS)
        pixels = torch.randn(3, 3, 64, 64)
        enc = model.encoder
        torch.testing.assert_close(
            enc.encode_image(pixels), enc.clip.encode_image(pixels), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            enc.encode_text(tokens), enc.clip.encode_text(tokens), rtol=1e-5, atol=1e-5
        )


def test_trimmed_tokens_equal_untrimmed(encoder: ClipEncoder) -> None:
    tokens = open_clip.get_tokenizer(encoder.config.arch)(TEXTS)
    trimmed = trim_tokens(tokens)
    assert trimmed.shape[1] < 30 < tokens.shape[1]  # the longest text has ~17 tokens, padding was 77
    with torch.no_grad():
        full = encoder.encode_text(tokens, trim=False)
        short = encoder.encode_text(trimmed)
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)


def test_deduplicated_replies_equal_encoding_every_copy(posts) -> None:
    model = tiny_model("concat")
    batch = model.processor(posts)
    # p0 has "lol" twice, p1 and p4 once more: 4 copies of "lol" encoded once
    n_slots = int(batch.reply_mask.sum())
    assert batch.reply_tokens.shape[0] < n_slots
    with torch.no_grad():
        emb = model.encode(batch)
        tokenizer = open_clip.get_tokenizer("ximgctx-tiny")
        for i, post in enumerate(posts):
            texts = [r.text for r in post.replies[: model.config.limits.max_replies]]
            for j, text in enumerate(texts):
                if not text.strip():
                    assert not batch.reply_mask[i, j]
                    continue
                one = torch.nn.functional.normalize(
                    model.encoder.clip.encode_text(tokenizer([text])), dim=-1
                )[0]
                torch.testing.assert_close(emb.replies[i, j], one, rtol=1e-5, atol=1e-5)
            # post texts share the replies' text-tower call (grouped by length together)
            if post.text.strip():
                one = torch.nn.functional.normalize(
                    model.encoder.clip.encode_text(tokenizer([post.text])), dim=-1
                )[0]
                torch.testing.assert_close(emb.text[i], one, rtol=1e-5, atol=1e-5)


def test_unknown_arch_names_the_choices() -> None:
    from ximgctx.models.open_clip_encoder import SHIPPED_ARCHS

    assert set(SHIPPED_ARCHS) >= {"ximgctx-tiny", "ximgctx-tiny-32", "ximgctx-tiny-rn"}
    with pytest.raises(ValueError, match="ximgctx-tiny-32") as err:
        ClipEncoder(EncoderConfig(arch="no-such-arch"))
    assert all(a in str(err.value) for a in SHIPPED_ARCHS)


def test_unknown_tag_lists_known_tags() -> None:
    with pytest.raises(PretrainedWeightsError, match="laion2b_s34b_b79k"):
        ClipEncoder(EncoderConfig(arch="ViT-B-32", pretrained="not-a-tag"))


def test_missing_local_weights_file() -> None:
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        ClipEncoder(EncoderConfig(arch="ximgctx-tiny", pretrained="/nonexistent/weights.safetensors"))


def test_pretrained_tag_offline_fails_fast_with_help(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    network = watch_network(monkeypatch)  # a machine without a network: every connection is refused
    with pytest.raises(PretrainedWeightsError) as info:
        ClipEncoder(EncoderConfig(arch="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path)))
    assert len(network.connects) == 1  # one reachability probe, then no download tried
    assert network.sleeps == []  # and no retry waited for
    message = str(info.value)
    assert "ViT-B-32" in message and "laion2b_s34b_b79k" in message and "pretrained='/path/to/" in message


def test_pretrained_tag_with_hub_offline_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    network = watch_network(monkeypatch)
    with pytest.raises(PretrainedWeightsError, match="offline"):
        ClipEncoder(EncoderConfig(arch="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path)))
    assert network.connects == [] and network.sleeps == []  # no download tried, no retry waited for


def test_local_weights_file_loads(tmp_path) -> None:
    torch.manual_seed(1)
    src = ClipEncoder(EncoderConfig(arch="ximgctx-tiny"))
    path = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in src.clip.state_dict().items()}, str(path))
    torch.manual_seed(2)
    loaded = ClipEncoder(EncoderConfig(arch="ximgctx-tiny", pretrained=str(path)))
    for (k, a), b in zip(src.clip.state_dict().items(), loaded.clip.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_length_groups_cover_every_row_once() -> None:
    from ximgctx.models.encoder import length_groups

    lengths = [3, 40, 4, 5, 38, 3, 6, 77] + [4] * 50
    groups = length_groups(lengths, overhead=64)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert len(groups) > 1  # the long rows are split from the short ones
    assert length_groups([5] * 10, overhead=64) == [list(range(10))]
    assert length_groups([]) == [[]]


def test_grouped_encoding_equals_one_call(encoder: ClipEncoder) -> None:
    texts = ["lol"] * 30 + [
        "a much longer reply that keeps going and going for a good many tokens, " * 3,
        "ok",
        "same",
    ]
    tokens = open_clip.get_tokenizer(encoder.config.arch)(texts)
    from ximgctx.models import encoder as enc

    with torch.no_grad():
        grouped = encoder.encode_text(tokens)
        full = encoder.encode_text(tokens, trim=False)
        old = enc.GROUP_OVERHEAD_TOKENS
        try:
            enc.GROUP_OVERHEAD_TOKENS = 10**9  # one group only
            assert len(enc.length_groups((tokens != 0).sum(1).tolist())) == 1
            single = encoder.encode_text(tokens)
        finally:
            enc.GROUP_OVERHEAD_TOKENS = old
    assert len(enc.length_groups((tokens != 0).sum(1).tolist())) > 1
    torch.testing.assert_close(grouped, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(single, full, rtol=1e-5, atol=1e-5)
