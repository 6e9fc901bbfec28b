"""Steps shared by ``train`` and ``pretrain``: the Accelerator, reading and checking data, the data report.

Kept in one place so the two recipes cannot drift apart (torchtune's lesson).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, overload

from accelerate import Accelerator
from accelerate.utils import is_tensorboard_available

import ximgctx._distributed as _distributed
from ximgctx._artifacts import check_output_folder, folder_lock, output_errors
from ximgctx._extras import MissingExtraError
from ximgctx.config import TaskSpec, flatten_config
from ximgctx.data.io import load_posts
from ximgctx.data.problems import split_key
from ximgctx.data.record import LoadReport, Post
from ximgctx.errors import InputError, OutputError
from ximgctx.training.config import DataSources, TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "DataReport",
    "StreamSplit",
    "count_problems",
    "hparams",
    "load_split",
    "load_splits",
    "make_accelerator",
    "note_problems",
    "start_run",
    "stream_loader",
    "write_run_config",
]


def make_accelerator(config: TrainConfig, output_dir: Path) -> Accelerator:
    """The Accelerator of a run (see :func:`ximgctx._distributed.make_accelerator`): the config's collective
    timeout, precision, accumulation and tracker; Accelerate's seedable sampler seeded with
    ``config.seed``. Without TensorBoard installed (the ``tensorboard`` extra) the run goes on without its
    tracker, after one warning naming the extra; the run's own logs (samples, metrics, checkpoints) stay."""
    log_with = "tensorboard" if config.tensorboard else None
    if log_with and not is_tensorboard_available():
        missing = MissingExtraError("train.tensorboard (TensorBoard logs)", "tensorboard", "tensorboard")
        logger.warning("%s; training goes on without them (train.tensorboard: false silences this)", missing)
        log_with = None
    return _distributed.make_accelerator(
        timeout_s=config.collective_timeout_s,
        precision=config.mixed_precision,
        grad_accum_steps=config.grad_accum_steps,
        log_with=log_with,
        project_dir=output_dir,
        data_seed=config.seed,
        find_unused_parameters=config.find_unused_parameters,
    )


def load_split(path: str | Path, data: DataSources, report: LoadReport) -> list[Post]:
    """Read a manifest (a shard folder too, whole: ``load_posts`` reads both), skipping (or raising on)
    malformed records as ``data.on_error`` says."""
    try:
        # DataConfig.__post_init__ admits only "skip" and "raise" for the str field
        on_error = cast('Literal["raise", "skip"]', data.on_error)
        return list(load_posts(path, image_root=data.image_root, on_error=on_error, report=report))
    except FileNotFoundError as e:
        raise InputError(str(e)) from None


@dataclass
class StreamSplit:
    """A training split that is streamed from a shard folder instead of read into memory."""

    source: str  # the shard folder (data.train)
    shards: list[Any]  # its ximgctx.data.shards.ShardInfo, in name order
    sample: list[Post]  # the first few posts of some shards: the governance check before training

    @property
    def count(self) -> int:
        """Records in the split, from the shard index."""
        return sum(s.count for s in self.shards)


