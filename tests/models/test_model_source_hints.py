"""What a researcher's slip gets: a mistyped model folder is "no such model folder", not a hub download; a
transformers folder used as an open_clip architecture, an ximgctx model or a weights file says to pass
backend='transformers'; ``hub:`` always means the hub."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from ximgctx import ContextModel, EncoderConfig, ModelConfig, TaskSpec
from ximgctx.cli._args import model_ref
from ximgctx.errors import ConfigError
from ximgctx.models.encoder import ModelFolderError, PretrainedWeightsError
from ximgctx.models.hub import HubModelError, meant_local, resolve_model

from ..hf_tiny import make_tiny_clip

TASKS = [TaskSpec("intent", ["joke", "protest"])]
HINT = re.escape(
    "looks like a transformers folder (model_type='clip'): use it as the encoder with backend='transformers'"
)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


def test_a_mistyped_local_folder_is_no_such_folder_not_a_hub_id(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "runs").mkdir()
    assert meant_local("my-modle") and meant_local("runs/bset") and not meant_local("org/name")
    for typo in ("my-modle", "runs/bset"):
        assert resolve_model(typo) == (Path(typo), False)  # never sent to the hub
        with pytest.raises(ModelFolderError, match=rf"{typo}: no such model folder \(a model on the"):
            ContextModel.from_pretrained(typo)
    with pytest.raises(argparse.ArgumentTypeError, match="no such model folder: runs/bset"):
        model_ref("runs/bset")
    assert model_ref("org/name") == "org/name" and model_ref("hub:gpt2") == "hub:gpt2"
    # a real hub id still goes to the hub, with a clear offline error; hub: forces it even over a folder
    with pytest.raises(HubModelError, match="'org/name'.*HF_HUB_OFFLINE"):
        ContextModel.from_pretrained("org/name", cache_dir=tmp_path / "cache")
    with pytest.raises(HubModelError, match="'runs/bset'.*not in the local cache"):
        ContextModel.from_pretrained("hub:runs/bset", cache_dir=tmp_path / "cache")


def test_a_transformers_folder_without_the_backend_gets_the_hint(hf_folder: Path) -> None:
    with pytest.raises(ConfigError, match=rf"unknown open_clip architecture.*{HINT}"):
        ContextModel(ModelConfig(tasks=TASKS, encoder=EncoderConfig(arch=str(hf_folder))))
    with pytest.raises(ConfigError, match="looks like a Hugging Face hub id.*backend='transformers'"):
        ContextModel(ModelConfig(tasks=TASKS, encoder=EncoderConfig(arch="openai/clip-vit-base-patch32")))
    with pytest.raises(ModelFolderError, match=rf"no manifest.json.*{HINT}"):
        ContextModel.from_pretrained(hf_folder)
    with pytest.raises(PretrainedWeightsError, match=rf"is a folder, not a weights file; .*{HINT}"):
        ContextModel(
            ModelConfig(tasks=TASKS, encoder=EncoderConfig(arch="ximgctx-tiny", pretrained=str(hf_folder)))
        )
    # with the backend named, the same folder is an encoder
    model = ContextModel(
        ModelConfig(tasks=TASKS, encoder=EncoderConfig(backend="transformers", arch=str(hf_folder)))
    )
    assert model.config.encoder.backend == "transformers"
