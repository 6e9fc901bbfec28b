"""PNG plots of an evaluation report: confusion matrices, reliability diagrams, ablations against ceilings.

matplotlib runs on its non-interactive Agg backend, set per figure (no ``pyplot`` global state), so plotting
works on a headless server and never opens a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ximgctx._extras import missing_extra

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as e:
    raise missing_extra(e, feature="evaluation plots (plots=False / --no-plots skips them)") from None

__all__ = ["PngFile", "plot_ablations", "plot_confusion", "plot_reliability", "write_plots"]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _matrix(ax: Any, cm: np.ndarray, labels: list[str], title: str) -> None:
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                color="white" if cm[i, j] > top / 2 else "black",
                fontsize=8,
            )


def plot_confusion(task: str, entry: dict[str, Any], path: Path) -> Path:
    """Multiclass: the C x C matrix. Multilabel: one 2 x 2 matrix (absent/present) per label."""
    metrics = entry["metrics"]
    if entry["kind"] == "multiclass":
        fig = Figure(figsize=(4.2, 3.8))
        _matrix(
            fig.add_subplot(1, 1, 1), np.asarray(metrics["confusion"]), entry["labels"], f"{task}: confusion"
        )
        return _save(fig, path)
    per_label = metrics["label_confusion"]
    labels = entry["labels"]
    fig = Figure(figsize=(2.6 * len(labels), 2.8))
    for k, label in enumerate(labels):
        _matrix(fig.add_subplot(1, len(labels), k + 1), np.asarray(per_label[label]), ["no", "yes"], label)
    fig.suptitle(f"{task}: per-label confusion")
    return _save(fig, path)


def plot_reliability(task: str, calibration: dict[str, Any], path: Path) -> Path:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for which, colour in (("before", "tab:red"), ("after", "tab:blue")):
        bins = [b for b in calibration.get(f"bins_{which}", []) if b["count"]]
        if not bins:
            continue
        ece = calibration.get(f"ece_{which}")
        label = f"{which} (ECE {ece:.3f})" if ece is not None else which
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            color=colour,
            label=label,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{task}: reliability (T={calibration.get('temperature', 1.0):.2f})")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_ablations(report: dict[str, Any], path: Path) -> Path:
    """Accuracy per kept-modality key for every task, the oracle ceiling drawn beside it."""
    tasks = list(report["tasks"])
    fig = Figure(figsize=(4.6 * len(tasks), 3.6))
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), k + 1)
        rows = report["tasks"][task]["modalities"]
        keys = list(rows)
        x = np.arange(len(keys))
        acc = [rows[key]["accuracy"] or 0.0 for key in keys]
        ax.bar(x - 0.2, acc, width=0.4, label="model")
        if any(rows[key].get("oracle") is not None for key in keys):
            ax.bar(
                x + 0.2,
                [rows[key].get("oracle") or 0.0 for key in keys],
                width=0.4,
                label="oracle ceiling",
                color="lightgrey",
                edgecolor="grey",
            )
        ax.set_xticks(
            x,
            [key.replace("image", "img").replace("replies", "rep").replace("text", "txt") for key in keys],
            rotation=45,
            ha="right",
        )
        ax.set_ylim(0, 1.05)
        ax.set_title(task)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every plot of ``report`` into ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task, entry in report["tasks"].items():
        if entry["metrics"].get("n"):
            written.append(plot_confusion(task, entry, out_dir / f"confusion_{task}.png"))
            written.append(plot_reliability(task, entry["calibration"], out_dir / f"reliability_{task}.png"))
    if len(next(iter(report["tasks"].values()))["modalities"]) > 1:
        written.append(plot_ablations(report, out_dir / "ablations.png"))
    return written


class PngFile:
    """A PNG on disk that displays itself in Jupyter (``_repr_png_``), without importing IPython."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _repr_png_(self) -> bytes:
        return self.path.read_bytes()

    def __repr__(self) -> str:
        return f"PngFile({str(self.path)!r})"
