"""Evaluation: metrics against hand-computed values, calibration, thresholds, ablations, reports and the CLI.

(Counting every post once across 2 processes is checked in tests/training/test_training.py, in the torchrun
test.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ximgctx import ContextModel, ModelConfig, TaskSpec, load_posts
from ximgctx.contextbench import generate
from ximgctx.evaluation import (
    ABLATION_KEYS,
    drop_for,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    fit_thresholds,
    load_oracle,
    task_metrics,
)
from ximgctx.evaluation.metrics import label_arrays
from ximgctx.evaluation.report import to_markdown
from ximgctx.training.config import resolve_tasks

MC = TaskSpec("meaning", ["literal", "ironic", "symbolic"], "multiclass")
ML = TaskSpec("intent", ["joke", "protest"], "multilabel")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _logit(p: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(p, dtype=torch.float64)
    return torch.log(t / (1 - t))


def test_multiclass_metrics_match_hand_computed_values() -> None:
    logits = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 3, 0], [3, 0, 0], [0, 0, 3], [0, 0, 3]])
    targets = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    mask = torch.tensor([True, True, True, True, True, False])  # the last post is unlabeled
    m = task_metrics(MC, logits, targets, mask)
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["macro_f1"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # per class: 1, 0.5, 0
    assert m["confusion"] == [[2, 0, 0], [0, 1, 1], [0, 1, 0]]
    assert m["auroc"]["literal"] == pytest.approx(1.0)


def test_multilabel_metrics_match_hand_computed_values() -> None:
    logits = _logit([[0.9, 0.2], [0.4, 0.7], [0.8, 0.3], [0.1, 0.6]]).float()
    targets = torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])
    m = task_metrics(ML, logits, targets, torch.ones(4, dtype=torch.bool))
    assert m["accuracy"] == pytest.approx(0.5)  # exact match: rows 0 and 1
    assert m["micro_f1"] == pytest.approx(0.75)  # tp 3, fp 1, fn 1
    assert m["ap"]["joke"] == pytest.approx(1.0) and m["ap"]["protest"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["map"] == pytest.approx((1 + (1 + 2 / 3) / 2) / 2)
    assert m["label_confusion"]["protest"] == [[1, 1], [1, 1]]
    # a per-label threshold changes the decision (protest at 0.65: row 3 is no longer predicted)
    m2 = task_metrics(ML, logits, targets, torch.ones(4, dtype=torch.bool), thresholds=np.array([0.5, 0.65]))
    assert m2["accuracy"] == pytest.approx(0.75)
    # a label with a single class has no AUROC rather than a made-up one
    m3 = task_metrics(
        ML, logits, torch.tensor([[1.0, 0], [0, 0], [1, 0], [0, 0]]), torch.ones(4, dtype=torch.bool)
    )
    assert m3["auroc"]["protest"] is None


def test_temperature_scaling_undoes_overconfidence_and_lowers_ece() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 3, generator=g) * 1.5  # the true logits
    y = torch.multinomial(z.softmax(-1), 1, generator=g)[:, 0]
    logits = 3.0 * z  # a model three times too confident
    targets = torch.eye(3)[y]
    mask = torch.ones(4000, dtype=torch.bool)
    t = fit_temperature(MC, logits, targets, mask)
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(MC, *label_arrays(MC, logits, targets, mask, 1.0))[0]
    after = expected_calibration_error(MC, *label_arrays(MC, logits, targets, mask, t))[0]
    assert after < 0.03 < before
    # multilabel too: per-label binary probabilities
    zl = torch.randn(3000, 2, generator=g)
    yl = torch.bernoulli(zl.sigmoid(), generator=g)
    tl = fit_temperature(ML, 0.5 * zl, yl, torch.ones(3000, dtype=torch.bool))
    assert tl == pytest.approx(0.5, rel=0.15)  # an under-confident model gets T < 1


def test_ece_is_zero_for_a_perfectly_calibrated_bin() -> None:
    probs = np.array([[0.75, 0.25]] * 4)
    truth = np.array([0, 0, 0, 1])  # 75% right at 75% confidence
    ece, bins = expected_calibration_error(TaskSpec("m", ["a", "b"], "multiclass"), probs, truth)
    assert ece == pytest.approx(0.0) and sum(b["count"] for b in bins) == 4


def test_thresholds_maximise_f1_per_label() -> None:
    probs = np.array([[0.9, 0.35], [0.6, 0.3], [0.2, 0.32], [0.1, 0.1]])
    truth = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    thr = fit_thresholds(probs, truth, "f1")
    assert thr[0] == pytest.approx(0.5)  # 0.5 already separates label 0: the tie goes to 0.5
    pred = probs[:, 1] >= thr[1]
    assert pred.tolist() == [True, False, True, False]  # between 0.30 and 0.32: F1 1.0 for label 1
    assert 0.30 < thr[1] <= 0.32
    assert fit_thresholds(probs, np.zeros((4, 2)), "f1").tolist() == [0.5, 0.5]  # nothing to learn from


def test_drop_for_names_what_is_masked() -> None:
    assert drop_for("image+text+replies") == ()
    assert drop_for("image") == ("text", "replies")
    assert drop_for("text+replies") == ("image",)
    with pytest.raises(ValueError):
        drop_for("audio")
    assert len(ABLATION_KEYS) == 7


# ------------------------------------------------------------------------------ end to end, tiny model


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    generate(root, seed=1, n_train=8, n_val=24, n_test=21, n_compositional=8, image_size=32)
    return root


@pytest.fixture(scope="module")
def model() -> ContextModel:
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(
        {
            "tasks": resolve_tasks("contextbench"),
            "encoder": {"arch": "ximgctx-tiny"},
            "fusion": {"kind": "attention", "hidden_dim": 32, "heads": 2, "layers": 1},
            "lora": {"r": 2, "targets": ["attn"]},
        }
    )
    return ContextModel(cfg).eval()


def test_evaluate_reports_every_ablation_beside_the_oracle(
    bench: Path, model: ContextModel, tmp_path: Path
) -> None:
    oracle = load_oracle(bench / "oracle.json", "test")
    report = evaluate(
        model,
        bench / "test.jsonl",
        val_posts=bench / "val.jsonl",
        oracle=oracle,
        out_dir=tmp_path / "eval",
        name="test",
        batch_size=8,
    )
    assert report["posts"] == 21
    for task, entry in report["tasks"].items():
        assert set(entry["modalities"]) == set(ABLATION_KEYS)
        for key, row in entry["modalities"].items():
            assert row["oracle"] == oracle[task][key]
            assert row["gap"] == pytest.approx(row["accuracy"] - row["oracle"])
        cal = entry["calibration"]
        assert (
            cal["fitted_on"] == "validation"
            and cal["ece_before"] is not None
            and cal["ece_after"] is not None
        )
        assert cal["temperature"] == pytest.approx(float(model.heads[task].temperature))
    # the objects head reads only the image: its predictions cannot depend on text or replies
    rows = report["tasks"]["objects"]["modalities"]
    assert (
        rows["image"]["accuracy"] == rows["image+text"]["accuracy"] == rows["image+text+replies"]["accuracy"]
    )
    assert rows["text"]["accuracy"] == rows["replies"]["accuracy"] == rows["text+replies"]["accuracy"]
    files = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {
        "report.json",
        "report.md",
        "ablations.png",
        "confusion_meaning.png",
        "reliability_intent.png",
    } <= files
    assert (
        json.loads((tmp_path / "eval" / "report.json").read_text())["tasks"]["intent"]["modalities"]["text"][
            "oracle"
        ]
        == oracle["intent"]["text"]
    )
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "| image+text+replies |" in md and "ECE before" in md


def test_contextbench_posts_without_their_ceilings_say_so(
    bench: Path, model: ContextModel, tmp_path: Path
) -> None:
    """A governed copy is written to another folder, without oracle.json: evaluating it warns and the report
    says why there is no ceiling, where it used to drop them without a word."""
    copy = tmp_path / "governed" / "test.jsonl"
    copy.parent.mkdir()
    copy.write_text((bench / "test.jsonl").read_text().replace('"images/', f'"{bench}/images/'))
    with pytest.warns(UserWarning, match="ContextBench posts but no oracle ceilings were given"):
        report = evaluate(model, copy, keys=["image+text+replies"], name="test", batch_size=8)
    assert str(copy) in report["oracle_missing"] and "--oracle" in report["oracle_missing"]
    assert report["oracle"] is False
    assert "**No ceilings**" in to_markdown(report)
    with_ceilings = evaluate(
        model,
        copy,
        oracle=load_oracle(bench / "oracle.json", "test"),
        keys=["image+text+replies"],
        batch_size=8,
    )
    assert with_ceilings["oracle_missing"] is None and with_ceilings["oracle"] is True
    # posts that are not ContextBench's: no note
    plain = tmp_path / "plain.jsonl"
    plain.write_text(copy.read_text().replace('"source": "contextbench"', '"source": "mine"'))
    assert evaluate(model, plain, keys=["image+text+replies"], batch_size=8)["oracle_missing"] is None


def test_masking_a_modality_changes_predictions(bench: Path, model: ContextModel) -> None:
    from torch.utils.data import DataLoader

    from ximgctx.data.dataset import PostDataset
    from ximgctx.evaluation.predict import predict

    posts = load_posts(bench / "test.jsonl")
    loader = DataLoader(PostDataset(posts), batch_size=8, collate_fn=model.processor)
    out = predict(model, loader, keys=("image+text+replies", "image+text", "text+replies"))
    full = out["image+text+replies"].logits["intent"]
    assert not torch.allclose(full, out["image+text"].logits["intent"])  # replies mattered
    assert not torch.allclose(full, out["text+replies"].logits["intent"])  # the image mattered
    assert torch.equal(
        out["image+text"].logits["objects"], full_obj := out["image+text+replies"].logits["objects"]
    )
    assert full_obj.shape == (21, 7) and math.isfinite(float(full.sum()))


def test_evaluate_cli_finds_the_oracle_and_saves_the_calibrated_model(
    bench: Path, model: ContextModel, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ximgctx.cli.evaluate import main

    model.save_pretrained(tmp_path / "model")
    code = main(
        [
            "--model",
            str(tmp_path / "model"),
            "--data",
            str(bench / "test.jsonl"),
            "--val",
            str(bench / "val.jsonl"),
            "--out",
            str(tmp_path / "eval"),
            "--no-plots",
            "--batch-size",
            "8",
            "--save-calibrated",
            str(tmp_path / "calibrated"),
        ],
        command="evaluate",
    )
    assert code == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["oracle"] is True  # oracle.json beside test.jsonl, split from the file name
    assert report["tasks"]["meaning"]["modalities"]["image+text"]["oracle"] == 1.0
    # ContextBench posts carry their latents: the ceiling realised on these posts is reported beside it
    from ximgctx import load_posts
    from ximgctx.contextbench import sample_ceilings

    realised = sample_ceilings(load_posts(bench / "test.jsonl"), "test")
    row = report["tasks"]["intent"]["modalities"]["image"]
    assert row["oracle_sample"] == pytest.approx(realised["intent"]["image"])
    assert row["gap_sample"] == pytest.approx(row["accuracy"] - realised["intent"]["image"])
    assert "ceiling on these posts" in (tmp_path / "eval" / "report.md").read_text()
    calibrated = ContextModel.from_pretrained(tmp_path / "calibrated")
    assert float(calibrated.heads["intent"].temperature) == pytest.approx(
        report["tasks"]["intent"]["calibration"]["temperature"]
    )
    assert "| kept |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as missing:  # a missing model folder is an argument error
        main(["--model", str(tmp_path / "nope"), "--data", str(bench / "test.jsonl")], command="evaluate")
    assert missing.value.code == 2
    assert "argument --model: no such model folder" in capsys.readouterr().err
