"""Hub: from_pretrained("org/name") through a pre-filled Hugging Face cache (offline), verified; push_to_hub
uploads exactly the verified files; the model card starts with Hugging Face metadata."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import metadata_load

from ximgctx import ContextModel
from ximgctx._artifacts import artifact_digest
from ximgctx.errors import ArtifactError
from ximgctx.models.hub import HubModelError

from .._offline import watch_network
from ..helpers import tiny_model

REV = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str, folder: Path, rev: str = REV) -> Path:
    """The Hugging Face cache layout of one model repo: blobs by hash, snapshot files as relative links."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(f.read_bytes())
        link = repo / "snapshots" / rev / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return repo


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    model = tiny_model("concat")
    folder = model.save_pretrained(tmp_path / "model")
    repo = fill_cache(tmp_path / "cache", "org/tiny", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return model, folder, repo, tmp_path / "cache"


def test_repo_id_loads_from_the_cache_offline(hub_cache, posts) -> None:
    model, folder, _, cache = hub_cache
    batch = model.processor(posts)
    digest = artifact_digest(folder)
    for revision in (None, REV):
        loaded = ContextModel.from_pretrained(
            "org/tiny", cache_dir=cache, revision=revision, expected_sha256=digest
        )
        with torch.no_grad():
            a, b = model(batch), loaded(batch)
        for task in a.logits:
            assert torch.equal(a.logits[task], b.logits[task]), task
    with pytest.raises(ArtifactError, match="does not match the expected"):
        ContextModel.from_pretrained("org/tiny", cache_dir=cache, expected_sha256="0" * 64)


def test_tampered_blob_and_link_out_of_the_cache_refused(hub_cache, tmp_path) -> None:
    _, folder, repo, cache = hub_cache
    snapshot = repo / "snapshots" / REV
    blob = (snapshot / "config.json").resolve()
    original = blob.read_bytes()
    blob.write_bytes(original.replace(b'"concat"', b'"cross" '))
    with pytest.raises(ArtifactError, match="config.json"):
        ContextModel.from_pretrained("org/tiny", cache_dir=cache)
    blob.write_bytes(original)
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes(original)
    (snapshot / "config.json").unlink()
    os.symlink(outside, snapshot / "config.json")
    with pytest.raises(ArtifactError, match="config.json: a symbolic link"):
        ContextModel.from_pretrained("org/tiny", cache_dir=cache)


def test_uncached_repo_offline_fails_at_once_naming_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    network = watch_network(monkeypatch)
    with pytest.raises(HubModelError) as err:
        ContextModel.from_pretrained("org/missing", cache_dir=tmp_path)
    assert network.connects == [] and network.sleeps == []  # no download tried, no retry waited for
    message = str(err.value)
    assert (
        "'org/missing'" in message
        and "HF_HUB_OFFLINE" in message
        and "from_pretrained('/path/to/model')" in message
    )


class RecordingApi:
    """Stands in for huggingface_hub.HfApi's network calls and records them (with the uploaded bytes)."""

    def __init__(self, existing: list[str]) -> None:
        self.existing = existing
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def list_repo_files(self, repo_id, **kwargs):
        self.calls.append(("list_repo_files", {"repo_id": repo_id, **kwargs}))
        return list(self.existing)

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", {"repo_id": repo_id, **kwargs}))
        self.deleted = [op.path_in_repo for op in operations if type(op).__name__ == "CommitOperationDelete"]
        for op in operations:
            if type(op).__name__ == "CommitOperationAdd":
                self.uploaded[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
        return "commit-info"


def test_push_to_hub_uploads_exactly_the_verified_files() -> None:
    model = tiny_model("concat")
    api = RecordingApi(existing=[".gitattributes", "README.md", "old_weights.bin"])
    assert model.push_to_hub("org/tiny", api=api, metadata={"license": "mit"}) == "commit-info"
    assert [c[0] for c in api.calls] == ["create_repo", "list_repo_files", "create_commit"]
    assert api.calls[0][1]["private"] is True and api.calls[0][1]["exist_ok"] is True
    manifest = json.loads(api.uploaded["manifest.json"])
    assert set(api.uploaded) == set(manifest["files"]) | {"manifest.json"}
    for name, info in manifest["files"].items():
        assert hashlib.sha256(api.uploaded[name]).hexdigest() == info["sha256"], name
    assert api.deleted == ["old_weights.bin"]
    assert api.uploaded["README.md"].startswith(b"---\n")


def test_model_card_metadata_header_kept_across_saves(tmp_path) -> None:
    model = tiny_model("concat")
    path = model.save_pretrained(
        tmp_path / "m",
        card={"Metrics": {"intent": {"f1": 0.5}}},
        metadata={
            "license": "apache-2.0",
            "datasets": ["org/posts"],
            "base_model": "openai/clip-vit-base-patch32",
        },
    )
    meta = metadata_load(path / "README.md")
    assert meta["library_name"] == "ximgctx" and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["org/posts"] and meta["base_model"] == "openai/clip-vit-base-patch32"
    assert meta["pipeline_tag"] == "image-classification" and "ximgctx" in meta["tags"]
    text = (path / "README.md").read_text()
    assert text.index("---\n", 4) < text.index("# ximgctx context model") < text.index("## Metrics")
    again = ContextModel.from_pretrained(path).save_pretrained(tmp_path / "again")
    assert metadata_load(again / "README.md") == meta
    assert "## Metrics" in (again / "README.md").read_text()
