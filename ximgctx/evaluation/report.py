"""``evaluate``: metrics, modality ablations, calibration and the report files.

``evaluate(model, posts, val_posts=..., oracle=..., out_dir=...)`` returns the report as a dict and, with
``out_dir``, writes ``report.json``, ``report.md`` and PNG plots there. For each task and each kept-modality
key the report holds the model's ``accuracy`` (exact match for multilabel tasks) next to the ``oracle``
ceiling under the same key, when an oracle is given (ContextBench writes one beside its data).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ximgctx._extras import require
from ximgctx.data.dataset import PostDataset
from ximgctx.data.io import load_posts
from ximgctx.data.record import LoadReport, Post
from ximgctx.evaluation.calibration import expected_calibration_error, fit_temperature, fit_thresholds
from ximgctx.evaluation.metrics import label_arrays, task_loss, task_metrics
from ximgctx.evaluation.predict import ABLATION_KEYS, FULL, predict

logger = logging.getLogger(__name__)

_PLOTS = "evaluation plots (plots=False / --no-plots skips them)"  # a feature of the plots extra

__all__ = ["calibrate", "evaluate", "load_oracle", "to_markdown", "write_report"]

#: the metric shown next to accuracy in ablation rows, per task kind
_SECOND = {"multiclass": "macro_f1", "multilabel": "map"}


def load_oracle(path: str | Path, split: str) -> dict[str, dict[str, float]]:
    """ContextBench ceilings ``{task: {key: value}}`` of ``split`` from ``oracle.json`` (or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "oracle.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    ceilings = data.get("ceilings", {})
    if split not in ceilings:
        raise KeyError(f"{path}: no ceilings for split {split!r}; it has {sorted(ceilings)}")
    return ceilings[split]


def _loader(
    model: Any,
    posts: Sequence[Post] | PostDataset,
    batch_size: int,
    num_workers: int,
    accelerator: Any | None,
) -> DataLoader:
    loader = DataLoader(
        posts if isinstance(posts, PostDataset) else PostDataset(posts),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=model.processor,
        num_workers=num_workers,
    )
    return accelerator.prepare_data_loader(loader) if accelerator is not None else loader


def _as_posts(posts: Sequence[Post] | str | Path) -> tuple[Sequence[Post] | PostDataset, LoadReport]:
    from ximgctx.data.shards import is_shard_source

    report = LoadReport()
    if isinstance(posts, (str, Path)) and is_shard_source(posts):  # images stay in the shards until read
        from ximgctx.data.shard_dataset import ShardPostDataset

        return ShardPostDataset(posts, report=report), report
    if isinstance(posts, (str, Path)):
        return list(load_posts(posts, on_error="skip", report=report)), report
    return list(posts), report


@torch.no_grad()
def calibrate(
    model: Any,
    val_posts: Sequence[Post] | PostDataset,
    *,
    threshold_objective: str = "accuracy",
    batch_size: int = 64,
    num_workers: int = 0,
    accelerator: Any | None = None,
) -> dict[str, dict[str, Any]]:
    """Fit each task's temperature (and each multilabel label's threshold) on validation posts.

    Sets ``model.heads[task].temperature`` and ``.thresholds`` in place, so they are saved with the model.
    Returns ``{task: {"temperature", "thresholds", "ece_before", "ece_after", "n"}}`` measured on the
    validation posts.
    """
    loader = _loader(model, val_posts, batch_size, num_workers, accelerator)
    pv = predict(model, loader, keys=(FULL,), accelerator=accelerator)[FULL]
    out: dict[str, dict[str, Any]] = {}
    for spec in model.config.tasks:
        head = model.heads[spec.name]
        z, t, m = pv.logits[spec.name], pv.targets[spec.name], pv.label_mask[spec.name]
        temp = fit_temperature(spec, z, t, m)
        head.temperature.fill_(temp)
        probs_before, truth = label_arrays(spec, z, t, m, 1.0)
        probs_after, _ = label_arrays(spec, z, t, m, temp)
        if spec.kind == "multilabel":
            head.thresholds.copy_(torch.as_tensor(fit_thresholds(probs_after, truth, threshold_objective)))
        out[spec.name] = {
            "n": int(m.sum()),
            "temperature": temp,
            "thresholds": head.thresholds.tolist() if spec.kind == "multilabel" else None,
            "ece_before": expected_calibration_error(spec, probs_before, truth)[0],
            "ece_after": expected_calibration_error(spec, probs_after, truth)[0],
        }
    return out


def _ablation_row(
    spec: Any,
    metrics: dict[str, Any],
    oracle: dict[str, dict[str, float]] | None,
    key: str,
    sample_oracle: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"accuracy": metrics.get("accuracy")}
    second = _SECOND[spec.kind]
    row[second] = metrics.get(second)
    ceiling = (oracle or {}).get(spec.name, {}).get(key)
    row["oracle"] = ceiling
    row["gap"] = None if ceiling is None or row["accuracy"] is None else row["accuracy"] - ceiling
    if sample_oracle is not None:
        realised = sample_oracle.get(spec.name, {}).get(key)
        row["oracle_sample"] = realised
        row["gap_sample"] = (
            None if realised is None or row["accuracy"] is None else row["accuracy"] - realised
        )
    return row


@torch.no_grad()
def _task_entry(
    model: Any,
    spec: Any,
    preds: dict[str, Any],
    keys: list[str],
    main_key: str,
    oracle: dict[str, dict[str, float]] | None,
    sample_oracle: dict[str, dict[str, float]] | None,
    calibration_fit: dict[str, Any] | None,
) -> dict[str, Any]:
    """One task's part of the report: metrics of the full model, calibration before and after the
    temperature, thresholds, and one row per kept-modality key."""
    head = model.heads[spec.name]
    temp = float(head.temperature)
    thr = head.thresholds.cpu().numpy().astype(np.float64) if spec.kind == "multilabel" else None
    p = preds[main_key]
    z, t, m = p.logits[spec.name], p.targets[spec.name], p.label_mask[spec.name]
    metrics = task_metrics(spec, z, t, m, temperature=temp, thresholds=thr)
    probs_before, truth = label_arrays(spec, z, t, m, 1.0)
    probs_after, _ = label_arrays(spec, z, t, m, temp)
    ece_b, bins_b = expected_calibration_error(spec, probs_before, truth)
    ece_a, bins_a = expected_calibration_error(spec, probs_after, truth)
    rows = {}
    for key in keys:
        pk = preds[key]
        mk = metrics
        if key != main_key:
            zk, tk, mk_mask = pk.logits[spec.name], pk.targets[spec.name], pk.label_mask[spec.name]
            mk = task_metrics(spec, zk, tk, mk_mask, temperature=temp, thresholds=thr)
        rows[key] = _ablation_row(spec, mk, oracle, key, sample_oracle)
    return {
        "kind": spec.kind,
        "labels": list(spec.labels),
        "metrics": metrics,
        "loss": task_loss(spec, z, t, m) if int(m.sum()) else None,
        "calibration": {
            "temperature": temp,
            "fitted_on": "validation" if calibration_fit else "as saved in the model",
            "validation": (calibration_fit or {}).get(spec.name),
            "ece_before": ece_b,
            "ece_after": ece_a,
            "bins_before": bins_b,
            "bins_after": bins_a,
        },
        "thresholds": None if thr is None else dict(zip(spec.labels, thr.tolist(), strict=True)),
        "modalities": rows,
    }


def evaluate(
    model: Any,
    posts: Sequence[Post] | str | Path,
    *,
    val_posts: Sequence[Post] | str | Path | None = None,
    oracle: dict[str, dict[str, float]] | None = None,
    sample_oracle: dict[str, dict[str, float]] | None = None,
    out_dir: str | Path | None = None,
    keys: Sequence[str] = ABLATION_KEYS,
    name: str = "eval",
    batch_size: int = 64,
    num_workers: int = 0,
    threshold_objective: str = "accuracy",
    plots: bool = True,
    accelerator: Any | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``posts`` with modality ablations and calibration.

    Args:
        model: a ``ContextModel`` (not wrapped); its temperatures and thresholds are used as they are,
            unless ``val_posts`` are given, which re-fits them first (and leaves them set on the model).
        posts: labeled posts, or a manifest path (malformed records are skipped and counted).
        val_posts: validation posts for temperature scaling and per-label thresholds.
        oracle: ``{task: {key: ceiling}}`` to report beside the model's accuracy (``load_oracle``).
        sample_oracle: the same ceilings realised on these very posts (ContextBench's ``sample_ceilings``),
            reported as ``oracle_sample`` with ``gap_sample``: what a model can be held to on a finite set.
        out_dir: where ``report.json``, ``report.md`` and the PNG plots go (main process only).
        keys: kept-modality keys to evaluate; every combination by default.
        name: a label for the evaluated set (``test``, ``compositional``...).
        accelerator: shards the posts across processes and gathers every example exactly once.

    Returns:
        The report dict (the content of ``report.json``).
    """
    if plots and out_dir is not None:  # before the evaluation, not after it
        require("matplotlib", feature=_PLOTS)
    test, load_report = _as_posts(posts)
    oracle_missing = None if oracle is not None else _missing_ceilings(test, posts)
    if oracle_missing:
        warnings.warn(oracle_missing, UserWarning, stacklevel=2)
    if accelerator is not None:
        model.to(accelerator.device)
    was_training = model.training
    model.eval()
    calibration_fit = None
    if val_posts is not None:
        val, _ = _as_posts(val_posts)
        calibration_fit = calibrate(
            model,
            val,
            threshold_objective=threshold_objective,
            batch_size=batch_size,
            num_workers=num_workers,
            accelerator=accelerator,
        )
    keys = list(keys)
    main_key = FULL if FULL in keys else keys[-1]
    preds = predict(
        model, _loader(model, test, batch_size, num_workers, accelerator), keys=keys, accelerator=accelerator
    )
    model.train(was_training)

    tasks = {
        spec.name: _task_entry(model, spec, preds, keys, main_key, oracle, sample_oracle, calibration_fit)
        for spec in model.config.tasks
    }
    report = {
        "name": name,
        "posts": len(test),
        "skipped_records": load_report.skipped,
        "problems": dict(sorted(preds[main_key].problems.items())),
        "keys": keys,
        "full_key": main_key,
        "oracle": oracle is not None,
        # why ContextBench posts have no ceilings beside them (a governed copy has no oracle.json), or None
        "oracle_missing": oracle_missing,
        "tasks": tasks,
    }
    if out_dir is not None and (accelerator is None or accelerator.is_main_process):
        write_report(report, Path(out_dir), plots=plots)
    return report


def _missing_ceilings(test: Sequence[Post] | PostDataset, source: Any, sample: int = 64) -> str | None:
    """A note when ContextBench posts (``meta.source``) are evaluated without their oracle ceilings: what a
    governed copy, written to a folder without ``oracle.json``, silently lost."""
    try:
        first = [test[i] for i in range(min(len(test), sample))]
    except (TypeError, IndexError, NotImplementedError):  # a dataset without random access
        return None
    if not any(isinstance(p, Post) and p.meta.get("source") == "contextbench" for p in first):
        return None
    where = f"{source}: " if isinstance(source, (str, Path)) else ""
    return (
        f"{where}these are ContextBench posts but no oracle ceilings were given, so the report has no "
        "ceiling beside the model's accuracy (a governed copy has no oracle.json beside it). Pass the "
        "generated one: ximgctx evaluate --oracle data/cb/oracle.json --oracle-split test, or "
        "evaluate(..., oracle=load_oracle('data/cb/oracle.json', 'test'))"
    )


def _fmt(x: Any, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def to_markdown(report: dict[str, Any]) -> str:
    """A readable summary: per-task metrics, calibration, and the ablation table beside the ceilings."""
    lines = [
        f"# Evaluation: {report['name']}",
        "",
        f"{report['posts']} posts; skipped records: {report['skipped_records']}; "
        f"problems: {report['problems'] or 'none'}.",
        *(["", f"**No ceilings**: {report['oracle_missing']}"] if report.get("oracle_missing") else []),
        "",
        "## Metrics (all modalities)",
        "",
        "| task | n | accuracy | macro-F1 | micro-F1 | mAP | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, e in report["tasks"].items():
        m = e["metrics"]
        lines.append(
            f"| {task} | {m['n']} | {_fmt(m.get('accuracy'))} | {_fmt(m.get('macro_f1'))} | "
            f"{_fmt(m.get('micro_f1'))} | {_fmt(m.get('map'))} | {_fmt(e['loss'], pct=False)} |"
        )
    lines += [
        "",
        "Accuracy is exact-match (every label right) for multilabel tasks. Percentages.",
        "",
        "## Calibration",
        "",
        "| task | temperature | fitted on | ECE before | ECE after |",
        "|---|---|---|---|---|",
    ]
    for task, e in report["tasks"].items():
        c = e["calibration"]
        lines.append(
            f"| {task} | {c['temperature']:.3f} | {c['fitted_on']} | {_fmt(c['ece_before'], False)} | "
            f"{_fmt(c['ece_after'], False)} |"
        )
    lines += ["", "## AUROC per label", ""]
    for task, e in report["tasks"].items():
        auroc = e["metrics"].get("auroc") or {}
        lines.append(f"- **{task}**: " + ", ".join(f"{k} {_fmt(v, False)}" for k, v in auroc.items()))
    lines += [
        "",
        "## Modality ablations",
        "",
        "Accuracy with only the listed modalities kept (the others masked with the model's null embeddings)"
        + (", beside the oracle ceiling for the same modalities." if report["oracle"] else "."),
        "",
    ]
    tasks = list(report["tasks"])
    sampled = report["oracle"] and any(
        "oracle_sample" in row for e in report["tasks"].values() for row in e["modalities"].values()
    )
    columns = ["", " ceiling", " ceiling on these posts"][: (1 + report["oracle"] + sampled)]
    header = "| kept | " + " | ".join(f"{t}{c}" for t in tasks for c in columns) + " |"
    lines += [header, "|---|" + "---|" * (len(tasks) * len(columns))]
    for key in report["keys"]:
        cells = []
        for t in tasks:
            row = report["tasks"][t]["modalities"][key]
            cells.append(_fmt(row["accuracy"]))
            if report["oracle"]:
                cells.append(_fmt(row["oracle"]))
            if sampled:
                cells.append(_fmt(row.get("oracle_sample")))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if sampled:
        lines += [
            "",
            "The ceiling is the Bayes-optimal accuracy in expectation; the ceiling on these posts is the "
            "same "
            "rule scored on this set, which scatters around it by sampling error.",
        ]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, *, plots: bool = True) -> Path:
    """``report.json``, ``report.md`` and (``plots``) the PNGs into ``out_dir``; returns the JSON path."""
    if plots:
        require("matplotlib", feature=_PLOTS)  # before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(to_markdown(report), encoding="utf-8")
    if plots:
        from ximgctx.evaluation.plots import write_plots

        write_plots(report, out_dir)
    return out_dir / "report.json"
