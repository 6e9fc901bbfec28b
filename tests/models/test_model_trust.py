"""Model folders from strangers: nothing in them runs code, every file is verified, nothing is clobbered."""

from __future__ import annotations

import json
import logging
import os
import pickle

import pytest
import torch

from ximgctx import ContextModel
from ximgctx._artifacts import MANIFEST, artifact_digest, seal_folder
from ximgctx.errors import ConfigError, OutputError, XimgctxError
from ximgctx.models._serialization import ModelFolderError

from ..helpers import tiny_config, tiny_model


class _Payload:
    """Unpickling this creates the marker file: proof that a file ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def model_dir(tmp_path):
    model = tiny_model("concat")
    return model.save_pretrained(tmp_path / "model", card={"Metrics": {"intent": {"accuracy": 0.5}}})


def _edit_config(path, **encoder):
    raw = json.loads((path / "config.json").read_text())
    raw["model"]["encoder"].update(encoder)
    (path / "config.json").write_text(json.dumps(raw))
    (path / MANIFEST).unlink()
    seal_folder(path, "model")  # the attacker lists every file it ships


def _evil_open_clip_dir(folder, marker):
    folder.mkdir()
    # an open_clip config that would hand trust_remote_code to transformers, and the code it would run
    cfg = {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16},
            "text_cfg": {
                "context_length": 16,
                "vocab_size": 100,
                "width": 32,
                "heads": 2,
                "layers": 1,
                "hf_tokenizer_name": str(folder),
                "tokenizer_kwargs": {"trust_remote_code": True},
            },
        }
    }
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    (folder / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}})
    )


@pytest.mark.parametrize("scheme", ["local-dir", "hf-hub"])
def test_remote_arch_in_a_folder_is_refused_and_runs_nothing(model_dir, tmp_path, scheme):
    marker = tmp_path / "ran"
    evil = model_dir / "evil"
    _evil_open_clip_dir(evil, marker)
    arch = f"local-dir:{evil}" if scheme == "local-dir" else "hf-hub:attacker/evil-clip"
    _edit_config(model_dir, arch=arch)
    with pytest.raises(ConfigError, match="outside ximgctx's registered list") as info:
        ContextModel.from_pretrained(model_dir)
    assert isinstance(info.value, XimgctxError)
    assert not marker.exists()


def test_opted_in_remote_tokenizer_never_gets_config_kwargs(tmp_path, monkeypatch):
    import open_clip.tokenizer as oct

    from ximgctx.models.open_clip_encoder import make_tokenizer, trust_remote_arch

    seen = {}

    class Recorder:
        def __init__(self, source, **kwargs):
            seen.update(kwargs, source=source)

    monkeypatch.setattr(oct, "HFTokenizer", Recorder)
    evil = tmp_path / "evil"
    _evil_open_clip_dir(evil, tmp_path / "ran")
    raw = json.loads((evil / "open_clip_config.json").read_text())
    raw["model_cfg"]["text_cfg"]["tokenizer_kwargs"]["clean"] = "lower"
    (evil / "open_clip_config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError):
        make_tokenizer(f"local-dir:{evil}")
    with trust_remote_arch():
        make_tokenizer(f"local-dir:{evil}")
    assert seen["trust_remote_code"] is False and seen["clean"] == "lower"
    assert seen["context_length"] == 16 and seen["source"] == str(evil)


def test_pickled_files_in_a_folder_never_run(model_dir, tmp_path):
    marker = tmp_path / "ran"
    blob = pickle.dumps(_Payload(str(marker)))
    # a pickle beside the weights (listed, so the manifest passes), and starting weights pointing at one
    (model_dir / "pytorch_model.bin").write_bytes(blob)
    (model_dir / "open_clip_pytorch_model.bin").write_bytes(blob)
    _edit_config(model_dir, pretrained=str(model_dir / "open_clip_pytorch_model.bin"))
    model = ContextModel.from_pretrained(model_dir)
    assert model is not None and not marker.exists()
    # a pickle in place of the weights or the config is refused, not unpickled
    for name in ("model.safetensors", "config.json"):
        (model_dir / name).write_bytes(blob)
        (model_dir / MANIFEST).unlink()
        seal_folder(model_dir, "model")
        with pytest.raises(ModelFolderError, match=name):
            ContextModel.from_pretrained(model_dir)
        assert not marker.exists()


def test_unlisted_config_traversal_and_symlinks_are_refused(model_dir, tmp_path):
    manifest = json.loads((model_dir / MANIFEST).read_text())
    original = dict(manifest)
    del manifest["files"]["config.json"]
    (model_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="config.json: not listed"):
        ContextModel.from_pretrained(model_dir)
    (tmp_path / "outside.json").write_text("{}")
    manifest = json.loads(json.dumps(original))
    manifest["files"]["../outside.json"] = {"sha256": "0" * 64, "bytes": 2}
    (model_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="leaves the folder"):
        ContextModel.from_pretrained(model_dir)
    (model_dir / MANIFEST).write_text(json.dumps(original))
    real = model_dir / "processor_config.json"
    (tmp_path / "p.json").write_bytes(real.read_bytes())
    real.unlink()
    os.symlink(tmp_path / "p.json", real)
    with pytest.raises(ModelFolderError, match="processor_config.json: a symbolic link"):
        ContextModel.from_pretrained(model_dir)


def test_byte_flip_in_any_file_is_refused(model_dir):
    for name in ("config.json", "card.json", "README.md", "adapter/ximgctx_adapter.json"):
        f = model_dir / name
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
        with pytest.raises(ModelFolderError, match=name.split("/")[-1]):
            ContextModel.from_pretrained(model_dir)
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
    ContextModel.from_pretrained(model_dir)


def test_pinned_digest(model_dir):
    digest = artifact_digest(model_dir)
    ContextModel.from_pretrained(model_dir, expected_sha256=digest)
    with pytest.raises(ModelFolderError, match="does not match the expected"):
        ContextModel.from_pretrained(model_dir, expected_sha256="0" * 64)


def test_save_refuses_a_folder_of_other_files(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    model = tiny_model("concat")
    with pytest.raises(OutputError, match="refusing to replace it"):
        model.save_pretrained(work)
    assert (work / "thesis.tex").read_text() == "years of work"
    model.save_pretrained(work, overwrite=True)
    assert not (work / "thesis.tex").exists()
    model.save_pretrained(work)  # a model folder is replaced by a model without being told


def test_card_records_starting_weights_and_survives_resave(tmp_path, caplog):
    torch.manual_seed(0)
    source = tiny_model("concat", lora=False)
    from safetensors.torch import save_file

    weights = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in source.encoder.clip.state_dict().items()}, str(weights))
    from ximgctx._fsutil import sha256_file

    config = tiny_config("concat")
    config.encoder.pretrained = str(weights)
    model = ContextModel(config)
    path = model.save_pretrained(tmp_path / "m", card={"Metrics": {"intent": {"accuracy": 0.75}}})
    card = (path / "README.md").read_text()
    assert f"`start.safetensors` (SHA-256 `{sha256_file(weights)}`)" in card and "random init" not in card
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded = ContextModel.from_pretrained(path)
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    again = loaded.save_pretrained(tmp_path / "again", card={"Data governance": "governed"})
    card2 = (again / "README.md").read_text()
    assert "0.75" in card2 and "governed" in card2 and sha256_file(weights) in card2
    assert loaded.config.encoder.pretrained == "start.safetensors"  # a saved config names no local folder
