"""One round of the learning loop: new effective labels -> a warm-started candidate -> scored beside the
serving model -> the promotion gate -> a registered version, promoted or refused.

Stages (each recorded in the store's round journal, :mod:`ximgctx.queue.rounds`, when it is finished):

1. ``labels``: the effective labels (under the store's rule) that changed since the last ``done`` round (a
   post is new when one of its counting rows is newer than that round's cursor), governed again (the policy
   applied, opted-out authors dropped). Fewer than ``min_new_labels`` -> the round is ``skipped`` with the
   reason, and the labels wait for the next round. Otherwise the labels are split (seeded) into train,
   validation (calibration refit) and held-out (new-label accuracy) shares; the cursor and the split are
   recorded.
2. ``trained``: fine-tuned from the promoted version's folder (``train.init_from``, pinned by its digest)
   on the train share plus a seeded replay sample of earlier training data (``replay`` manifests and shard
   folders, and earlier rounds' labels), into the round's work folder. A resumed round reuses a finished
   candidate folder after verifying it against its recorded digest.
3. ``scored``: both models scored (:func:`ximgctx.evaluation.scorecard.score_model`) on the frozen holdout,
   the store's gold items and the held-out new labels, calibration refit on the validation share; then
   :func:`ximgctx.evaluation.gate.gate`.
4. ``registered``: the candidate copied into the registry with its lineage (parent, data digests, label
   counts, both scorecards, the verdict).
5. ``done``: promoted when the verdict says so, else marked refused with the reasons.

A failure at any stage leaves the promoted version untouched (promotion is the last step) and the round
``failed`` at its stage; the next :func:`run_round` resumes it and does not repeat finished stages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ximgctx.data.record import Post
from ximgctx.errors import ConfigError, InputError
from ximgctx.loop.config import LoopConfig

logger = logging.getLogger(__name__)

__all__ = ["RoundResult", "open_store", "run_round"]


@dataclass
class RoundResult:
    """What a round did (JSON-able: :meth:`to_dict`)."""

    round: int
    promoted: bool = False
    skipped: bool = False
    reason: str = ""
    version: int | None = None  # the registered candidate
    parent: int | None = None  # the version served when the round started
    serving: int | None = None  # the version served when the round ended
    verdict: dict[str, Any] | None = None
    # new labels: effective (since the last round), governed (kept), and the train / val / heldout shares
    labels: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    attempts: int = 1
    stages: list[str] = field(default_factory=list)  # the stages this call ran (a resumed round skips some)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_store(config: LoopConfig) -> Any:
    """The loop store a config names (a :class:`~ximgctx.queue.QueueStore`)."""
    from ximgctx.queue import QueueConfig, QueueStore, read_queue_key

    config.require("loop_db")
    assert config.loop_db is not None
    return QueueStore(QueueConfig(db=config.loop_db, key=read_queue_key(config.queue_key_file)))


# ------------------------------------------------------------------------------------------------ helpers
def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _labels_digest(entries: Iterable[tuple[str, dict[str, Any]]]) -> str:
    """SHA-256 of a label set: its (post content digest, labels) pairs, sorted."""
    h = hashlib.sha256()
    for digest, labels in sorted((d, _json(lab)) for d, lab in entries):
        h.update(f"{digest}\t{labels}\n".encode())
    return h.hexdigest()


def source_digest(path: str | Path) -> dict[str, Any]:
    """What pins a data source: a file's SHA-256, or a shard folder's artifact digest."""
    from ximgctx._artifacts import MANIFEST, artifact_digest
    from ximgctx._fsutil import sha256_file

    p = Path(path)
    if p.is_dir():
        if (p / MANIFEST).is_file():
            return {"path": str(p), "artifact_sha256": artifact_digest(p)}
        h = hashlib.sha256()  # a folder without a manifest: its files' names, sizes and contents
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\t{sha256_file(f)}\n".encode())
        return {"path": str(p), "sha256": h.hexdigest()}
    if not p.is_file():
        raise ConfigError(f"{p}: no such data source (a manifest file or a shard folder)")
    return {"path": str(p), "sha256": sha256_file(p)}


def _label_counts(posts: Sequence[Post]) -> dict[str, dict[str, int]]:
    """Per task, per label: how many posts carry it."""
    counts: dict[str, Counter[str]] = {}
    for post in posts:
        for task, value in (post.labels or {}).items():
            values = value if isinstance(value, list) else [value]
            counter = counts.setdefault(task, Counter())
            for v in values:
                counter[str(v)] += 1
    return {task: dict(sorted(c.items())) for task, c in sorted(counts.items())}


def _split(digests: list[str], config: LoopConfig, round_id: int) -> dict[str, list[str]]:
    """Seeded split of the new labels' digests into held-out, validation and train shares."""
    order = sorted(digests)
    random.Random(f"{config.seed}:{round_id}:split").shuffle(order)
    n = len(order)
    n_held = int(round(n * config.heldout_fraction))
    n_val = int(round(n * config.val_fraction))
    if n - n_held - n_val < 1:
        n_held, n_val = max(0, min(n_held, n - 1)), 0
    return {
        "heldout": order[:n_held],
        "val": order[n_held : n_held + n_val],
        "train": order[n_held + n_val :],
    }


