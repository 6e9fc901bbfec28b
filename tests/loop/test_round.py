"""The learning loop's rounds with a tiny model on a SQLite store (one test also on PostgreSQL): too few
labels skipped with the reason; a round the gate promotes (with its lineage), a deliberately worse candidate
refused, a rollback that gives the previous version's exact outputs; a round failing at a stage, and one
killed with ``os._exit`` in a subprocess, leave the promoted version untouched and the rerun finishes with
exactly one new version; two rounds never run at once; and the ``ximgctx loop`` commands.

The setting is built so that the gate's answer is known without hoping a tiny model learns: the holdout is
the labeled posts themselves, labeled *against* the serving model's own predictions (it scores 0 on
``meaning``), so a candidate trained on those labels can only gain; a later round's labels are the serving
model's original predictions again, which contradict the holdout, so that candidate cannot gain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from ximgctx import Post, write_posts
from ximgctx.data.io import load_posts
from ximgctx.evaluation.gate import GateRule, Scorecard, gate
from ximgctx.inference import Predictor
from ximgctx.inference.memory import LabelMemory
from ximgctx.loop import LoopConfig, run_round
from ximgctx.queue.loop import LoopState
from ximgctx.queue.registry import Registry
from ximgctx.queue.rounds import RoundBusyError, Rounds

from .._inference_fixtures import make_posts, model_dir, tiny_config
from .._queue_fixtures import KEY, Postgres, make_store
from ..helpers import missing_service

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
MEANINGS = ["literal", "ironic", "symbolic"]
N = 24


@cache
def world() -> tuple[list[Post], list[str]]:
    """Public posts (images as paths) and the serving model's ``meaning`` prediction for each."""
    posts = make_posts(N, seed=11, folder="loop")
    for i, p in enumerate(posts):
        p.meta = {"visibility": "public", "author": f"author{i % 6}"}
        p.labels = {}
    preds = Predictor.from_pretrained(model_dir(), device="cpu").predict(posts)
    return posts, [pr.tasks["meaning"].labels[0] for pr in preds]


def against(label: str) -> str:
    """Another meaning than the serving model's."""
    return MEANINGS[(MEANINGS.index(label) + 1) % 3]


def labeled(meanings: list[str], *, image_bytes: bool) -> list[Post]:
    posts, _ = world()
    out = []
    for p, m in zip(posts[: len(meanings)], meanings, strict=True):
        image = Path(p.image).read_bytes() if image_bytes and isinstance(p.image, str) else p.image
        out.append(Post(p.id, image, p.text, list(p.replies), {"meaning": m}, dict(p.meta)))
    return out


def give_feedback(store, meanings: list[str]) -> None:
    loop = LoopState(store)
    for post in labeled(meanings, image_bytes=True):
        loop.add_feedback(post, who="reviewer:test")


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres.start()
    if pg is None:
        missing_service(Postgres.why)
    yield pg
    pg.stop()


@pytest.fixture
def setting(request, tmp_path):
    """A loop store (SQLite; PostgreSQL where a test asks) whose registry has adopted the tiny model."""
    posts, teacher = world()
    holdout = tmp_path / "holdout.jsonl"
    write_posts(labeled([against(t) for t in teacher], image_bytes=False), holdout)
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(
        json.dumps(  # JSON is YAML
            {
                "model": tiny_config().to_dict(),
                "train": {
                    "batch_size": 4,
                    "max_steps": 12,
                    "eval_every": 12,
                    "save_every": 12,
                    "eval_batch_size": 8,
                    "progress_bar": False,
                    "tensorboard": False,
                    "optim": {"lr": {"lora": 3e-2, "fusion": 3e-2, "heads": 5e-2}, "warmup_steps": 0},
                },
            }
        )
    )
    key = tmp_path / "queue.key"
    key.write_bytes(KEY)
    if getattr(request, "param", "sqlite") == "postgresql":
        db = request.getfixturevalue("postgres").create_db(f"loop{os.getpid()}{time.monotonic_ns()}")
    else:
        db = str(tmp_path / "loop.sqlite")
    store = make_store(db)
    gold = labeled([against(t) for t in teacher], image_bytes=False)[:4]  # known answers, queued
    store.enqueue(gold, gold={p.id: p.labels for p in gold})
    config = LoopConfig(
        loop_db=db,
        queue_key_file=str(key),
        registry_root=str(tmp_path / "registry"),
        experiment=str(experiment),
        holdout=str(holdout),
        replay_size=0,
        min_new_labels=10,
        gate=GateRule(metric="task:meaning", tolerance=1.0),
    )
    registry = Registry(store, config.registry_root)
    registry.adopt(model_dir(), who="ops")
    yield config, store, registry, teacher
    store.close()


