"""Pinned loads read the bytes they verified: a file swapped in the folder after (or while) it is checked
never reaches the model, the label memory or the search index."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ximgctx import ContextModel
from ximgctx._artifacts import artifact_digest, pinned_copy
from ximgctx.errors import ArtifactError
from ximgctx.models import _serialization
from ximgctx.models.encoder import ModelFolderError

from ._inference_fixtures import model_dir


def _two_versions(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the test model, and a 'swapped' weights file with every tensor changed."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir(), folder)
    weights = load_file(str(folder / "model.safetensors"))
    evil = tmp_path / "evil.safetensors"
    save_file({k: v + 1.0 if v.is_floating_point() else v for k, v in weights.items()}, str(evil))
    return folder, evil


def test_a_swap_after_the_check_does_not_reach_the_model(tmp_path, monkeypatch):
    folder, evil = _two_versions(tmp_path)
    pin = artifact_digest(folder)
    want = ContextModel.from_pretrained(folder, expected_sha256=pin).state_dict()
    real_load = _serialization._load

    def swap_then_load(cls, path, **kw):  # runs after the pinned check
        shutil.copy(evil, folder / "model.safetensors")
        return real_load(cls, path, **kw)

    monkeypatch.setattr(_serialization, "_load", swap_then_load)
    got = ContextModel.from_pretrained(folder, expected_sha256=pin).state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    monkeypatch.undo()
    # the folder now holds the swapped file: the next pinned load refuses it, naming it
    with pytest.raises(ModelFolderError, match="model.safetensors"):
        ContextModel.from_pretrained(folder, expected_sha256=pin)


def test_a_file_that_changes_while_it_is_copied_is_refused(tmp_path, monkeypatch):
    from ximgctx import _artifacts

    folder, evil = _two_versions(tmp_path)
    pin = artifact_digest(folder)
    real_open = _artifacts._open_listed

    def open_then_swap(p, link_root):  # the check saw the manifest; the file is replaced as it is opened
        if p.name == "model.safetensors":
            shutil.copy(evil, p)
        return real_open(p, link_root)

    monkeypatch.setattr(_artifacts, "_open_listed", open_then_swap)
    changed = pytest.raises(ArtifactError, match="changed while it was being loaded")
    with changed, pinned_copy(folder, "model", expected_sha256=pin):
        pass


def test_pinned_copy_refuses_links_and_leaves_nothing_behind(tmp_path):
    folder, _ = _two_versions(tmp_path)
    pin = artifact_digest(folder)
    with pinned_copy(folder, "model", expected_sha256=pin) as m:
        copy = m.path
        assert (
            copy != folder
            and (copy / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
        )
    assert not copy.exists()
    target = tmp_path / "elsewhere.json"
    shutil.move(folder / "config.json", target)
    (folder / "config.json").symlink_to(target)
    link = pytest.raises(ArtifactError, match="symbolic link")
    with link, pinned_copy(folder, "model", expected_sha256=pin):
        pass


def test_racing_swaps_never_load_the_swapped_weights(tmp_path):
    """A writer flips model.safetensors between two versions while pinned loads run: each load either
    returns the pinned weights or is refused; none returns the other version."""
    folder, evil = _two_versions(tmp_path)
    pin = artifact_digest(folder)
    good = tmp_path / "good.safetensors"
    shutil.copy(folder / "model.safetensors", good)
    want = ContextModel.from_pretrained(folder, expected_sha256=pin).state_dict()
    stop = threading.Event()

    def flipper() -> None:
        i = 0
        while not stop.is_set():
            tmp = folder / f".swap{i % 2}"
            shutil.copy(evil if i % 2 else good, tmp)
            tmp.replace(folder / "model.safetensors")
            i += 1

    t = threading.Thread(target=flipper, daemon=True)
    t.start()
    loaded = refused = 0
    try:
        for _ in range(20):
            try:
                got = ContextModel.from_pretrained(folder, expected_sha256=pin).state_dict()
            except ModelFolderError:
                refused += 1
                continue
            assert all(torch.equal(got[k], want[k]) for k in want)
            loaded += 1
    finally:
        stop.set()
        t.join(10)
    assert loaded + refused == 20