def _reservoir(
    items: Iterable[Post], k: int, rng: random.Random, sample: list[Post], seen: int
) -> tuple[list[Post], int]:
    for post in items:
        seen += 1
        if len(sample) < k:
            sample.append(post)
        else:
            j = rng.randrange(seen)
            if j < k:
                sample[j] = post
    return sample, seen


@contextlib.contextmanager
def _governance_key(key_file: str | None) -> Iterator[None]:
    """Training keys the model's author set with ``$XIMGCTX_GOVERNANCE_KEY``; a loop given ``key_file``
    trains under that key (the one it governs with), the variable restored afterwards."""
    if not key_file:
        yield
        return
    from ximgctx.governance.keys import ENV_VAR, load_key

    key, _ = load_key(key_file)
    before = os.environ.get(ENV_VAR)
    try:
        os.environ[ENV_VAR] = key.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{key_file}: the governance key must be text (openssl rand -hex 32)") from None
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


class _Heartbeat:
    """Renews the round's lease from a thread while a long stage (training) runs."""

    def __init__(self, rounds: Any, round_id: int, owner: str, every_s: float) -> None:
        self.rounds, self.round_id, self.owner, self.every_s = rounds, round_id, owner, every_s
        self.stop = threading.Event()
        self.lost: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"loop-round-{round_id}-lease", daemon=True)

    def _run(self) -> None:
        from ximgctx.queue.rounds import RoundLostError

        while not self.stop.wait(self.every_s):
            try:
                self.rounds.heartbeat(self.round_id, self.owner)
            except RoundLostError as e:
                self.lost = str(e)
                return
            except Exception as e:  # a database hiccup: try again at the next beat
                logger.warning("loop round %d: lease not renewed: %s", self.round_id, e)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