def outputs(folder: Path) -> list[dict]:
    posts, _ = world()
    return [p.to_dict() for p in Predictor.from_pretrained(folder, device="cpu").predict(posts)]


def check_lineage(registry: Registry, result, config: LoopConfig) -> None:
    """The registered version's rows agree with the round: parent, data digests, label counts, both
    scorecards, and a verdict that the gate gives again from the stored scorecards."""
    v = registry.get(result.version)
    assert v.parent == result.parent == 1 and v.data["round"] == result.round
    assert set(v.data["new_labels"]) == {"train", "val", "heldout"}
    assert sum(s["posts"] for s in v.data["new_labels"].values()) == result.labels["governed"] == N
    assert all(len(s["sha256"]) == 64 for s in v.data["new_labels"].values())
    counts = v.data["label_counts"]["train"]["meaning"]
    assert sum(counts.values()) == v.data["new_labels"]["train"]["posts"] == result.labels["train"]
    assert len(v.data["holdout"]["sha256"]) == 64
    assert v.data["gold"]["posts"] == 4 and len(v.data["gold"]["sha256"]) == 64
    assert v.metrics["details"]["candidate"]["gold"]["posts"] == 4
    assert None not in (v.metrics["serving"]["gold"], v.metrics["candidate"]["gold"])
    serving, candidate = (Scorecard.from_dict(v.metrics[k]) for k in ("serving", "candidate"))
    again = gate(serving, candidate, config.gate)
    assert again.to_dict() == v.verdict == result.verdict
    assert v.status == ("promoted" if again.promote else "refused")


def test_too_few_labels_skip_and_a_running_round_refuses_another(setting, capsys):
    config, store, registry, teacher = setting
    give_feedback(store, [against(t) for t in teacher][:3])
    opted_out = labeled(["ironic"] * 4, image_bytes=True)[3]  # labeled, then its author opted out
    opted_out.meta = {**opted_out.meta, "opt_out": True}
    LoopState(store).add_feedback(opted_out, who="reviewer:test")
    result = run_round(config, who="loop", store=store)
    assert result.skipped and not result.promoted and result.version is None
    assert result.labels == {"effective": 4, "governed": 3}  # governed again: the opted-out post is dropped
    assert result.reason == "3 new governed label(s) since the start, fewer than min_new_labels=10"
    assert Rounds(store).last()[0].status == "skipped" and registry.promoted().version == 1
    assert len(registry.versions()) == 1

    Rounds(store).acquire("someone@elsewhere:42")
    with pytest.raises(RoundBusyError, match="owner someone@elsewhere:42"):
        run_round(config, who="loop", store=store)

    from ximgctx.cli import main

    flags = ["--loop-db", config.loop_db, "--queue-key-file", config.queue_key_file]
    flags += ["--registry-root", config.registry_root]
    assert main(["loop", "status", *flags]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["promoted"]["version"] == 1 and status["generation"] == 1
    assert [r["status"] for r in status["rounds"]] == ["running", "skipped"]
    assert main(["loop", "history", *flags]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["lineage"]) for v in history["versions"]] == [(1, [1])]
    assert main(["loop", "adopt", str(model_dir()), *flags]) == 2
    assert "already has a promoted version" in capsys.readouterr().err
    assert main(["loop", "rollback", *flags, "--why", "test"]) == 2  # nothing to roll back to
    assert "nothing to roll back to" in capsys.readouterr().err
    assert main(["loop", "run", *flags, "--experiment", config.experiment, "--holdout", config.holdout]) == 2
    assert "loop round" in capsys.readouterr().err  # the running round, named
    assert main(["loop", "abandon", *flags, "--why", "stuck"]) == 2  # its lease is live
    assert "cannot be abandoned while its lease is live" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["sqlite", "postgresql"], indirect=True)
