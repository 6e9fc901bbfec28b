"""Steps shared by ``train`` and ``pretrain``: the Accelerator, reading and checking data, the data report.

Kept in one place so the two recipes cannot drift apart (torchtune's lesson).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, ProjectConfiguration

from ximgctx.config import TaskSpec
from ximgctx.data.post import LoadReport, Post, load_posts
from ximgctx.data.problems import split_key
from ximgctx.training.config import DataSources, TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "DataReport",
    "cpu_only_distributed",
    "flat_config",
    "load_split",
    "load_splits",
    "make_accelerator",
    "mixed_precision",
    "start_run",
]


def mixed_precision(setting: str) -> str:
    """``auto`` -> bf16 on a CUDA GPU that supports it, else ``no`` (fp32); other values pass through."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def cpu_only_distributed() -> bool:
    """Launched as several processes (torchrun, accelerate launch) on a machine without a GPU.

    Accelerate only picks its multi-CPU (gloo) mode when told ``cpu=True``; without it, every process of a
    CPU-only ``torchrun`` would silently train alone on all the data and write to the same files.
    """
    world = max(int(os.environ.get(k, "1") or 1) for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    return world > 1 and not torch.cuda.is_available()


def make_accelerator(config: TrainConfig, output_dir: Path) -> Accelerator:
    """The Accelerator of a run: same config on 1 CPU process, N CPU processes (gloo) or N GPUs.

    * collectives time out after ``collective_timeout_s``: a dead or stuck rank fails the run instead of
      hanging it for torch's default 30 minutes;
    * the sampler is Accelerate's seedable one (order = f(seed, epoch)), so every process agrees on the
      order and a resumed run sees the same sequence of posts;
    * the scheduler is stepped by the loop itself, once per optimizer step, whatever the process count.
    """
    handlers = [
        InitProcessGroupKwargs(timeout=timedelta(seconds=config.collective_timeout_s)),
        DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters),
    ]
    return Accelerator(
        cpu=cpu_only_distributed(),
        mixed_precision=mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.grad_accum_steps,
        log_with="tensorboard" if config.tensorboard else None,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, data_seed=config.seed, even_batches=True
        ),
        kwargs_handlers=handlers,
        step_scheduler_with_optimizer=False,
    )


def load_split(path: str | Path, data: DataSources, report: LoadReport) -> list[Post]:
    """Read a manifest, skipping (or raising on) malformed records as ``data.on_error`` says."""
    return list(load_posts(path, image_root=data.image_root, on_error=data.on_error, report=report))  # type: ignore[arg-type]