def open_stream(path: str | Path, per_shard: int = 4, max_shards: int = 64) -> StreamSplit:
    """The shards of ``path`` and a small sample of their posts (the first ``per_shard`` posts of up to
    ``max_shards`` shards spread over the folder), without reading the folder."""
    from ximgctx.data.shards import list_shards, read_shard

    shards = list_shards(path)
    step = max(1, len(shards) // max_shards)
    sample: list[Post] = []
    for shard in shards[::step][:max_shards]:
        records = read_shard(shard, verify=False)
        for i, (_, item) in enumerate(records):
            if isinstance(item, Post):
                sample.append(item)
            if i + 1 >= per_shard:
                break
        records.close()
    return StreamSplit(str(path), shards, sample)


def stream_loader(
    split: StreamSplit, processor: Any, config: TrainConfig, data: DataSources, accelerator: Accelerator
) -> Any:
    """This process's :class:`~ximgctx.data.streaming.StreamLoader` over ``split``: split by (rank, worker),
    shuffled, the same number of batches on every process. Posts without the governance marker are kept out
    (as problem posts) unless ``data.allow_ungoverned``."""
    from ximgctx.data.problems import Problem
    from ximgctx.data.streaming import StreamCollate, StreamingPosts, StreamLoader
    from ximgctx.governance.check import is_governed

    def check(post: Post) -> Problem | None:
        if data.allow_ungoverned or is_governed(post):
            return None
        return Problem("meta", "ungoverned", "no governance marker: kept out of training")

    dataset = StreamingPosts(
        split.shards,
        seed=config.seed,
        buffer_size=data.shuffle_buffer,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        workers=config.num_workers,
    )
    return StreamLoader(
        dataset,
        StreamCollate(processor, check),
        batch_size=config.batch_size,
        grad_accum_steps=config.grad_accum_steps,
        prefetch_factor=config.prefetch_factor,
        device=accelerator.device,
        any_done=lambda flag: _distributed.any_process(accelerator, flag),
    )


def hparams(resolved: dict[str, Any]) -> dict[str, int | float | str | bool]:
    """The resolved config as flat ``a.b.c`` scalars (TensorBoard's hparams accept nothing else): None is
    ``"null"``, a list its ``str``."""
    return {
        k: v if isinstance(v, (int, float, str, bool)) else "null" if v is None else str(v)
        for k, v in flatten_config(resolved).items()
    }


@dataclass
class DataReport:
    """What the run read, skipped and masked: goes into the result, the logs and the model card."""

    train_posts: int = 0
    val_posts: int = 0
    skipped_records: dict[str, int] = field(default_factory=dict)  # split -> malformed records skipped
    skipped_examples: list[str] = field(default_factory=list)  # the first few skip reasons (file:line field)
    unlabeled: dict[str, int] = field(default_factory=dict)  # task -> training posts without a label for it
    problems: dict[str, int] = field(default_factory=dict)  # problem kind -> distinct training posts affected
    # split -> task -> posts whose label does not fit the task, dropped (data.invalid_labels=drop)
    dropped_labels: dict[str, dict[str, int]] = field(default_factory=dict)

    def count_unlabeled(self, posts: list[Post], tasks: list[TaskSpec]) -> None:
        self.unlabeled = {t.name: sum(1 for p in posts if t.name not in p.labels) for t in tasks}

    def check_labels(self, split: str, posts: list[Post], tasks: list[TaskSpec], data: Any) -> None:
        """Refuse (``data.invalid_labels=error``) or count (``drop``) labels that do not fit their task."""
        from ximgctx.data.processor import check_labels

        source = (data.train if split == "train" else data.val) or f"the {split} posts"
        counts = check_labels(posts, tasks, invalid_labels=data.invalid_labels, source=str(source))
        if counts:
            self.dropped_labels[split] = counts
            logger.warning(
                "%s: labels not fitting their task dropped (data.invalid_labels=drop): %s", split, counts
            )

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
            "dropped_labels": {k: dict(v) for k, v in self.dropped_labels.items()},
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
        for split, counts in sorted(self.dropped_labels.items()):
            parts.append(
                f"{split} labels not fitting their task dropped (data.invalid_labels=drop): "
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            )
        unl = {k: v for k, v in self.unlabeled.items() if v}
        if unl:
            parts.append("unlabeled (loss masked): " + ", ".join(f"{k} {v}" for k, v in unl.items()))
        return "; ".join(parts)


def note_problems(seen: dict[str, set[str]], ids: Sequence[str], problems: Sequence[Sequence[Any]]) -> None:
    """Record the problem kinds of each post of a training batch in ``seen`` (post id -> kinds).

    The one place where a batch's problems become kinds; a post seen again (another epoch, a resumed run)
    adds nothing, so :func:`count_problems` counts every problem once over the whole run.
    """
    for pid, plist in zip(ids, problems, strict=True):
        if plist:
            seen.setdefault(pid, set()).update(p.key for p in plist)


def count_problems(per_rank: Iterable[Mapping[str, Iterable[str]]]) -> dict[str, int]:
    """``{post id: kinds}`` from every process (and earlier runs) -> ``{kind: distinct posts}``."""
    seen: dict[str, set[str]] = {}
    for d in per_rank:
        for pid, kinds in d.items():
            seen.setdefault(pid, set()).update(kinds)
    return dict(Counter(k for kinds in seen.values() for k in kinds))


def prepare_output(
    out: Path, *, resume: str | Path | None, overwrite: bool, inputs: Iterable[str | None] = ()
) -> None:
    """Refuse a fresh run into a used ``output_dir`` (its old checkpoints would be resumed later as if they
    were this run's); with ``overwrite``, empty it first. A folder that holds an input, or the checkpoint to
    resume from, is never emptied."""
    if overwrite and resume is not None:
        inside = str(resume) == "latest" or Path(resume).resolve().is_relative_to(out.resolve())
        if inside:
            raise OutputError(
                f"{out}: --overwrite would delete the checkpoint --resume {resume} continues from; "
                f"use one of the two"
            )
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise OutputError(
            f"{out}: train.output_dir exists and is not a folder; choose another train.output_dir"
        )
    if overwrite:
        check_output_folder(out, "training-run", overwrite=True, inputs=inputs)
        with output_errors(out):
            for entry in sorted(out.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        return
    if resume is not None:
        return
    entries = sorted(p.name for p in out.iterdir())
    raise OutputError(
        f"{out}: train.output_dir already holds files of another run (e.g. {entries[:3]}); continue that run "
        f"with --resume latest, replace it with --overwrite, or choose another train.output_dir"
    )


@contextlib.contextmanager
def start_run(
    train: TrainConfig, *, resume: str | Path | None, overwrite: bool, inputs: Iterable[str | None] = ()
) -> Iterator[tuple[Accelerator, Path]]:
    """The Accelerator and the seed of a run, with its output folder checked and locked (main process) for the
    whole run: a second run on the same folder fails at once, naming the first one's pid."""
    from accelerate.utils import set_seed

    out = Path(train.output_dir)
    accelerator = make_accelerator(train, out)
    set_seed(train.seed)
    with contextlib.ExitStack() as stack:
        error: OutputError | None = None
        if accelerator.is_main_process:
            try:
                stack.enter_context(folder_lock(out))
                prepare_output(out, resume=resume, overwrite=overwrite, inputs=inputs)
                with output_errors(out):
                    out.mkdir(parents=True, exist_ok=True)
            except OutputError as e:
                error = e
        if _distributed.any_process(accelerator, error is not None):
            raise error or OutputError(f"{out}: the main process could not take this output folder")
        yield accelerator, out


@overload
def load_splits(
    data: DataSources,
    train_posts: Any,
    val_posts: Any,
    report: DataReport,
    train_required: str,
    *,
    stream: Literal[False] = False,
) -> tuple[list[Post], list[Post] | None]: ...


@overload
def load_splits(
    data: DataSources,
    train_posts: Any,
    val_posts: Any,
    report: DataReport,
    train_required: str,
    *,
    stream: bool,
) -> tuple[list[Post] | StreamSplit, list[Post] | None]: ...


def load_splits(
    data: DataSources,
    train_posts: Any,
    val_posts: Any,
    report: DataReport,
    train_required: str,
    *,
    stream: bool = False,
) -> tuple[list[Post] | StreamSplit, list[Post] | None]:
    """Posts given in memory, or read from ``data.train`` / ``data.val``, with what was skipped reported.
    With ``stream``, a ``data.train`` that is a shard folder comes back as a :class:`StreamSplit` (read as
    the run goes, never held); a small JSONL / Parquet manifest is still read into memory."""
    from ximgctx.config import ConfigError
    from ximgctx.data.shards import is_shard_source

    sources = data.train_sources
    if train_posts is None and stream and len(sources) == 1 and is_shard_source(sources[0]):
        split = open_stream(sources[0])
        if val_posts is None and data.val:
            load_report = LoadReport()
            val_posts = load_split(data.val, data, load_report)
            report.add_skipped("val", load_report)
        return split, list(val_posts) if val_posts is not None else None
    if train_posts is None:
        if not sources:
            raise ConfigError(f"data.train is required: {train_required}")
        load_report = LoadReport()
        # several sources are read one after the other (shard folders whole), each resolving its own images
        train_posts = [post for source in sources for post in load_split(source, data, load_report)]
        report.add_skipped("train", load_report)
    if val_posts is None and data.val:
        load_report = LoadReport()
        val_posts = load_split(data.val, data, load_report)
        report.add_skipped("val", load_report)
    train_posts = list(train_posts)
    check_image_paths(train_posts, data.train_name or "the training posts")
    return train_posts, list(val_posts) if val_posts is not None else None


def check_image_paths(posts: list[Post], source: str, sample: int = 256) -> None:
    """Fail before training when none of the sampled image files exist (a moved dataset, a wrong image root);
    warn when some are missing. Missing images are otherwise only counted as they come, and a model trained
    without a single image looks like a model that learned little."""
    from ximgctx.config import ConfigError

    paths = [p.image for p in posts if isinstance(p.image, str)]  # bytes and PIL images are not files
    if not paths:
        return
    step = max(1, len(paths) // sample)
    checked = paths[::step][:sample]
    missing = [p for p in checked if not os.path.isfile(p)]
    if len(missing) == len(checked):
        raise ConfigError(
            f"{source}: none of {len(checked)} sampled image files exist (e.g. {missing[0]!r}). Relative "
            "image "
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


def write_run_config(out: Path, resolved: dict[str, Any]) -> None:
    """The run's resolved config as ``output_dir/config.yaml`` (main process; atomic)."""
    import yaml

    from ximgctx._artifacts import atomic_output

    with atomic_output(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")


def training_authors(train_data: Any) -> bytes:
    """The bytes of the model's author set (:data:`ximgctx.governance.authors.MODEL_AUTHORS_FILE`): the
    digests, keyed by the operator's governance key (``$XIMGCTX_GOVERNANCE_KEY``), of every author whose words
    ``train_data`` holds (post, quoted and reply authors), so ``ximgctx purge --model`` can say whether an
    opted-out author trained the model. A streamed split is read once more for it (records only; what cannot
    be read is skipped, as training skips it). Without an operator key the set is keyed by a random one that
    nobody can match later, and a warning says so."""
    from ximgctx.governance.authors import author_digests_of, model_authors_bytes
    from ximgctx.governance.keys import ENV_VAR, load_key

    key, held = load_key()
    if isinstance(train_data, StreamSplit):
        posts: Iterable[Post] = load_posts(train_data.source, streaming=True, on_error="skip")
    else:
        posts = train_data
    digests = author_digests_of(posts, key)
    if not held:
        logger.warning(
            "no governance key ($%s): the model's author set (%d authors) is keyed by a random key, so "
            "`ximgctx purge --model` can never tell whether an opted-out author trained it",
            ENV_VAR,
            len(digests),
        )
    return model_authors_bytes(digests, key)
