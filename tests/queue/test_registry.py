"""The model registry and the loop's round lock, on SQLite and on a real PostgreSQL server: versions copied
in verified, lineage rows, promotion and rollback (statuses, model generation, promotion and audit rows), a
hostile path in a row refused, and two rounds never at once."""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import update

from ximgctx._artifacts import artifact_digest
from ximgctx.errors import ArtifactError
from ximgctx.queue.models import ModelVersionRow, RoundRow
from ximgctx.queue.registry import Registry, RegistryError
from ximgctx.queue.rounds import RoundBusyError, RoundLostError, Rounds

from .._inference_fixtures import ROOT, tiny_model
from .._queue_fixtures import Postgres, make_store
from ..helpers import missing_service


@cache
def model_folder(seed: int) -> Path:
    return tiny_model(seed).save_pretrained(ROOT / f"registry-model-{seed}")


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres.start()
    if pg is None:
        missing_service(Postgres.why)
    yield pg
    pg.stop()


_DBS = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        store = make_store(str(tmp_path / "q.sqlite"))
    else:
        store = make_store(request.getfixturevalue("postgres").create_db(f"reg{next(_DBS)}"))
    yield store
    store.close()


def test_register_promote_rollback_and_lineage(db, tmp_path):
    reg = Registry(db, tmp_path / "registry")
    assert reg.promoted() is None and reg.generation() == 0 and reg.versions() == []
    v1 = reg.adopt(model_folder(0), who="ops")
    assert (v1.version, v1.parent, v1.status) == (1, None, "promoted")
    assert v1.digest == artifact_digest(model_folder(0))
    assert v1.path == (tmp_path / "registry").resolve() / "versions" / f"v1-{v1.digest[:12]}"
    assert artifact_digest(v1.path) == v1.digest and reg.generation() == 1
    with pytest.raises(RegistryError, match="already has a promoted version"):
        reg.adopt(model_folder(1), who="ops")

    data = {"new_labels": {"digest": "ab" * 32, "posts": 5}, "label_counts": {"meaning": {"ironic": 3}}}
    metrics = {"serving": {"tasks": {"meaning": 0.5}}, "candidate": {"tasks": {"meaning": 0.6}}}
    v2 = reg.register(
        model_folder(1), parent=1, data=data, metrics=metrics, verdict={"promote": True}, who="loop"
    )
    assert (v2.version, v2.parent, v2.status, v2.data, v2.metrics) == (2, 1, "candidate", data, metrics)
    assert reg.generation() == 1  # registering is not serving
    v2 = reg.promote(2, who="loop", role="loop", why="gate: meaning improved")
    assert v2.status == "promoted" and reg.get(1).status == "retired"
    assert reg.promoted() == reg.get(2) and reg.generation() == 2
    v3 = reg.register(model_folder(1), parent=2, verdict={"promote": False}, who="loop")
    assert reg.refuse(3, who="loop", why="gold regressed").status == "refused"
    assert [v.version for v in reg.lineage(3)] == [3, 2, 1]
    assert [v.version for v in reg.by_digest(v2.digest)] == [2, 3]
    assert v3.path != v2.path and artifact_digest(v3.path) == v2.digest

    back = reg.rollback(who="ops", why="complaints")
    assert back.version == 1 and back.status == "promoted" and reg.get(2).status == "retired"
    assert reg.generation() == 3
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback(who="ops")
    assert [(p["action"], p["from"], p["to"], p["who"]) for p in reg.promotions()] == [
        ("adopt", None, 1, "ops"),
        ("promote", 1, 2, "loop"),
        ("rollback", 2, 1, "ops"),
    ]
    assert reg.promotions()[1]["why"] == "gate: meaning improved"
    from ximgctx.queue.loop import LoopState

    actions = [a["action"] for a in LoopState(db).history()["audit"]]
    assert actions == ["register", "adopt", "register", "promote", "register", "refuse", "rollback"]
    assert LoopState(db).generation() == 0  # the label generation did not move


def test_rollback_walks_back_through_promotions(db, tmp_path):
    reg = Registry(db, tmp_path / "registry")
    reg.adopt(model_folder(0), who="ops")
    for _ in range(2):
        v = reg.register(model_folder(1), parent=reg.promoted().version, who="loop")
        reg.promote(v.version, who="loop")
    assert reg.promoted().version == 3
    assert reg.rollback(who="ops").version == 2
    assert reg.rollback(who="ops").version == 1


