"""save_pretrained / from_pretrained: identical outputs, safetensors only, tampering refused."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from ximgctx import ContextModel
from ximgctx.models._serialization import ModelFolderError

from ..helpers import tiny_config, tiny_model


@pytest.fixture
def saved(tmp_path, posts):
    model = tiny_model("attention")
    with torch.no_grad():  # give the adapters and heads non-trivial values
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("heads."):
                p.add_(torch.randn_like(p) * 0.05)
        model.heads["intent"].temperature.fill_(1.7)
        model.heads["intent"].thresholds.copy_(torch.tensor([0.3, 0.4, 0.5, 0.6]))
    path = model.save_pretrained(tmp_path / "model", card={"Metrics": {"intent": {"accuracy": 0.5}}})
    return model, path


def test_round_trip_gives_identical_outputs(saved, posts) -> None:
    model, path = saved
    loaded = ContextModel.from_pretrained(path)
    batch = model.processor(posts)
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    for task in a.logits:
        assert torch.equal(a.logits[task], b.logits[task]), task
    assert torch.equal(a.fused, b.fused)
    assert loaded.heads["intent"].temperature.item() == pytest.approx(1.7)
    assert torch.equal(loaded.heads["intent"].thresholds, model.heads["intent"].thresholds)
    assert loaded.config.to_dict() == model.config.to_dict()


def test_folder_layout_and_no_pickle(saved) -> None:
    _, path = saved
    names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "adapter/README.md",
        "adapter/adapter_model.safetensors",
        "adapter/ximgctx_adapter.json",
        "card.json",
        "config.json",
        "manifest.json",
        "model.safetensors",
        "processor_config.json",
    ]
    for f in path.rglob("*"):
        if f.is_file():
            head = f.read_bytes()[:2]
            assert head[:1] != b"\x80", f"{f} looks like a pickle"
            assert not zipfile.is_zipfile(f), f"{f} is a zip (torch.save) archive"
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    card = (path / "README.md").read_text()
    assert "| intent | multilabel | fused | joke, protest, threat, meme |" in card and "Metrics" in card
    # the default attn+mlp preset adapts open_clip's MHA, which stock peft would not reproduce: ximgctx's
    # format
    adapter = json.loads((path / "adapter" / "ximgctx_adapter.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4 and adapter["format"] == "ximgctx-lora"


def test_adapter_loads_with_peft_into_plain_open_clip(tmp_path) -> None:
    # MLP and token-embedding adapters: stock peft 0.21 doubles the out_proj delta of MHA adapters (see
    # ximgctx.models.lora). The anchored target regex must load as it was saved.
    from peft import PeftModel

    from ximgctx.config import EncoderConfig, LoraSpec
    from ximgctx.models.open_clip_encoder import build_clip

    torch.manual_seed(0)
    config = tiny_config("concat")
    config.lora = LoraSpec(r=4, alpha=8.0, targets=["mlp", "embed"], towers=["text"])
    model = ContextModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.add_(torch.randn_like(p) * 0.05)
    path = model.save_pretrained(tmp_path / "m")
    clip = build_clip(EncoderConfig(arch="ximgctx-tiny"))
    from safetensors.torch import load_file

    weights = load_file(str(path / "model.safetensors"))
    clip.load_state_dict(
        {k[len("encoder.clip.") :]: v for k, v in weights.items() if k.startswith("encoder.clip.")}
    )
    peft_model = PeftModel.from_pretrained(clip, str(path / "adapter"))
    tokens = model.processor.tokenize(["hello there"])
    with torch.no_grad():
        ours = model.encoder.encode_text(tokens)
        theirs = peft_model.base_model.model.encode_text(model.processor.tokenizer(["hello there"]))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_tampered_weights_refused_naming_file(saved) -> None:
    _, path = saved
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="model.safetensors.*does not match manifest"):
        ContextModel.from_pretrained(path)


def test_tampered_adapter_and_unlisted_pickle_refused(saved) -> None:
    _, path = saved
    (path / "extra.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelFolderError, match="extra.bin.*not listed"):
        ContextModel.from_pretrained(path)
    (path / "extra.bin").unlink()
    (path / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="adapter_model.safetensors.*missing"):
        ContextModel.from_pretrained(path)


def test_not_a_model_folder(tmp_path) -> None:
    with pytest.raises(ModelFolderError, match="no such model folder"):
        ContextModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="no manifest.json"):
        ContextModel.from_pretrained(tmp_path / "empty")


def test_saving_over_an_existing_model_replaces_it(saved, posts) -> None:
    model, path = saved
    other = tiny_model("attention", seed=5)
    other.save_pretrained(path)
    loaded = ContextModel.from_pretrained(path)
    batch = model.processor(posts)
    with torch.no_grad():
        assert torch.equal(loaded(batch).fused, other(batch).fused)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
