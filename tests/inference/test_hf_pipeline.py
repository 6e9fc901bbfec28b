"""A tiny HF SigLIP model end to end: train() with split LoRA rates, save, Predictor, identical reloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ximgctx import ContextModel, load_posts, write_posts
from ximgctx.contextbench import generate
from ximgctx.governance import govern
from ximgctx.inference.predictor import Predictor
from ximgctx.training import train

from ..hf_tiny import make_tiny_siglip

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_and_predict_with_a_transformers_encoder(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    generate(bench, seed=3, n_train=16, n_val=8, n_test=4, n_compositional=4, image_size=32)
    for split in ("train", "val"):
        write_posts(govern(load_posts(bench / f"{split}.jsonl")).posts, bench / f"g_{split}.jsonl")
    checkpoint = make_tiny_siglip(tmp_path / "siglip")
    result = train(
        {
            "model": {
                "tasks": "contextbench",
                "encoder": {"backend": "transformers", "arch": str(checkpoint)},
                "fusion": {"kind": "concat", "hidden_dim": 32, "dropout": 0.0},
                "lora": {"r": 2, "alpha": 4.0, "targets": ["attn", "mlp"]},
            },
            "data": {"train": str(bench / "g_train.jsonl"), "val": str(bench / "g_val.jsonl")},
            "train": {
                "output_dir": str(tmp_path / "run"),
                "batch_size": 8,
                "max_steps": 4,
                "eval_every": 4,
                "save_every": 4,
                "eval_batch_size": 8,
                "progress_bar": False,
                "tensorboard": False,
                "metric_for_best": "intent/accuracy",
                "optim": {"lr": {"lora_image": 1e-3, "lora_text": 3e-3, "fusion": 3e-3, "heads": 3e-3}},
            },
        }
    )
    assert result.steps == 4
    folder = Path(result.model_dir)
    assert (folder / "hf" / "config.json").is_file() and (
        folder / "adapter" / "adapter_config.json"
    ).is_file()
    posts = load_posts(bench / "test.jsonl")
    predictor = Predictor.from_pretrained(folder, device="cpu", dtype=None)
    predictions = predictor.predict(posts)
    assert [p.id for p in predictions] == [p.id for p in posts]
    assert all(set(p.tasks) == {"objects", "meaning", "intent"} for p in predictions)
    assert any(p.inputs["image"] for p in predictions) and any(p.inputs["text"] for p in predictions)
    model = ContextModel.from_pretrained(folder)
    batch = model.processor(posts)
    with torch.no_grad():
        a, b = model(batch), ContextModel.from_pretrained(folder)(batch)
    for task in a.logits:
        assert torch.equal(a.logits[task], b.logits[task])
