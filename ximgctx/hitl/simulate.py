"""``simulate_labeling``: the labeling loop on ContextBench with simulated noisy labelers.

Per strategy, starting from the same model and the same random first batch:

1. choose ``per_round`` unlabeled posts of the pool (round 0: at random, for every strategy alike);
2. simulated labelers (:class:`~ximgctx.hitl.LabelerPool`: honest ones right with ``accuracy``, a share of
   spammers answering at random) vote on them, ``votes_per_post`` each;
3. every vote so far is aggregated (Dawid–Skene by default; ``soft`` keeps the posteriors as soft labels);
4. the model is fine-tuned on the labeled posts, continuing from the previous round's weights;
5. it is evaluated on the test split: accuracy per task (exact match for multilabel tasks) and their mean.

``curve.json`` holds, per strategy and round, the labels spent (votes), posts labeled, test accuracy, and the
accuracy of the aggregated training labels against the truth; ``curve.png`` plots test accuracy against
labels spent.

**How the model is fine-tuned, and why not with ``ximgctx.training.train``** (the machinery lives in
:mod:`ximgctx.hitl.cached`, shared with the drift simulation). The encoder is frozen (the
quickstart's tiny CLIP, random or with pretrained weights given as ``encoder``), so its modality embeddings
never change: they are computed once for the pool and the test split (``ContextModel.encode``), cached under
``out_dir/features``, and each round trains the fusion module and heads on them (``model.fusion`` ->
``model.heads`` -> fine-tuning's own loss, ``ximgctx.training.finetune.supervised_loss``, so task weights
apply; AdamW from ``ximgctx.training.optim.build_optimizer``).
Fine-tuning the encoder round by round, as ``train()`` would (an Accelerate run writing checkpoints and a
model per call), and re-scoring the pool with it, costs many times more per strategy than training on cached
features. Every strategy gets the same model, features, first batch, crowd and budget.

What a frozen tiny encoder can learn bounds the curve: ``meaning`` needs an emblem that the frozen image
features of the tiny encoder do not carry, so it stays near the majority-class rate, while ``intent`` improves
with labels. Hence the default task ``intent``. Contrastive pretraining (``pretrain_epochs``) is off by
default.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ximgctx._extras import require
from ximgctx.config import EncoderConfig, TaskSpec
from ximgctx.data.io import load_posts
from ximgctx.data.processor import encode_label
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError
from ximgctx.hitl.aggregate import METHODS, aggregate_votes
from ximgctx.hitl.cached import Features, build_model, cached_features, evaluate, finetune, predict
from ximgctx.hitl.labelers import LabelerPool
from ximgctx.hitl.select import STRATEGIES, choose, dropout_on
from ximgctx.models.context_model import ContextModel

logger = logging.getLogger(__name__)

__all__ = ["SimulationConfig", "simulate_labeling"]


@dataclass
class SimulationConfig:
    """Every setting of the simulated labeling loop."""

    out_dir: str  # curve.json, curve.png, features and (unless data_dir) the generated data go here
    rounds: int = 5  # labeling rounds; round 0 picks at random for every strategy
    per_round: int = 100  # posts sent to labelers per round
    labelers: int = 20  # simulated people
    votes_per_post: int = 3  # labelers asked per post
    # an honest labeler's chance of a correct answer (the whole set for multilabel tasks)
    accuracy: float = 0.7
    spammers: float = 0.2  # share of labelers answering at random
    strategies: list[str] = field(default_factory=lambda: ["random", "entropy", "diverse"])  # compared
    # vote aggregation: majority | dawid_skene | soft (Dawid-Skene posteriors as targets)
    method: str = "soft"
    tasks: list[str] = field(default_factory=lambda: ["intent"])  # ContextBench tasks the labelers answer
    n_pool: int = 4000  # unlabeled posts to choose from (the quickstart's n_train)
    n_test: int = 1000  # test posts (the quickstart's n_test)
    image_size: int = 64  # ContextBench image side (the quickstart's)
    arch: str = "ximgctx-tiny-rn"  # the encoder (the quickstart's)
    encoder: str | None = None  # pretrained encoder weights (a pretrain run's open_clip_model.safetensors)
    # without `encoder`: epochs of contrastive pretraining on the pool (0: random init)
    pretrain_epochs: int = 0
    hidden_dim: int = 128  # fusion width (the quickstart's)
    fusion_layers: int = 2  # attention fusion layers (the quickstart's)
    dropout: float = 0.1  # fusion dropout (training and mc_dropout's samples)
    epochs: int = 10  # passes over the labeled posts per round
    batch_size: int = 32  # posts per optimizer step
    lr: float = 2e-3  # AdamW learning rate of fusion and heads
    mc_samples: int = 8  # mc_dropout passes
    data_dir: str | None = None  # an existing ContextBench folder with train.jsonl and test.jsonl
    seed: int = 0  # seeds the data, the crowd, the model and every choice
    # torch intra-op threads; None: torch's default (1 is faster on a busy machine)
    threads: int | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ConfigError(
                f"strategies must be a non-empty subset of {list(STRATEGIES)}, got {self.strategies!r}"
            )
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.pretrain_epochs < 0:
            raise ConfigError(f"pretrain_epochs must be >= 0, got {self.pretrain_epochs!r}")
        for name in ("rounds", "per_round", "epochs", "batch_size", "n_pool", "n_test"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.rounds * self.per_round > self.n_pool:
            raise ConfigError(
                f"rounds x per_round = {self.rounds * self.per_round} posts, more than n_pool={self.n_pool}"
            )


def _label_accuracy(
    labels: dict[str, dict[str, Any]], truth: dict[str, dict[str, Any]], specs: dict[str, TaskSpec]
) -> float:
    """Share of (post, task) aggregated labels equal to the truth (soft labels read by argmax / p >= 0.5)."""
    from ximgctx.hitl.aggregate import soft_to_hard

    hits = []
    for pid, per_task in labels.items():
        for t, value in per_task.items():
            hard = soft_to_hard(value, specs[t].kind)
            true = truth[pid][t]
            hits.append(sorted(hard) == sorted(true) if isinstance(true, list) else hard == true)
    return float(np.mean(hits)) if hits else float("nan")


# -------------------------------------------------------------------------------------------- the loop


def _build_model(config: SimulationConfig, specs: list[TaskSpec]) -> ContextModel:
    return build_model(
        specs,
        arch=config.arch,
        encoder=config.encoder,
        hidden_dim=config.hidden_dim,
        fusion_layers=config.fusion_layers,
        dropout=config.dropout,
        seed=config.seed,
    )


def _data(config: SimulationConfig, out: Path) -> tuple[list[Post], list[Post], dict[str, Any]]:
    """The pool and test posts, generated (or read from ``data_dir``) and passed through governance."""
    from ximgctx.contextbench import generate
    from ximgctx.governance import GovernancePolicy, govern

    data = Path(config.data_dir) if config.data_dir else out / "data"
    stamp = {
        "seed": config.seed,
        "n_train": config.n_pool,
        "n_test": config.n_test,
        "image_size": config.image_size,
    }
    stamp_file = data / "simulate_bench.json"
    if config.data_dir is None and not (stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp):
        generate(
            data,
            seed=config.seed,
            n_train=config.n_pool,
            n_val=0,
            n_test=config.n_test,
            n_compositional=0,
            image_size=config.image_size,
        )
        stamp_file.write_text(json.dumps(stamp))
    policy = GovernancePolicy()
    pool_result = govern(load_posts(data / "train.jsonl")[: config.n_pool], policy)
    test_result = govern(load_posts(data / "test.jsonl")[: config.n_test], policy)
    audit = {"pool": pool_result.audit.to_dict()["posts"], "test": test_result.audit.to_dict()["posts"]}
    return pool_result.posts, test_result.posts, audit


def _pretrain(config: SimulationConfig, pool: list[Post], out: Path, progress: bool) -> str:
    """The quickstart's contrastive pretraining (``ximgctx.training.pretrain``) on the pool's image+text
    pairs; reused when ``out/pretrain`` holds a run with the same settings. Returns the encoder weights
    file."""
    from ximgctx.training import ENCODER_WEIGHTS, PretrainExperiment, pretrain
    from ximgctx.training.config import LearningRates, OptimConfig, TrainConfig

    folder = out / "pretrain"
    stamp = {
        "arch": config.arch,
        "epochs": config.pretrain_epochs,
        "seed": config.seed,
        "ids": len(pool),
        "first": pool[0].id,
        "last": pool[-1].id,
    }
    weights = folder / "final" / ENCODER_WEIGHTS
    stamp_file = folder / "simulate_pretrain.json"
    if weights.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return str(weights)
    experiment = PretrainExperiment(
        encoder=EncoderConfig(arch=config.arch),
        train=TrainConfig(
            output_dir=str(folder),
            seed=config.seed,
            epochs=config.pretrain_epochs,
            batch_size=64,
            optim=OptimConfig(lr=LearningRates(encoder=2e-3), warmup_ratio=0.1),
            eval_every=None,
            keep_last=1,
            tensorboard=False,
            progress_bar=progress,
        ),
    )
    fit = pretrain(experiment, train_posts=pool, overwrite=True)  # a stale run of other settings
    stamp_file.write_text(json.dumps(stamp))
    assert fit.model_dir is not None  # a single-process run writes its model
    return str(Path(fit.model_dir) / ENCODER_WEIGHTS)


@dataclass
class _Shared:
    """What every strategy starts from: the same model, features, truth and first batch."""

    model: ContextModel  # reset to `initial` before each strategy
    initial: dict[str, torch.Tensor]  # the model's starting weights
    pool: list[Post]  # posts to choose from
    pool_feats: Features  # their cached modality embeddings
    test_feats: Features  # the test posts' cached embeddings
    truth: dict[str, dict[str, Any]]  # pool post id -> task -> true label (what honest labelers answer)
    test_truth: list[dict[str, Any]]  # task -> true label, per test post
    specs: list[TaskSpec]  # the tasks labeled
    first: list[int]  # round 0's random pool rows, the same for every strategy


def _strategy_curve(
    strategy: str, shared: _Shared, config: SimulationConfig, say: Any
) -> list[dict[str, Any]]:
    """The labeling rounds of one strategy: choose, vote, aggregate, fine-tune, evaluate."""
    pool, pool_feats, test_feats = shared.pool, shared.pool_feats, shared.test_feats
    truth, test_truth, specs = shared.truth, shared.test_truth, shared.specs
    spec_by = {s.name: s for s in specs}
    kinds: dict[str, str] = {s.name: s.kind for s in specs}
    model = shared.model
    model.load_state_dict(shared.initial)
    torch.manual_seed(config.seed)  # the same dropout stream for every strategy
    crowd = LabelerPool(
        n_labelers=config.labelers,
        accuracy=config.accuracy,
        spammers=config.spammers,
        votes_per_post=config.votes_per_post,
        seed=config.seed,
    )
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    labeled: list[int] = []
    votes: list[Any] = []
    points = []
    for r in range(config.rounds):
        clock = {"select": time.time()}
        taken = set(labeled)
        if r == 0:
            chosen = list(shared.first)
        else:
            rest = np.array([i for i in range(len(pool)) if i not in taken])
            chosen = _choose(model, pool_feats, rest, strategy, config, kinds, rng)
        labeled += chosen
        votes += crowd.vote({pool[i].id: truth[pool[i].id] for i in chosen}, specs)
        clock["aggregate"] = time.time()
        result = aggregate_votes(votes, config.method, tasks=specs)
        agg = result.labels()
        clock["finetune"] = time.time()
        idx = np.array(labeled)
        targets = {
            s.name: torch.stack([encode_label(agg[pool[i].id][s.name], s) for i in labeled]) for s in specs
        }
        loss = finetune(
            model,
            pool_feats,
            idx,
            targets,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            generator=generator,
        )
        clock["evaluate"] = time.time()
        acc = evaluate(model, test_feats, test_truth)
        clock["end"] = time.time()
        phases = list(clock)
        point: dict[str, Any] = {
            "round": r,
            "labels": len(votes),
            "posts": len(set(labeled)),
            "accuracy": acc["mean"],
            "per_task": {k: v for k, v in acc.items() if k != "mean"},
            "label_accuracy": _label_accuracy(agg, truth, spec_by),
            "train_loss": loss,
            "seconds": {a: round(clock[b] - clock[a], 2) for a, b in zip(phases, phases[1:], strict=False)},
        }
        points.append(point)
        say(
            f"  {strategy:>10} round {r}: {len(votes)} labels ({len(labeled)} posts) -> test accuracy "
            f"{100 * acc['mean']:.1f}% (aggregated labels {100 * point['label_accuracy']:.1f}% right)"
        )
    return points


def simulate_labeling(config: SimulationConfig, *, progress: bool = False) -> dict[str, Any]:
    """Run the loop for every strategy; writes ``curve.json`` and ``curve.png`` under ``config.out_dir`` and
    returns the curve (``{"config", "strategies": {name: [point per round]}, "timings"}``)."""
    from ximgctx.contextbench import TASKS

    say = print if progress else (lambda *a, **k: None)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    t0, cpu0 = time.time(), time.process_time()
    known = {d["name"]: d for d in TASKS}
    unknown = [t for t in config.tasks if t not in known]
    if unknown or not config.tasks:
        raise ConfigError(f"tasks must be ContextBench tasks {sorted(known)}, got {config.tasks!r}")
    specs = [TaskSpec(**known[t]) for t in config.tasks]
    pool, test, audit = _data(config, out)
    if len(pool) < config.rounds * config.per_round:
        raise ConfigError(f"the pool has {len(pool)} posts, fewer than rounds x per_round")
    timings = {"data": time.time() - t0}

    t = time.time()
    if config.encoder is None and config.pretrain_epochs > 0:
        say(
            f"contrastive pretraining of {config.arch} on the pool's {len(pool)} image+text pairs (no "
            "labels) ..."
        )
        config = replace(config, encoder=_pretrain(config, pool, out, progress))
    timings["pretrain"] = time.time() - t

    t = time.time()
    model = _build_model(config, specs)
    say(f"encoding {len(pool)} pool and {len(test)} test posts once (frozen {config.arch} encoder) ...")
    pool_feats = cached_features(model, pool, out / "features" / "pool.safetensors")
    test_feats = cached_features(model, test, out / "features" / "test.safetensors")
    timings["encode"] = time.time() - t
    shared = _Shared(
        model=model,
        initial=copy.deepcopy(model.state_dict()),
        pool=pool,
        pool_feats=pool_feats,
        test_feats=test_feats,
        truth={p.id: {t: p.labels[t] for t in config.tasks} for p in pool},
        test_truth=[{t: p.labels[t] for t in config.tasks} for p in test],
        specs=specs,
        first=[
            int(i)
            for i in np.random.default_rng(config.seed).choice(
                len(pool), size=config.per_round, replace=False
            )
        ],
    )
    curves: dict[str, list[dict[str, Any]]] = {}
    for strategy in config.strategies:
        t = time.time()
        curves[strategy] = _strategy_curve(strategy, shared, config, say)
        timings[strategy] = time.time() - t

    timings["total"] = time.time() - t0
    timings["cpu_total"] = (
        time.process_time() - cpu0
    )  # this process's CPU seconds (wall time includes waiting)
    timings["threads"] = torch.get_num_threads()
    curve = {
        "config": asdict(config),
        "strategies": curves,
        "timings": timings,
        "governance": audit,
        "metric": "test accuracy, mean over tasks (exact match for multilabel tasks)",
    }
    (out / "curve.json").write_text(json.dumps(curve, indent=2) + "\n")
    _plot(curve, out / "curve.png")
    return curve


def _choose(
    model: ContextModel,
    feats: Features,
    rest: np.ndarray,
    strategy: str,
    config: SimulationConfig,
    kinds: dict[str, str],
    rng: np.random.Generator,
) -> list[int]:
    """Pool rows to label next, among the unlabeled ``rest``, with the same selection code as
    :func:`~ximgctx.hitl.select_for_labeling`."""
    k = config.per_round
    if strategy == "random":
        order, _, _ = choose("random", k, n=len(rest), rng=rng)
    elif strategy == "mc_dropout":
        samples = []
        with torch.random.fork_rng(devices=[]), dropout_on(model, config.dropout):
            torch.manual_seed(int(rng.integers(2**31)))
            for _ in range(config.mc_samples):
                samples.append(predict(model, feats, rest)[0])
        order, _, _ = choose(strategy, k, kinds=kinds, samples=samples)
    else:
        scores, emb = predict(model, feats, rest)
        order, _, _ = choose(strategy, k, kinds=kinds, scores=scores, embeddings=emb)
    return [int(rest[i]) for i in order]


def _plot(curve: dict[str, Any], path: Path) -> None:
    matplotlib = require("matplotlib", feature="the simulated labeling loop's curve.png")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, points in curve["strategies"].items():
        ax.plot([p["labels"] for p in points], [100 * p["accuracy"] for p in points], marker="o", label=name)
    cfg = curve["config"]
    ax.set_xlabel("labels spent (votes)")
    ax.set_ylabel("test accuracy (%, exact match for multilabel)")
    ax.set_title(
        f"ContextBench {'+'.join(cfg['tasks'])}: {cfg['labelers']} labelers, "
        f"{math.floor(100 * cfg['accuracy'])}% accurate, {math.floor(100 * cfg['spammers'])}% spammers",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
