"""``ximgctx bench gpu``: a clear refusal without CUDA, and the whole code path, tiny, on a CPU
(``--quick``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ximgctx.bench.gpu import bf16_peak
from ximgctx.cli.bench import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_without_cuda_it_exits_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu", "--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--quick --device cpu" in err and "Traceback" not in err
    assert not (tmp_path / "gpu.json").exists()
    assert main(["gpu", "--device", "cpu"]) == 2  # the full sizes on a CPU: refused, not started
    assert "only with --quick" in capsys.readouterr().err


def test_peak_table_matches_device_names() -> None:
    assert bf16_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert bf16_peak("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak("NVIDIA H200") == 989.0
    assert bf16_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert bf16_peak("Some Future GPU") is None and bf16_peak(None) is None


def test_quick_cpu_run_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    assert (
        main(["gpu", "--quick", "--device", "cpu", "--warmup", "0", "--iters", "1", "--out", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    assert result["benchmark"] == "gpu" and result["device"] == "cpu" and result["quick"] is True
    assert result["settings"]["batch_size"] == 4 and result["settings"]["replies"] == 8
    tiny = result["results"]["ximgctx-tiny"]
    inference, training = tiny["inference"], tiny["training"]
    for path in ("bare_open_clip", "ximgctx"):
        assert inference[path]["posts_per_s"] > 0 and inference[path]["flops"] > 0
        assert inference[path]["achieved_tflops"] >= 0 and inference[path]["share_of_bf16_peak"] is None
    # 8 replies per post are encoded: the context model runs more FLOPs than image + post text alone
    assert inference["ximgctx"]["flops"] > inference["bare_open_clip"]["flops"]
    for path in ("bare_open_clip_full", "ximgctx_lora", "ximgctx_full"):
        entry = training[path]
        assert entry["samples_per_s"] > 0 and entry["flops"] > 0 and entry["peak_memory_gib"] is None
    # LoRA trains a fraction of the weights that full fine-tuning trains
    assert (
        0
        < training["ximgctx_lora"]["trainable_parameters"]
        < training["ximgctx_full"]["trainable_parameters"]
    )
    assert training["peak_memory_lora_to_full"] is None  # CUDA only
    assert result["bf16_peak_tflops"] is None and result["environment"]["cuda"] is None
