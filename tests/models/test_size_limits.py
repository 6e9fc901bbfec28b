"""Model folders whose few bytes of config would make the process allocate tens of gigabytes are refused
before any module is built, naming the value and the limit; the parameter arithmetic agrees with the modules
transformers and ximgctx really build (counted on the ``meta`` device, which allocates nothing)."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import pytest
import torch

from ximgctx import ContextModel, EncoderConfig, ModelConfig
from ximgctx._artifacts import seal_folder
from ximgctx.config import FusionConfig
from ximgctx.models.size_limits import (
    ModelLimits,
    ModelSizeError,
    check_fusion_size,
    check_open_clip_cfg,
    fusion_parameters,
    hf_parameters,
    model_limits_set,
    open_clip_parameters,
)

from ..helpers import TASKS
from ..hf_tiny import make_tiny_clip


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sizes")
    checkpoint = make_tiny_clip(root / "clip")
    config = ModelConfig(tasks=TASKS, encoder=EncoderConfig(backend="transformers", arch=str(checkpoint)))
    return ContextModel(config).save_pretrained(root / "m")


def _plant(saved: Path, tmp_path: Path, name: str, change) -> Path:
    """A copy of the saved model with one JSON file changed and the manifest resealed over it (as a hostile
    folder would come: every file listed with its right digest)."""
    path = shutil.copytree(saved, tmp_path / "m")
    raw = json.loads((path / name).read_text())
    change(raw)
    (path / name).write_text(json.dumps(raw))
    (path / "manifest.json").unlink()
    seal_folder(path, "model")
    return path


def _never_built(monkeypatch) -> None:
    import transformers

    def refuse(*a, **k):
        raise AssertionError("a module was built before the size check")

    monkeypatch.setattr(transformers.CLIPModel, "__init__", refuse)
    monkeypatch.setattr(transformers.CLIPImageProcessor, "__init__", refuse)
    monkeypatch.setattr("ximgctx.models.context_model.build_fusion", refuse)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_wide_vision_config_is_refused_before_allocation(saved, tmp_path, monkeypatch) -> None:
    def widen(raw):
        raw["vision_config"].update(hidden_size=8192, intermediate_size=32768, num_hidden_layers=24)

    path = _plant(saved, tmp_path, "hf/config.json", widen)
    _never_built(monkeypatch)
    before = _peak_mib()
    with pytest.raises(ValueError) as err:  # ModelFolderError naming the folder, with the size error
        ContextModel.from_pretrained(path)
    assert _peak_mib() - before < 256  # 77 GB of float32 weights were never allocated
    message = str(err.value)
    assert "vision_config hidden_size=8192, intermediate_size=32768, num_hidden_layers=24" in message
    assert "implies 19.33 B parameters" in message and "over this process's limit of 4.00 B" in message


def test_fusion_hidden_dim_is_refused_before_allocation(saved, tmp_path, monkeypatch) -> None:
    def widen(raw):
        raw["model"]["fusion"]["hidden_dim"] = 65536

    path = _plant(saved, tmp_path, "config.json", widen)
    monkeypatch.setattr("ximgctx.models.context_model.build_fusion", _never_built)
    before = _peak_mib()
    with pytest.raises(ModelSizeError, match=r"fusion.hidden_dim=65536 \(kind=attention, layers=2\) implies"):
        ContextModel.from_pretrained(path)
    assert _peak_mib() - before < 256


def test_preprocessor_size_beyond_the_image_limits_is_refused(saved, tmp_path, monkeypatch) -> None:
    def huge(raw):
        raw["size"] = {"shortest_edge": 20000}
        raw["crop_size"] = {"height": 20000, "width": 20000}

    path = _plant(saved, tmp_path, "hf/preprocessor_config.json", huge)
    _never_built(monkeypatch)
    with pytest.raises(
        ValueError, match=r"size.shortest_edge 20000x20000 is over this process's image limits"
    ):
        ContextModel.from_pretrained(path)


def test_open_clip_local_dir_config_is_refused_before_create_model(tmp_path, monkeypatch) -> None:
    import open_clip

    from ximgctx.models.open_clip_encoder import ClipEncoder, trust_remote_arch

    cfg = {"embed_dim": 512, "vision_cfg": {"width": 8192, "layers": 24, "patch_size": 16, "image_size": 224}}
    cfg["text_cfg"] = {"width": 512, "layers": 12, "context_length": 77, "vocab_size": 49408}
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    monkeypatch.setattr(open_clip, "create_model", _never_built)
    with (
        trust_remote_arch(),
        pytest.raises(ModelSizeError, match=r"vision_cfg width=8192, layers=24 implies"),
    ):
        ClipEncoder(EncoderConfig(arch=f"local-dir:{tmp_path}"))


def test_the_limit_is_the_processes_own(saved) -> None:
    limit = pytest.raises(ValueError, match="over this process's limit of 10,000")
    with model_limits_set(ModelLimits(max_parameters=10_000)), limit:
        ContextModel.from_pretrained(saved)
    assert isinstance(ContextModel.from_pretrained(saved), ContextModel)  # the default admits it


# ----------------------------------------------------------------- the arithmetic against the real modules
def _meta_count(module_factory) -> int:
    with torch.device("meta"):
        module = module_factory()
    return sum(p.numel() for p in module.parameters())


CLIP_L14 = {
    "model_type": "clip",
    "projection_dim": 768,
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24},
}
CLIP_L14["text_config"]["num_attention_heads"] = 12
CLIP_L14["vision_config"].update(num_attention_heads=16, patch_size=14)
SIGLIP_SO400M = {
    "model_type": "siglip",
    "text_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27},
    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27},
}
SIGLIP_SO400M["text_config"]["num_attention_heads"] = 16
SIGLIP_SO400M["vision_config"].update(num_attention_heads=16, image_size=384, patch_size=14)


@pytest.mark.parametrize("raw", [CLIP_L14, SIGLIP_SO400M], ids=["clip-l14", "siglip-so400m"])
def test_hf_arithmetic_matches_transformers_and_admits_real_models(raw) -> None:
    import transformers

    cls, cfg_cls = (
        (transformers.CLIPModel, transformers.CLIPConfig)
        if raw["model_type"] == "clip"
        else (transformers.SiglipModel, transformers.SiglipConfig)
    )
    real = _meta_count(
        lambda: cls(cfg_cls(text_config=raw["text_config"], vision_config=raw["vision_config"]))
    )
    estimate, _ = hf_parameters(raw, "config.json")
    assert 0.97 < estimate / real < 1.03, (estimate, real)
    assert estimate < ModelLimits().max_parameters / 4


@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-L-14", "ViT-bigG-14"])
def test_open_clip_arithmetic_matches_open_clip_and_admits_real_models(arch) -> None:
    import open_clip

    cfg = open_clip.get_model_config(arch)
    real = _meta_count(lambda: open_clip.create_model(arch, device="meta"))
    estimate, _ = open_clip_parameters(cfg, arch)
    assert 0.97 < estimate / real < 1.03, (estimate, real)
    check_open_clip_cfg(cfg, arch)  # ViT-bigG, 2.5 B parameters, is within the default limit


@pytest.mark.parametrize("kind", ["concat", "cross", "attention"])
def test_fusion_bound_is_an_upper_bound_and_the_refusal_exact(kind) -> None:
    from ximgctx.models.fusion import build_fusion

    for hidden in (256, 2048):
        cfg = FusionConfig(kind=kind, hidden_dim=hidden, heads=4)
        assert fusion_parameters(512, cfg) >= _meta_count(lambda cfg=cfg: build_fusion(512, cfg))
    cfg = FusionConfig(kind=kind, hidden_dim=65536, heads=4)
    exact = _meta_count(lambda: build_fusion(512, cfg))
    with pytest.raises(ModelSizeError, match=f"implies {exact / 1e9:.2f} B parameters"):
        check_fusion_size(512, cfg)