def test_promoted_then_a_worse_candidate_refused_then_rollback(setting):
    config, store, registry, teacher = setting
    before = outputs(registry.promoted().path)

    give_feedback(store, [against(t) for t in teacher])
    first = run_round(config, who="loop", store=store)
    assert (
        not first.skipped
        and first.version == 2
        and first.stages
        == [
            "labels",
            "trained",
            "scored",
            "registered",
            "done",
        ]
    )
    check_lineage(registry, first, config)
    card = registry.get(2).metrics
    assert card["serving"]["tasks"]["meaning"] == 0.0  # the holdout is labeled against the serving model
    assert first.promoted and first.serving == 2, first.verdict
    assert first.verdict["reasons"][0].startswith("task:meaning improved 0.0000 -> ")
    assert registry.promoted().version == 2 and registry.generation() == 2
    # the new version's memory centre is in the store (a server swapping it in centres the memory there):
    # the mean fused embedding of the governed holdout, by that version
    v2 = registry.get(2)
    holdout = load_posts(config.holdout)
    want = LabelMemory.for_predictor(
        Predictor.from_pretrained(v2.path, device="cpu"), reference=holdout
    ).center
    held = LoopState(store).memory_center(v2.digest)
    assert held is not None and np.allclose(held, want, atol=1e-6)
    assert LoopState(store).memory_center(registry.get(1).digest) is None  # version 1's: from its files

    give_feedback(store, teacher)  # the serving model's first answers: against the holdout
    second = run_round(config, who="loop", store=store)
    assert second.version == 3 and second.parent == 2 and not second.promoted
    assert not second.verdict["promote"] and second.verdict["reasons"], second.verdict
    assert any(r.startswith("task:meaning") for r in second.verdict["reasons"])
    assert registry.get(3).status == "refused" and registry.promoted().version == 2
    assert second.reason.startswith("refused version 3: task:meaning")
    assert registry.generation() == 2  # a refusal swaps nothing

    back = registry.rollback(who="ops", why="test")
    assert back.version == 1 and registry.generation() == 3
    assert outputs(registry.promoted().path) == before  # bit-identical: the same floats
    assert [(p["action"], p["from"], p["to"]) for p in registry.promotions()] == [
        ("adopt", None, 1),
        ("promote", 1, 2),
        ("rollback", 2, 1),
    ]


def _wait_for_lease(store, owner: str = "probe", limit_s: float = 60.0) -> None:
    """Until the killed round's lease has run out (it is taken over by the next acquire)."""
    rounds = Rounds(store)
    deadline = time.monotonic() + limit_s
    while True:
        row = rounds.last(1)[0]
        if row.status != "running" or row.lease_until < time.time():
            return
        assert time.monotonic() < deadline, "the killed round's lease never ran out"
        time.sleep(0.2)


_KILLED = """
import os, sys
from ximgctx.loop import load_loop_config, run_round
config = load_loop_config(sys.argv[1])
def die(stage):
    if stage == sys.argv[2]:
        os._exit(17)
run_round(config, who="loop", on_stage=die)
"""


