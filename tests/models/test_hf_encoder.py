"""The transformers backend: HF CLIP/SigLIP embeddings equal the checkpoint's own, training round-trips
exactly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ximgctx import ContextModel, EncoderConfig, LoraSpec, ModelConfig
from ximgctx.errors import ConfigError
from ximgctx.models.encoder import PretrainedWeightsError
from ximgctx.models.hf_encoder import HFEncoder
from ximgctx.models.lora import resolve_lora_targets

from .._offline import watch_network
from ..helpers import TASKS
from ..hf_tiny import make_tiny_clip, make_tiny_siglip

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "a cat photo!",
    "when monday hits",
    "lol",
    "see you all saturday, count me in with a longer sentence",
    "",
]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"clip": make_tiny_clip(root / "clip"), "siglip": make_tiny_siglip(root / "siglip")}


def _images() -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 255, (40 + 9 * i, 52, 3), dtype=np.uint8)) for i in range(3)]


def _hf_config(folder, targets=("attn", "mlp"), lora=True) -> ModelConfig:
    return ModelConfig(
        tasks=TASKS,
        encoder=EncoderConfig(backend="transformers", arch=str(folder)),
        lora=LoraSpec(r=4, alpha=8.0, targets=list(targets)) if lora else None,
    )


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_embeddings_equal_the_checkpoints_own_features(hf_dirs, kind) -> None:
    enc = HFEncoder(EncoderConfig(backend="transformers", arch=str(hf_dirs[kind]))).eval()
    images = _images()
    ref_tok = enc.hf_tokenizer(
        TEXTS, padding="max_length", max_length=enc.context_length, return_tensors="pt"
    )
    with torch.no_grad():
        pixels = torch.stack([enc.image_transform()(im) for im in images])  # (3, 3, 32, 32)
        ours_img = enc.encode_image(pixels)
        ref_img = enc.clip.get_image_features(**enc.image_processor(images=images, return_tensors="pt"))
        ours_txt = enc.encode_text(enc.tokenizer(TEXTS))
        ref_txt = enc.clip.get_text_features(input_ids=ref_tok["input_ids"])
    assert pixels.shape[-1] == enc.image_size == 32
    torch.testing.assert_close(ours_img, ref_img.pooler_output, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_txt, ref_txt.pooler_output, rtol=0, atol=1e-5)
    assert ours_txt.shape == (len(TEXTS), enc.embed_dim)


def test_clip_length_groups_equal_the_full_padding(hf_dirs) -> None:
    """Twenty short replies and one long post: two length groups, each trimmed, same embeddings."""
    from ximgctx.models.encoder import length_groups

    enc = HFEncoder(EncoderConfig(backend="transformers", arch=str(hf_dirs["clip"]))).eval()
    texts = [f"lol same {i}" for i in range(20)] + ["see you all saturday " * 12]
    tokens = enc.tokenizer(texts)
    assert len(length_groups((tokens != 0).sum(1).tolist())) == 2
    ref = enc.hf_tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ours = enc.encode_text(tokens)
        full = enc.encode_text(tokens, trim=False)
        reference = enc.clip.get_text_features(input_ids=ref["input_ids"]).pooler_output
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(full, reference, rtol=0, atol=1e-5)


def test_clip_texts_are_trimmed_and_siglip_texts_are_not(hf_dirs) -> None:
    clip = HFEncoder(EncoderConfig(backend="transformers", arch=str(hf_dirs["clip"]))).eval()
    siglip = HFEncoder(EncoderConfig(backend="transformers", arch=str(hf_dirs["siglip"]))).eval()
    # the processor trims at the last non-zero id: CLIP rows end in zeros, SigLIP rows are pads all the way
    clip_tok, sig_tok = clip.tokenizer(["lol"]), siglip.tokenizer(["lol"])
    assert clip_tok.shape == (1, 77) and int((clip_tok != 0).sum()) == 3
    assert sig_tok.shape == (1, 16) and bool((sig_tok != 0).all())
    # why SigLIP keeps its padding: it pools the last position, so a trimmed text gives another embedding
    ids = siglip.hf_tokenizer(["lol"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        trimmed = siglip.clip.get_text_features(input_ids=ids).pooler_output
        full = siglip.encode_text(sig_tok)
    assert (trimmed - full).abs().max() > 1e-2


def test_hf_lora_presets_by_module_type(hf_dirs) -> None:
    enc = HFEncoder(EncoderConfig(backend="transformers", arch=str(hf_dirs["siglip"])))
    attn = resolve_lora_targets(enc.clip, LoraSpec(targets=["attn"]))
    assert {n.rsplit(".", 1)[-1] for n in attn} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert len(attn) == 4 * 2 * 2  # 4 projections x 2 layers x 2 towers; the pooling head's MHA is left out
    mlp = resolve_lora_targets(enc.clip, LoraSpec(targets=["mlp"], towers=["text"]))
    assert len(mlp) == 4 and all(n.startswith("text_model.") and n.endswith(("fc1", "fc2")) for n in mlp)
    embed = resolve_lora_targets(enc.clip, LoraSpec(targets=["embed"]))
    assert embed == ["text_model.embeddings.token_embedding"]
    conv = resolve_lora_targets(enc.clip, LoraSpec(targets=["conv"]))
    assert conv == ["vision_model.embeddings.patch_embedding"]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_train_save_reload_reproduces_logits(hf_dirs, kind, posts, tmp_path, monkeypatch) -> None:
    source = tmp_path / "checkpoint"
    shutil.copytree(hf_dirs[kind], source)
    torch.manual_seed(0)
    model = ContextModel(_hf_config(source, targets=["all"])).train()
    lora = {n: p.clone() for n, p in model.named_parameters() if "lora_" in n}
    assert lora and model.trainable_parameters()["lora"] > 0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = model.processor(posts)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(model.eval().loss(model(batch), batch).total)

    before = eval_loss()
    for _ in range(4):
        model.train().loss(model(batch), batch).total.backward()
        opt.step()
        opt.zero_grad()
    assert eval_loss() < before
    assert any(not torch.equal(lora[n], p) for n, p in model.named_parameters() if "lora_B" in n)
    model.eval()
    path = model.save_pretrained(tmp_path / "model")
    files = json.loads((path / "manifest.json").read_text())["files"]
    assert {"hf/config.json", "hf/tokenizer.json", "hf/preprocessor_config.json"} <= set(files)
    shutil.rmtree(source)  # the saved model must not need the checkpoint (nor the hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = ContextModel.from_pretrained(path)
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    for task in a.logits:
        assert torch.equal(a.logits[task], b.logits[task]), task
    assert loaded.encoder.provenance["pretrained"] == source.name  # a saved model names no local folder
    assert loaded.encoder.provenance["sha256"] == model.encoder.provenance["sha256"] is not None


def test_refuses_other_model_types_and_pretrained(hf_dirs, tmp_path) -> None:
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ConfigError, match="model_type 'bert'"):
        HFEncoder(EncoderConfig(backend="transformers", arch=str(other)))
    pickled = tmp_path / "pickled"
    shutil.copytree(hf_dirs["clip"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(PretrainedWeightsError, match="never unpickles"):
        HFEncoder(EncoderConfig(backend="transformers", arch=str(pickled)))
    with pytest.raises(ConfigError, match="pretrained must be null with backend=transformers"):
        EncoderConfig(backend="transformers", arch=str(hf_dirs["clip"]), pretrained="openai")
    with pytest.raises(ConfigError, match="encoder.backend must be one of"):
        EncoderConfig(backend="timm")


def test_uncached_hub_id_offline_fails_at_once_naming_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    network = watch_network(monkeypatch)
    with pytest.raises(PretrainedWeightsError) as err:
        HFEncoder(EncoderConfig(backend="transformers", arch="org/tiny-clip", cache_dir=str(tmp_path)))
    assert network.connects == [] and network.sleeps == []  # no download tried, no retry waited for
    message = str(err.value)
    assert "'org/tiny-clip'" in message and "arch='/path/to/folder'" in message and "offline" in message


def test_a_saved_hf_folder_cannot_run_code(hf_dirs, tmp_path, monkeypatch) -> None:
    """A model folder is untrusted even when its manifest lists every planted file: its tokenizer config may
    not name a custom class (auto_map), its HF config may not name another model type; nothing runs."""
    from ximgctx._artifacts import seal_folder
    from ximgctx.models._serialization import ModelFolderError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = ContextModel(_hf_config(hf_dirs["clip"], lora=False)).save_pretrained(tmp_path / "m")
    marker = tmp_path / "payload-ran"
    (path / "hf" / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nclass Evil:\n    pass\n")

    originals = {n: (path / "hf" / n).read_text() for n in ("tokenizer_config.json", "config.json")}

    def plant(name: str, **changes) -> None:
        for other, text in originals.items():
            (path / "hf" / other).write_text(text)
        (path / "hf" / name).write_text(json.dumps({**json.loads(originals[name]), **changes}))
        (path / "manifest.json").unlink()
        seal_folder(path, "model")

    plant("tokenizer_config.json", tokenizer_class="Evil", auto_map={"AutoTokenizer": ["evil.Evil", None]})
    with pytest.raises(ModelFolderError, match="auto_map"):
        ContextModel.from_pretrained(path)
    plant("config.json", model_type="evil", auto_map={"AutoModel": "evil.Evil", "AutoConfig": "evil.Evil"})
    with pytest.raises(ModelFolderError, match="model_type 'evil'"):
        ContextModel.from_pretrained(path)
    assert not marker.exists()


def test_features_of_both_transformers_output_shapes() -> None:
    """transformers < 5 returns the projected tensor from get_*_features, 5 a model output holding it."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    x = torch.randn(2, 8)
    assert HFEncoder._features(x) is x
    assert HFEncoder._features(BaseModelOutputWithPooling(pooler_output=x)) is x
