"""Evaluation: per-task metrics, modality ablations, calibration, and reports with plots.

from ximgctx.evaluation import evaluate, load_oracle
report = evaluate(model, "data/test.jsonl", val_posts="data/val.jsonl",
                  oracle=load_oracle("data/oracle.json", "test"), out_dir="runs/eval")
report["tasks"]["intent"]["modalities"]["image+text"]   # {"accuracy": ..., "oracle": ..., ...}

from ximgctx.evaluation import gate, score_model       # a candidate against the serving model
verdict = gate(score_model(serving, holdout, val_posts=val), score_model(candidate, holdout, val_posts=val))
"""

from ximgctx.evaluation.calibration import expected_calibration_error, fit_temperature, fit_thresholds
from ximgctx.evaluation.gate import GateRule, Scorecard, Verdict, gate
from ximgctx.evaluation.metrics import task_metrics
from ximgctx.evaluation.predict import ABLATION_KEYS, FULL, PostDataset, Predictions, drop_for, predict
from ximgctx.evaluation.report import calibrate, evaluate, load_oracle, to_markdown, write_report
from ximgctx.evaluation.scorecard import score_model, score_model_details

__all__ = [
    "ABLATION_KEYS",
    "FULL",
    "GateRule",
    "PostDataset",
    "Predictions",
    "Scorecard",
    "Verdict",
    "calibrate",
    "drop_for",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "fit_thresholds",
    "gate",
    "load_oracle",
    "predict",
    "score_model",
    "score_model_details",
    "task_metrics",
    "to_markdown",
    "write_report",
]