def test_a_round_failing_or_killed_midway_resumes_with_one_new_version(setting, tmp_path):
    config, store, registry, teacher = setting
    config = replace(config, replay=[config.holdout], replay_size=4)  # earlier training data: a manifest
    give_feedback(store, [against(t) for t in teacher])

    def fail(stage: str) -> None:
        if stage == "trained":
            raise RuntimeError("injected: the disk filled up")

    with pytest.raises(RuntimeError, match="injected"):
        run_round(config, who="loop", store=store, on_stage=fail)
    failed = Rounds(store).last(1)[0]
    assert (failed.status, failed.stage) == ("failed", "trained") and "injected" in failed.error
    assert (Path(config.registry_root) / failed.candidate / "manifest.json").is_file()  # kept for the rerun
    assert registry.promoted().version == 1 and len(registry.versions()) == 1
    resumed = run_round(config, who="loop", store=store)
    assert resumed.resumed and resumed.round == failed.id and resumed.attempts == 2
    assert resumed.stages == ["scored", "registered", "done"]  # the candidate folder was reused
    assert not (Path(config.registry_root) / "rounds" / f"round-{failed.id}").exists()  # removed once done
    assert [v.version for v in registry.versions()] == [1, 2]
    replay = registry.get(2).data["train"]["replay"]
    assert (replay["pool"], replay["sampled"], replay["earlier_round_labels"]) == (N, 4, 0)
    assert [s["path"] for s in replay["sources"]] == [config.holdout]
    assert registry.get(2).data["train"]["train_posts"] == resumed.labels["train"] + 4

    # a process killed outright after registering: the version exists, nothing was promoted
    give_feedback(store, teacher[:12])  # half the posts labeled again: the other half is earlier labels
    path = tmp_path / "loop.yaml"
    path.write_text(json.dumps(replace(config, round_lease_s=1.0).to_dict()))
    path_ = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path_, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, str(path), "registered"], env=env, capture_output=True, timeout=600
    )
    assert proc.returncode == 17, proc.stderr.decode()[-3000:]
    killed = Rounds(store).last(1)[0]
    assert (killed.status, killed.stage) == ("running", "registered")
    promoted = registry.promoted().version
    assert [v.version for v in registry.versions()] == [1, 2, 3] and registry.get(3).status == "candidate"
    _wait_for_lease(store)
    again = run_round(config, who="loop", store=store)
    assert again.resumed and again.round == killed.id and again.stages == ["done"]
    assert [v.version for v in registry.versions()] == [1, 2, 3]  # exactly one new version
    assert again.version == 3 and registry.get(3).status in ("promoted", "refused")
    replay = registry.get(3).data["train"]["replay"]
    assert (replay["pool"], replay["sampled"], replay["earlier_round_labels"]) == (N + 12, 4, 12)
    assert registry.promoted().version == (3 if again.promoted else promoted)
    assert Rounds(store).last(1)[0].status == "done"


def test_a_promotion_during_the_round_is_not_overridden(setting):
    """An operator promotes (or rolls back) while a round trains: the round's candidate was compared with the
    version it trained from, so it is not promoted over the new one, and says why."""
    config, store, registry, teacher = setting
    give_feedback(store, [against(t) for t in teacher])

    def operator(stage: str) -> None:
        if stage == "scored":
            other = registry.register(model_dir(), parent=None, who="ops")
            registry.promote(other.version, who="ops", why="hotfix")

    result = run_round(config, who="loop", store=store, on_stage=operator)
    assert result.verdict["promote"] and not result.promoted  # the gate said yes; the round did not
    assert result.version == 3 and registry.get(3).status == "refused"
    assert "version 2 was promoted while the round ran" in result.reason
    assert registry.promoted().version == 2 and result.serving == 2


def test_loop_run_from_the_command_line(setting, tmp_path, capsys, monkeypatch):
    from ximgctx.cli import main

    config, store, registry, teacher = setting
    give_feedback(store, [against(t) for t in teacher])
    path = tmp_path / "loop.yaml"
    key = tmp_path / "governance.key"
    key.write_text("loop-test-governance-key-0123456789")
    path.write_text(json.dumps(replace(config, min_new_labels=1000, key_file=str(key)).to_dict()))
    monkeypatch.delenv("XIMGCTX_GOVERNANCE_KEY", raising=False)
    argv = ["loop", "run", "--config", str(path), "--who", "cron", "--min-new-labels", "20"]
    assert main(argv) == 0  # the flag given wins over the file, though it is the field's default
    result = json.loads(capsys.readouterr().out)
    assert (result["version"], result["parent"], result["promoted"]) == (2, 1, True), result
    assert registry.get(2).who == "cron" and registry.promotions()[-1]["who"] == "cron"
    from ximgctx.governance.authors import MODEL_AUTHORS_FILE, read_author_digests
    from ximgctx.governance.keys import key_id

    digests, kid = read_author_digests(registry.get(2).path / MODEL_AUTHORS_FILE)
    assert kid == key_id(key.read_bytes()) and len(digests) == 6  # trained under the loop's key
    assert "XIMGCTX_GOVERNANCE_KEY" not in os.environ  # and the environment restored
    assert main(["loop", "history", "--config", str(path)]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["status"], v["lineage"]) for v in history["versions"]] == [
        (1, "retired", [1]),
        (2, "promoted", [2, 1]),
    ]
    assert main(["loop", "rollback", "--config", str(path), "--why", "test", "--who", "ops"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "promoted": 1,
        "digest": registry.get(1).digest,
        "generation": 3,
    }