# -------------------------------------------------------------------------------------------------- round
class _Round:
    """One call of :func:`run_round` (state shared by the stages)."""

    def __init__(
        self,
        config: LoopConfig,
        store: Any,
        who: str,
        role: str,
        owner: str,
        on_stage: Callable[[str], None] | None,
    ) -> None:
        from ximgctx.queue.registry import Registry
        from ximgctx.queue.rounds import Rounds

        config.require("registry_root", "experiment", "holdout")
        assert config.registry_root is not None
        self.config, self.store, self.who, self.role, self.owner = config, store, who, role, owner
        self.on_stage = on_stage
        self.registry = Registry(store, config.registry_root)
        self.rounds = Rounds(store, lease_s=config.round_lease_s)
        self.workdir = Path(config.rounds_dir) if config.rounds_dir else self.registry.root / "rounds"
        self._policy: Any = None

    # ---- helpers
    def record(self, rnd: Any, stage: str, result: RoundResult, **fields: Any) -> Any:
        rnd = self.rounds.advance(rnd.id, self.owner, stage, **fields)
        result.stages.append(stage)
        if self.on_stage is not None:
            self.on_stage(stage)
        return rnd

    def governance(self) -> Any:
        if self._policy is None:
            from ximgctx.governance import GovernancePolicy

            c = self.config
            self._policy = GovernancePolicy.from_yaml(c.governance) if c.governance else GovernancePolicy()
        return self._policy

    def govern(self, posts: list[Post]) -> list[Post]:
        """The posts governed again (the policy applied, opted-out authors dropped)."""
        from ximgctx.governance import govern, load_key

        if not posts:
            return []
        key, held = load_key(self.config.key_file)
        return list(govern(posts, self.governance(), key=key if held else None).posts)

    def store_labels(
        self, *, since: int, upto: int | None, with_old: bool = False
    ) -> tuple[int, list[Post], list[Post], int, int]:
        """The label generation, the new effective labels (a counting row in ``(since, upto]``) and, with
        ``with_old``, the old ones (every counting row at most ``since``; governed when sampled), as posts
        named by their content digest; the newest counting row; and how many new posts there were before
        governance."""
        from ximgctx.queue.loop import LoopState

        generation, effective = LoopState(self.store).effective()
        new, old, newest = [], [], since
        for e in effective:
            last = max(e.rows) if e.rows else 0
            post = e.post
            post.id = e.post_digest  # unique, and what the split and the lineage name
            if last <= since:
                if with_old:
                    old.append(post)
            elif upto is None or last <= upto:
                new.append(post)
                newest = max(newest, last)
        return generation, self.govern(new), old, newest, len(new)  # old: governed when sampled for replay

    # ---- stages
    def labels(self, rnd: Any, result: RoundResult) -> tuple[Any, bool]:
        last = self.rounds.last_done()
        since = int((last.cursor if last else {}).get("max_row", 0))
        generation, new, _, newest, effective = self.store_labels(since=since, upto=None)
        found = len(new)
        result.labels = {"effective": effective, "governed": found}
        if found < self.config.min_new_labels:
            result.skipped = True
            result.reason = (
                f"{found} new governed label(s) since "
                + (f"round {last.id}" if last else "the start")
                + f", fewer than min_new_labels={self.config.min_new_labels}"
            )
            return rnd, False
        split = _split([p.id for p in new], self.config, rnd.id)
        serving = self.registry.promoted()
        if serving is None:
            raise InputError("the registry's promoted version went away (no version is promoted now)")
        cursor = {"since_row": since, "max_row": newest, "label_generation": generation}
        state = {
            "split": split,
            "parent": serving.version,
            "parent_digest": serving.digest,
            "labels": {"effective": effective, "governed": found, **{k: len(v) for k, v in split.items()}},
        }
        rnd = self.record(rnd, "labels", result, cursor=cursor, state=state)
        return rnd, True

    def shares(self, rnd: Any, *, with_old: bool = False) -> tuple[dict[str, list[Post]], list[Post]]:
        """The recorded split's posts (read again from the store and governed again; a post erased since is
        gone) and, with ``with_old``, the earlier rounds' labels (for replay)."""
        cursor = rnd.cursor
        since, upto = int(cursor["since_row"]), int(cursor["max_row"])
        _, new, old, _, _ = self.store_labels(since=since, upto=upto, with_old=with_old)
        by_id = {p.id: p for p in new}
        split = rnd.state["split"]
        return {name: [by_id[d] for d in split[name] if d in by_id] for name in split}, old

    def replay(self, old: list[Post], rnd: Any) -> tuple[list[Post], dict[str, Any]]:
        """A seeded sample of earlier training data: the replay sources and earlier rounds' labels."""
        from ximgctx.data.io import load_posts

        k = self.config.replay_size
        rng = random.Random(f"{self.config.seed}:{rnd.id}:replay")
        sample: list[Post] = []
        seen = 0
        sources = []
        for source in self.config.replay:
            sources.append(source_digest(source))
            sample, seen = _reservoir(
                load_posts(source, streaming=True, on_error="skip"), k, rng, sample, seen
            )
        sample, seen = _reservoir(old, k, rng, sample, seen)
        sample = self.govern(sample) if sample else []
        ids = sorted(p.id for p in sample)
        info = {
            "sources": sources,
            "pool": seen,
            "sampled": len(sample),
            "earlier_round_labels": len(old),
            "sample_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        }
        return sample, info

    def train(self, rnd: Any, result: RoundResult) -> Any:
        from ximgctx._artifacts import verify_artifact

        root = self.registry.root
        from ximgctx.training import train

        shares, old = self.shares(rnd, with_old=True)
        replay, replay_info = self.replay(old, rnd)
        parent = self.registry.get(int(rnd.state["parent"]))
        self.registry.verify(parent)
        posts = shares["train"] + replay
        if not posts:
            raise InputError(f"loop round {rnd.id}: no posts to train on")
        out = self.workdir / f"round-{rnd.id}"
        out.mkdir(parents=True, exist_ok=True)
        overrides = [
            *self.config.overrides,
            f"train.output_dir={out / 'run'}",
            f"train.init_from={parent.path}",
            f"train.init_sha256={parent.digest}",
        ]
        with _governance_key(self.config.key_file):
            fit = train(
                self.config.experiment,  # type: ignore[arg-type]
                overrides=overrides,
                train_posts=posts,
                val_posts=shares["val"] or None,
                overwrite=True,
            )
        if fit.model_dir is None:
            raise InputError(f"loop round {rnd.id}: training exported no model folder")
        folder = Path(fit.model_dir).resolve()
        digest = verify_artifact(folder, "model").digest
        try:
            rel = folder.relative_to(root).as_posix()
        except ValueError:  # a rounds_dir outside the registry root: the candidate is copied in
            dest = root / "rounds" / f"round-{rnd.id}" / "candidate"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(folder, dest)
            verify_artifact(dest, "model", expected_sha256=digest)
            rel = dest.relative_to(root).as_posix()
        data = {
            "train_steps": fit.steps,
            "train_posts": len(posts),
            "new_train_posts": len(shares["train"]),
            "replay": replay_info,
        }
        return self.record(
            rnd, "trained", result, candidate=rel, state={"candidate_digest": digest, "train": data}
        )

    def score(self, rnd: Any, result: RoundResult) -> Any:
        from ximgctx.evaluation.gate import gate
        from ximgctx.queue.registry import version_path

        shares, _ = self.shares(rnd)
        holdout = self.holdout()
        gold = self.store.gold_posts()
        gold = self.govern(gold) if gold else []
        parent = self.registry.verify(int(rnd.state["parent"]))
        candidate = version_path(self.registry.root, rnd.candidate, f"loop round {rnd.id}: candidate")
        kwargs = {
            "val_posts": shares["val"] or None,
            "gold": gold or None,
            "new_labels": shares["heldout"] or None,
        }
        serving_card, serving_details = _score(parent.path, parent.digest, holdout, self.config, **kwargs)
        candidate_card, candidate_details = _score(
            candidate, rnd.state["candidate_digest"], holdout, self.config, **kwargs
        )
        verdict = gate(serving_card, candidate_card, self.config.gate)
        metrics = {
            "serving": serving_card.to_dict(),
            "candidate": candidate_card.to_dict(),
            "details": {"serving": serving_details, "candidate": candidate_details},
        }
        state = {
            "metrics": metrics,
            "verdict": verdict.to_dict(),
            "scored_on": {"holdout": len(holdout), "gold": len(gold), "new_labels": len(shares["heldout"]),
                          "val": len(shares["val"])},
        }  # fmt: skip
        return self.record(rnd, "scored", result, state=state)

    def holdout(self) -> list[Post]:
        from ximgctx.data.io import load_posts

        assert self.config.holdout is not None
        return list(load_posts(self.config.holdout))

    def lineage_data(self, rnd: Any) -> dict[str, Any]:
        shares, _ = self.shares(rnd)
        split = {name: [(p.id, p.labels) for p in posts] for name, posts in shares.items()}
        assert self.config.holdout is not None
        return {
            "round": rnd.id,
            "cursor": rnd.cursor,
            "new_labels": {
                name: {"sha256": _labels_digest(pairs), "posts": len(pairs)} for name, pairs in split.items()
            },
            "label_counts": {name: _label_counts(posts) for name, posts in shares.items()},
            "holdout": source_digest(self.config.holdout),
            "gold": self.gold_digest(),
            "train": rnd.state.get("train", {}),
            "scored_on": rnd.state.get("scored_on", {}),
            "governance": self.config.governance or "default",
        }

    def gold_digest(self) -> dict[str, Any]:
        """What pins the gold items both models were scored on: their content and labels."""
        from ximgctx.queue.loop import post_digest

        gold = self.store.gold_posts()
        return {"sha256": _labels_digest((post_digest(p), p.labels) for p in gold), "posts": len(gold)}

    def register(self, rnd: Any, result: RoundResult) -> Any:
        digest = rnd.state["candidate_digest"]
        existing = [v for v in self.registry.by_digest(digest) if v.data.get("round") == rnd.id]
        if existing:  # registered before a crash, the stage not yet recorded
            version = existing[0]
        else:
            from ximgctx.queue.registry import version_path

            folder = version_path(self.registry.root, rnd.candidate, f"loop round {rnd.id}: candidate")
            version = self.registry.register(
                folder,
                parent=int(rnd.state["parent"]),
                data=self.lineage_data(rnd),
                metrics=rnd.state["metrics"],
                verdict=rnd.state["verdict"],
                who=self.who,
                role=self.role,
                name=f"round-{rnd.id}",
            )
        self.store_center(version)
        return self.record(rnd, "registered", result, state={"version": version.version})

    def store_center(self, version: Any) -> None:
        """The label memory's reference centre for this version, stored in the loop store before it can be
        promoted: a server that swaps the version in centres the memory of the store's effective labels there
        (replicas alike) instead of refusing feedback for want of one. It is the mean fused embedding of the
        frozen holdout, governed: posts the operator chose, never requests."""
        from ximgctx.inference.memory import LabelMemory
        from ximgctx.inference.predictor import Predictor
        from ximgctx.queue.loop import LoopState

        reference = self.govern(self.holdout())
        if not reference:
            logger.warning("loop: the holdout has no governed posts; version %d gets no memory centre",
                           version.version)  # fmt: skip
            return
        predictor = Predictor.from_pretrained(version.path, device="cpu", expected_sha256=version.digest)
        memory = LabelMemory.for_predictor(predictor, reference=reference)
        assert memory.center is not None
        LoopState(self.store).store_memory_center(version.digest, [float(x) for x in memory.center])

    def decide(self, rnd: Any, result: RoundResult) -> None:
        verdict = rnd.state["verdict"]
        version = self.registry.get(int(rnd.state["version"]))
        parent = int(rnd.state["parent"])
        why = "; ".join(verdict.get("reasons") or [])
        current = self.registry.promoted()
        if version.status == "promoted" or (current is not None and current.version == version.version):
            result.promoted = True  # promoted before a crash, the round not yet closed
            result.reason = f"promoted version {version.version}: {why}"
        elif version.status == "refused":
            result.reason = f"refused version {version.version}: {why}"
        elif verdict.get("promote") and current is not None and current.version != parent:
            why = (
                f"version {current.version} was promoted while the round ran (it trained from and was "
                f"compared with version {parent}); not promoted over it"
            )
            self.registry.refuse(version.version, who=self.who, role=self.role, why=why)
            result.reason = f"refused version {version.version}: {why}"
        elif verdict.get("promote"):
            self.registry.promote(version.version, who=self.who, role=self.role, why=f"gate: {why}")
            result.promoted = True
            result.reason = f"promoted version {version.version}: {why}"
        else:
            self.registry.refuse(version.version, who=self.who, role=self.role, why=f"gate: {why}")
            result.reason = f"refused version {version.version}: {why}"


def _score(
    folder: Path, digest: str, holdout: list[Post], config: LoopConfig, **kwargs: Any
) -> tuple[Any, dict[str, Any]]:
    """A model folder's scorecard and the counts behind it (:func:`ximgctx.evaluation.score_model_details`),
    the folder pinned by its digest."""
    from ximgctx._json import json_safe
    from ximgctx.evaluation.scorecard import score_model_details
    from ximgctx.models.context_model import ContextModel

    model = ContextModel.from_pretrained(folder, expected_sha256=digest)
    policy = None
    if config.policy:
        from ximgctx.models.policy import ModerationPolicy

        policy = ModerationPolicy.from_yaml(config.policy)
    card, details = score_model_details(model, holdout, policy=policy, **kwargs)
    return card, json_safe(details)


def run_round(
    config: LoopConfig,
    *,
    who: str,
    role: str = "loop",
    store: Any = None,
    owner: str | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> RoundResult:
    """Run (or resume) one round of the learning loop; see the module docstring.

    Args:
        config: the loop's configuration.
        who / role: recorded with the registry version, the promotion and the audit rows.
        store: an open :class:`~ximgctx.queue.QueueStore` (default: opened from ``config.loop_db``).
        owner: who holds the round's lock (default ``user@host:pid``).
        on_stage: called with each stage's name once it is recorded (an operator's hook; tests inject
            failures here).

    Raises:
        RoundBusyError: another round is running.
    """
    from ximgctx.queue.rounds import default_owner

    own_store = store is None
    store = open_store(config) if store is None else store
    owner = owner or default_owner()
    try:
        r = _Round(config, store, who, role, owner, on_stage)
        if r.registry.promoted() is None:
            raise InputError(
                "the registry has no promoted version to train from: adopt the served model first "
                "(ximgctx loop adopt MODEL_DIR)"
            )
        rnd = r.rounds.acquire(owner)
        result = RoundResult(round=rnd.id, resumed=rnd.resumed, attempts=rnd.attempts)
        beat = _Heartbeat(r.rounds, rnd.id, owner, max(0.5, config.round_lease_s / 3))
        try:
            with beat:
                if not rnd.done_stage("labels"):
                    rnd, go = r.labels(rnd, result)
                    if not go:
                        r.rounds.finish(rnd.id, owner, "skipped", result.to_dict())
                        return result
                result.parent = int(rnd.state["parent"])
                result.labels = dict(rnd.state.get("labels", {}))
                if not rnd.done_stage("registered"):  # once registered, the registry holds the candidate
                    if not (rnd.done_stage("trained") and _candidate_ok(r, rnd)):
                        rnd = r.train(rnd, result)  # recorded "trained": a stale score is redone too
                    if not rnd.done_stage("scored"):
                        rnd = r.score(rnd, result)
                    rnd = r.register(rnd, result)
                r.decide(rnd, result)
                result.version = int(rnd.state["version"])
                result.verdict = rnd.state["verdict"]
                served = r.registry.promoted()
                result.serving = served.version if served else None
                if beat.lost:
                    from ximgctx.queue.rounds import RoundLostError

                    raise RoundLostError(beat.lost)
                r.rounds.finish(rnd.id, owner, "done", result.to_dict())
                result.stages.append("done")
                for work in {r.workdir / f"round-{rnd.id}", r.registry.root / "rounds" / f"round-{rnd.id}"}:
                    shutil.rmtree(work, ignore_errors=True)  # the registry holds the candidate now
                return result
        except BaseException as e:
            r.rounds.fail(rnd.id, owner, f"{type(e).__name__}: {e}")
            raise
    finally:
        if own_store:
            store.close()


def _candidate_ok(r: _Round, rnd: Any) -> bool:
    """A recorded candidate folder that still verifies against its digest (else the round trains again)."""
    from ximgctx._artifacts import verify_artifact
    from ximgctx.errors import ArtifactError
    from ximgctx.queue.registry import version_path

    if not rnd.candidate:
        return False
    try:
        folder = version_path(r.registry.root, rnd.candidate, f"loop round {rnd.id}: candidate")
        verify_artifact(folder, "model", expected_sha256=rnd.state.get("candidate_digest"))
    except (ArtifactError, InputError) as e:
        logger.warning("loop round %d: the candidate folder is not usable (%s); training again", rnd.id, e)
        return False
    return True