def test_a_hostile_or_altered_row_is_refused(db, tmp_path):
    reg = Registry(db, tmp_path / "registry")
    reg.adopt(model_folder(0), who="ops")
    outside = tmp_path / "elsewhere"
    shutil.copytree(model_folder(0), outside)
    for hostile in ("../elsewhere", str(outside), "versions/../../elsewhere"):
        with db.sessions.begin() as s:
            s.execute(update(ModelVersionRow).where(ModelVersionRow.version == 1).values(path=hostile))
        with pytest.raises(RegistryError, match="leaves the registry root|not a relative"):
            reg.promoted()
    link = reg.root / "versions" / "link"
    link.symlink_to(outside)
    with db.sessions.begin() as s:
        s.execute(update(ModelVersionRow).where(ModelVersionRow.version == 1).values(path="versions/link"))
    with pytest.raises(RegistryError, match="outside the registry root"):
        reg.get(1)
    # a row whose folder was altered is refused when promoted
    v2 = reg.register(model_folder(1), parent=None, who="loop")
    (v2.path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError):
        reg.promote(2, who="ops")
    with db.sessions.begin() as s:
        s.execute(update(ModelVersionRow).where(ModelVersionRow.version == 2).values(data="[1, 2]"))
    with pytest.raises(RegistryError, match="expected a JSON object"):
        reg.get(2)


def test_register_refuses_an_unverified_folder_and_leaves_nothing(db, tmp_path):
    reg = Registry(db, tmp_path / "registry")
    bad = tmp_path / "bad"
    shutil.copytree(model_folder(0), bad)
    (bad / "extra.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="extra.bin"):
        reg.register(bad, parent=None, who="ops")
    with pytest.raises(RegistryError, match="no version 7"):
        reg.register(model_folder(0), parent=7, who="ops")
    assert reg.versions() == [] and list((reg.root / "versions").iterdir()) == []


def test_the_round_lock(db):
    rounds = Rounds(db, lease_s=60)
    first = rounds.acquire("alice@host:1", now=1000.0)
    assert (first.status, first.stage, first.resumed) == ("running", "started", False)
    with pytest.raises(RoundBusyError, match=rf"round {first.id} is running \(owner alice@host:1"):
        rounds.acquire("bob@host:2", now=1030.0)
    rounds.advance(first.id, "alice@host:1", "labels", cursor={"max_row": 7}, state={"posts": 3})
    # alice dies: her lease runs out and bob takes the round over at its stage
    taken = rounds.acquire("bob@host:2", now=1e12)
    assert (taken.id, taken.stage, taken.cursor, taken.state, taken.attempts, taken.resumed) == (
        first.id,
        "labels",
        {"max_row": 7},
        {"posts": 3},
        2,
        True,
    )
    with pytest.raises(RoundLostError):
        rounds.advance(first.id, "alice@host:1", "trained")
    rounds.fail(taken.id, "bob@host:2", "RuntimeError: disk full")
    again = rounds.acquire("carol@host:3")
    assert again.id == first.id and again.attempts == 3 and again.error == "RuntimeError: disk full"
    done = rounds.finish(again.id, "carol@host:3", "done", {"promoted": False})
    assert done.status == "done" and rounds.last_done().id == first.id
    nxt = rounds.acquire("dave@host:4")
    assert nxt.id != first.id and not nxt.resumed
    assert [r.id for r in rounds.last()] == [nxt.id, first.id]
    with db.sessions() as s:
        assert json.loads(s.get(RoundRow, first.id).result) == {"promoted": False}


def test_an_unfinished_round_can_be_abandoned(db):
    rounds = Rounds(db, lease_s=60)
    assert rounds.abandon(who="ops") is None  # nothing to abandon
    first = rounds.acquire("alice@host:1", now=1000.0)
    with pytest.raises(RoundBusyError, match="cannot be abandoned while its lease is live"):
        rounds.abandon(who="ops", now=1001.0)
    rounds.fail(first.id, "alice@host:1", "ConfigError: the parent version's folder is gone")
    gone = rounds.abandon(who="ops", why="parent deleted")
    assert gone.id == first.id and gone.status == "abandoned"
    assert gone.error == "ConfigError: the parent version's folder is gone; abandoned by ops: parent deleted"
    fresh = rounds.acquire("bob@host:2")
    assert fresh.id != first.id and not fresh.resumed and rounds.last_done() is None
