"""Shared-ground helpers that replaced near-copies: the JSON-safe walker, the config flattener and the hub
resolver each have one home, and their behaviour is pinned here with golden values."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ximgctx._json import json_safe
from ximgctx.config import ConfigError


def test_json_safe_golden() -> None:
    value = {
        "a": float("nan"),
        "b": [1, float("inf"), (2.5, float("-inf"))],
        "c": {"d": {"e": np.float32(0.25), "f": np.float32("nan"), "g": np.int64(7), "h": np.bool_(True)}},
        "t": torch.tensor([[0.5, float("nan")], [1.0, 2.0]]),
        "s": torch.tensor(3.0, requires_grad=True),
        "n": np.array([1.5, np.inf]),
        "k": "nan",
        "z": None,
        "ok": True,
    }
    seen: list[tuple[str, float]] = []
    out = json_safe(value, on_nonfinite=lambda where, v: seen.append((where, v)))
    assert out == {
        "a": None,
        "b": [1, None, [2.5, None]],
        "c": {"d": {"e": 0.25, "f": None, "g": 7, "h": True}},
        "t": [[0.5, None], [1.0, 2.0]],
        "s": 3.0,
        "n": [1.5, None],
        "k": "nan",
        "z": None,
        "ok": True,
    }
    assert [w for w, _ in seen] == ["a", "b[1]", "b[2][1]", "c.d.f", "t[0][1]", "n[1]"]
    assert math.isnan(seen[0][1]) and seen[1][1] == math.inf and seen[2][1] == -math.inf
    # plain Python types only, so the strict encoder takes it
    assert type(out["c"]["d"]["e"]) is float and type(out["c"]["d"]["g"]) is int
    assert type(out["c"]["d"]["h"]) is bool and type(out["s"]) is float
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_json_safe_paths_start_at_where_and_leave_the_input_alone() -> None:
    value = {"x": [float("nan")]}
    seen: list[str] = []
    assert json_safe(value, on_nonfinite=lambda w, _v: seen.append(w), where="output") == {"x": [None]}
    assert seen == ["output.x[0]"]
    assert math.isnan(value["x"][0])  # a new value is returned; the input is not changed
    assert json_safe(float("nan")) is None and json_safe(np.float64(1.5)) == 1.5


def test_json_safe_imports_neither_numpy_nor_torch() -> None:
    code = "import sys, ximgctx._json; print(sorted({'numpy', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_flatten_config_golden_from_dataclasses_and_dicts() -> None:
    from ximgctx.config import DataConfig, LoraSpec, flatten_config

    model = {"lora": LoraSpec(r=4), "limits": {"max_replies": 2}}
    nested = {"model": model, "seed": 0, "empty": {}, "x": None}
    assert flatten_config(nested) == {
        "model.lora.r": 4,
        "model.lora.alpha": 16.0,
        "model.lora.dropout": 0.0,
        "model.lora.targets": ["attn", "mlp"],
        "model.lora.towers": ["image", "text"],
        "model.limits.max_replies": 2,
        "seed": 0,
        "x": None,
    }
    assert flatten_config(DataConfig(max_replies=3))["max_replies"] == 3
    with pytest.raises(ConfigError, match="flatten_config takes a config dataclass or a mapping, got list"):
        flatten_config([1, 2])


def test_checkpoint_differences_and_hparams_read_the_one_flattener() -> None:
    from ximgctx.training._runtime import hparams
    from ximgctx.training.checkpoint import config_differences

    saved = {"train": {"lr": {"heads": 1e-3}, "seed": 0}, "model": {"lora": None}}
    new = {"train": {"lr": {"heads": 2e-3}, "seed": 0}, "model": {"lora": {"r": 4}}}
    assert config_differences(saved, new, same_global_batch=True) == [
        "model.lora (checkpoint: None, now: '<absent>')",
        "model.lora.r (checkpoint: '<absent>', now: 4)",
        "train.lr.heads (checkpoint: 0.001, now: 0.002)",
    ]
    assert hparams({"a": {"b": None, "c": [1, 2], "d": 1.5, "e": True}}) == {
        "a.b": "null",
        "a.c": "[1, 2]",
        "a.d": 1.5,
        "a.e": True,
    }


def test_is_hub_id_tells_local_paths_from_repo_ids(tmp_path, monkeypatch) -> None:
    from ximgctx._hub import is_hub_id

    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "local").mkdir()
    assert is_hub_id("org/name") and is_hub_id("gpt2")
    assert not is_hub_id("org/local")  # an existing folder wins over the repo id it looks like
    assert not is_hub_id(Path("org/name"))  # a Path is always local
    assert not is_hub_id("./model") and not is_hub_id("/abs/model") and not is_hub_id("runs/x/model")


def test_resolve_model_local_folder_is_returned_unverified_without_the_hub(tmp_path, monkeypatch) -> None:
    import huggingface_hub

    from ximgctx.models.hub import resolve_model

    def no_hub(*args, **kwargs):
        raise AssertionError("a local folder must not reach the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    assert resolve_model(str(tmp_path)) == (tmp_path, False)
    assert resolve_model(tmp_path / "absent") == (tmp_path / "absent", False)


def test_resolve_model_hub_id_goes_through_the_one_snapshot_call(tmp_path, monkeypatch) -> None:
    """Model folders (ximgctx.models.hub) and transformers checkpoints (hf_encoder) share _hub.snapshot:
    the same offline rule (cache only) and the same error mapping, each under its caller's message."""
    import huggingface_hub

    from ximgctx import _hub
    from ximgctx.models.encoder import PretrainedWeightsError
    from ximgctx.models.hub import HubModelError, resolve_model

    calls: list[dict] = []

    def fake(repo_id, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr(_hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(
        HubModelError, match=r"'org/tiny'.*not in the local cache and the hub cannot be reached"
    ):
        resolve_model("org/tiny", revision="main", cache_dir=tmp_path)
    assert calls == [
        {
            "repo_id": "org/tiny",
            "revision": "main",
            "cache_dir": str(tmp_path),
            "allow_patterns": None,
            "local_files_only": True,
        }
    ]
    with pytest.raises(PretrainedWeightsError, match=r"'org/clip'.*not in the local cache"):
        _hub.snapshot(
            "org/clip",
            revision=None,
            cache_dir=None,
            allow_patterns=["*.json"],
            error=lambda why: PretrainedWeightsError(f"'org/clip': {why}"),
        )
    assert calls[-1]["allow_patterns"] == ["*.json"] and calls[-1]["local_files_only"] is True


def test_posts_arrow_schema_is_the_one_written_by_shards_and_manifests(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ximgctx.adapters._common import write_manifest
    from ximgctx.data.post_schema import HF_FEATURES, posts_arrow_schema
    from ximgctx.data.record import Post

    shard = posts_arrow_schema(image_bytes=True)
    assert shard.names == ["id", "image", "text", "replies", "labels", "meta"]
    assert shard.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert all(shard.field(n).type == pa.string() for n in ("id", "text", "replies", "labels", "meta"))
    assert json.loads(shard.metadata[b"huggingface"]) == {"info": {"features": HF_FEATURES}}
    assert HF_FEATURES["image"] == {"_type": "Image"}
    assert HF_FEATURES["meta"] == {"dtype": "string", "_type": "Value"}
    manifest = posts_arrow_schema(image_bytes=False)
    assert manifest.field("image").type == pa.string() and manifest.metadata is None

    out = tmp_path / "posts.parquet"
    write_manifest([Post("p1", text="hi", meta={"score": float("nan")})], out)
    table = pq.read_table(out)
    assert table.schema.equals(manifest)
    assert json.loads(table.column("meta")[0].as_py()) == {"score": None}


def test_one_forward_pass_serves_evaluation_and_inference(posts) -> None:
    from torch.utils.data import DataLoader

    from ximgctx.data.dataset import PostDataset
    from ximgctx.evaluation.predict import predict
    from ximgctx.inference.predictor import Predictor
    from ximgctx.models.forward import run_forward
    from ximgctx.models.modalities import Modalities

    from .helpers import tiny_model

    model = tiny_model("concat")
    batch = model.processor(posts)
    predictor = Predictor(model, device="cpu", dtype="fp32")
    loader = DataLoader(PostDataset(posts), batch_size=len(posts), collate_fn=model.processor)
    gathered = predict(model, loader, keys=("text", "image+replies"))
    for key in ("text", "image+replies"):
        with torch.no_grad():
            want = model(batch, drop=Modalities.parse(key).dropped).logits
        shared = run_forward(model, batch, key).logits
        served = predictor.forward(batch, key).logits
        for task, z in want.items():
            assert torch.equal(shared[task], z) and torch.equal(served[task], z)
            assert torch.equal(gathered[key].logits[task], z.float())
    with torch.no_grad():
        full = model(batch).logits
    assert any(not torch.equal(full[t], want[t]) for t in full)  # the masking is real


def test_run_server_is_the_one_uvicorn_start(monkeypatch) -> None:
    import uvicorn

    from ximgctx.serve.config import ServeConfig
    from ximgctx.serve.run import run_server

    calls: list[tuple[object, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    app = object()
    run_server(app, ServeConfig(host="127.0.0.1", port=8123, no_auth=True), graceful_timeout_s=5.0)
    assert calls == [
        (
            app,
            {
                "host": "127.0.0.1",
                "port": 8123,
                "log_level": "info",
                "timeout_graceful_shutdown": 5.0,
                "access_log": False,
            },
        )
    ]