def flat_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as flat ``a.b.c`` scalars (TensorBoard's hparams accept nothing else)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flat_config(v, f"{prefix}{k}."))
        return out
    key = prefix[:-1]
    if isinstance(d, (int, float, str, bool)):
        out[key] = d
    elif d is None:
        out[key] = "null"
    else:
        out[key] = str(d)
    return out


@dataclass
class DataReport:
    """What the run read, skipped and masked: goes into the result, the logs and the model card."""

    train_posts: int = 0
    val_posts: int = 0
    skipped_records: dict[str, int] = field(default_factory=dict)  # split -> malformed records skipped
    skipped_examples: list[str] = field(default_factory=list)  # the first few skip reasons (file:line field)
    unlabeled: dict[str, int] = field(default_factory=dict)  # task -> training posts without a label for it
    problems: dict[str, int] = field(default_factory=dict)  # problem kind -> distinct training posts affected

    def count_unlabeled(self, posts: list[Post], tasks: list[TaskSpec]) -> None:
        self.unlabeled = {t.name: sum(1 for p in posts if t.name not in p.labels) for t in tasks}

    def add_skipped(self, split: str, report: LoadReport) -> None:
        self.skipped_records[split] = report.skipped
        self.skipped_examples += [
            f"{split}: {e}" for e in report.errors[: max(0, 5 - len(self.skipped_examples))]
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_posts": self.train_posts,
            "val_posts": self.val_posts,
            "skipped_records": dict(self.skipped_records),
            "skipped_examples": list(self.skipped_examples),
            "unlabeled": dict(self.unlabeled),
            "problems": dict(sorted(self.problems.items())),
        }

    def summary(self) -> str:
        """One readable paragraph for the log."""
        parts = [f"{self.train_posts} training posts, {self.val_posts} validation posts"]
        skipped = sum(self.skipped_records.values())
        parts.append(f"{skipped} malformed records skipped" if skipped else "no malformed record")
        by_field: dict[str, dict[str, int]] = {}  # field -> kind -> posts, from the Problem.key counts
        for key, n in self.problems.items():
            fld, kind = split_key(key)
            by_field.setdefault(fld, {})[kind] = n
        images = by_field.get("image", {})
        if images:
            parts.append(
                "trained without their image (null image embedding): "
                + ", ".join(f"{v} {k}" for k, v in sorted(images.items()))
            )
        labels = {
            f[len("labels.") :]: sum(kinds.values())
            for f, kinds in by_field.items()
            if f.startswith("labels.")
        }
        if labels:
            parts.append(
                "invalid labels ignored (task masked): "
                + ", ".join(f"{k} {v}" for k, v in sorted(labels.items()))
            )
        capped = {f: kinds["capped"] for f, kinds in by_field.items() if "capped" in kinds}
        if capped:
            parts.append("capped: " + ", ".join(f"{k} {v}" for k, v in sorted(capped.items())))
        unl = {k: v for k, v in self.unlabeled.items() if v}
        if unl:
            parts.append("unlabeled (loss masked): " + ", ".join(f"{k} {v}" for k, v in unl.items()))
        return "; ".join(parts)


def merge_problems(per_rank: list[dict[str, list[str]]]) -> dict[str, int]:
    """``{post id: [kinds]}`` from every process -> ``{kind: distinct posts}``."""
    seen: dict[str, set[str]] = {}
    for d in per_rank:
        for pid, kinds in d.items():
            seen.setdefault(pid, set()).update(kinds)
    return dict(Counter(k for kinds in seen.values() for k in kinds))


def start_run(train: TrainConfig, resolved: dict[str, Any]) -> tuple[Accelerator, Path]:
    """The Accelerator, the seed, and the resolved config written to the output folder (main process)."""
    import yaml
    from accelerate.utils import set_seed

    out = Path(train.output_dir)
    accelerator = make_accelerator(train, out)
    set_seed(train.seed)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    return accelerator, out


def load_splits(
    data: DataSources, train_posts: Any, val_posts: Any, report: DataReport, train_required: str
) -> tuple[list[Post], list[Post] | None]:
    """Posts given in memory, or read from ``data.train`` / ``data.val``, with what was skipped reported."""
    from ximgctx.config import ConfigError

    if train_posts is None:
        if not data.train:
            raise ConfigError(f"data.train is required: {train_required}")
        load_report = LoadReport()
        train_posts = load_split(data.train, data, load_report)
        report.add_skipped("train", load_report)
    if val_posts is None and data.val:
        load_report = LoadReport()
        val_posts = load_split(data.val, data, load_report)
        report.add_skipped("val", load_report)
    train_posts = list(train_posts)
    check_image_paths(train_posts, data.train or "the training posts")
    return train_posts, list(val_posts) if val_posts is not None else None


def check_image_paths(posts: list[Post], source: str, sample: int = 256) -> None:
    """Fail before training when none of the sampled image files exist (a moved dataset, a wrong image root);
    warn when some are missing. Missing images are otherwise only counted as they come, and a model trained
    without a single image looks like a model that learned little."""
    from ximgctx.config import ConfigError

    paths = [p.image for p in posts if p.image is not None]
    if not paths:
        return
    step = max(1, len(paths) // sample)
    checked = paths[::step][:sample]
    missing = [p for p in checked if not os.path.isfile(p)]
    if len(missing) == len(checked):
        raise ConfigError(
            f"{source}: none of {len(checked)} sampled image files exist (e.g. {missing[0]!r}). Relative image "
            f"paths are read relative to the manifest's folder (or data.image_root); check that the images "
            f"are where the manifest says"
        )
    if missing:
        logger.warning(
            "%s: %d of %d sampled image files are missing (e.g. %r); those posts train without their image",
            source,
            len(missing),
            len(checked),
            missing[0],
        )
