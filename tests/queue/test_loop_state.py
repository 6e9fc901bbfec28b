"""The loop's state in the queue's database: rows, the rule, undo with audit, the generation, sessions."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ximgctx import Post
from ximgctx.errors import ConfigError
from ximgctx.queue import LoginError
from ximgctx.queue.loop import LabelRule, LoopState, post_digest
from ximgctx.queue.models import Session

from .._queue_fixtures import make_store, public_posts


@pytest.fixture
def store(tmp_path):
    s = make_store(str(tmp_path / "q.sqlite"), overlap=5, gold_rate=0.0)
    yield s
    s.close()


def _vote_all(store, names, labels):
    """Each named labeler leases the one queued item and votes ``labels``; returns the vote results."""
    out = []
    for name in names:
        who = store.labeler_for_token(store.add_labeler(name))
        lease = store.lease(who)
        out.append(store.vote(who, lease.item_id, labels))
    return out


def test_one_vote_does_not_take_effect_k_agreeing_do_and_revoking_undoes(store):
    loop = LoopState(store)
    store.enqueue(public_posts(1))
    assert (loop.generation(), loop.effective()[1]) == (0, [])
    (first,) = _vote_all(store, ["ann"], {"meaning": "ironic"})
    assert not first.changed and loop.effective()[1] == [] and loop.generation() == 0  # one vote: nothing
    (other,) = _vote_all(store, ["bob"], {"meaning": "literal"})
    assert not other.changed and loop.effective()[1] == []  # 1 vs 1: no agreement
    (agree,) = _vote_all(store, ["cy"], {"meaning": "ironic"})
    assert agree.changed and loop.generation() == 1
    (entry,) = loop.effective()[1]
    assert entry.labels == {"meaning": "ironic"} and entry.post.id == "p0"
    assert store.revoke_labeler("cy", by="ops", why="spam labels")
    assert loop.effective()[1] == [] and loop.generation() == 2  # cy's vote stopped counting at once
    audit = loop.history()["audit"]
    assert [a["action"] for a in audit] == ["vote", "revoke"]
    assert audit[1]["who"] == "ops" and audit[1]["why"] == "spam labels"
    assert audit[0]["who"].startswith("labeler:") and audit[0]["detail"]["after"] == {"meaning": "ironic"}


def test_the_rule_is_the_operators_and_audited(store):
    loop = LoopState(store)
    store.enqueue(public_posts(1))
    _vote_all(store, ["ann"], {"meaning": "symbolic"})
    assert loop.effective()[1] == []
    loop.set_rule(LabelRule(k=1), who="ops", why="small team")
    assert [e.labels for e in loop.effective()[1]] == [{"meaning": "symbolic"}] and loop.generation() == 1
    assert loop.history()["audit"][-1]["detail"] == {
        "before": {"reviewer_alone": True, "k": 2},
        "after": {"reviewer_alone": True, "k": 1},
    }
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        LabelRule(k=0)


def test_reviewer_rows_decide_by_themselves_and_undo_restores_the_earlier_answer(store):
    loop = LoopState(store)
    post = Post(
        "x1", None, "meet at noon", [], {"meaning": "literal"}, {"visibility": "public", "author": "u"}
    )
    first = loop.add_feedback(post, who="rita", note="plain")
    second = loop.add_feedback(
        Post("x1", None, "meet at noon", [], {"meaning": "ironic"}, dict(post.meta)), who="sam"
    )
    other = loop.add_feedback(
        Post("x1", None, "another text, same id", [], {"meaning": "symbolic"}, dict(post.meta)), who="sam"
    )
    assert first["post_digest"] == second["post_digest"] == post_digest(post) != other["post_digest"]
    labels = {e.post_digest: e.labels for e in loop.effective()[1]}
    # the same post: sam's later feedback counts; a post that reuses the id is its own entry (no overwrite)
    assert labels == {
        first["post_digest"]: {"meaning": "ironic"},
        other["post_digest"]: {"meaning": "symbolic"},
    }
    assert sorted(e.entry_id for e in loop.effective()[1]) == sorted(
        ["x1", f"x1#{other['post_digest'][:12]}"]
    )
    g = loop.generation()
    undone = loop.revert(first["post_digest"], who="lead", why="sam misread it")
    assert undone == {"id": second["id"], "who": "sam", "role": "reviewer", "labels": {"meaning": "ironic"}}
    assert {e.post_digest: e.labels for e in loop.effective()[1]}[first["post_digest"]] == {
        "meaning": "literal"
    }
    assert loop.generation() == g + 1
    assert loop.remove_row(first["id"], who="lead", why="wrong post") is True
    assert loop.remove_row(first["id"], who="lead") is False  # already removed
    assert [e.post_digest for e in loop.effective()[1]] == [other["post_digest"]]
    assert loop.remove_post("x1", who="lead", why="erase") == 1  # the one live row left under that id
    assert loop.effective()[1] == [] and loop.revert("x1", who="lead") is None
    history = loop.history("x1")
    assert [(r["who"], r["removed"]["by"]) for r in history["rows"]] == [
        ("rita", "lead"),
        ("sam", "lead"),
    ] + [("sam", "lead")]
    actions = [(a["who"], a["action"], a["why"]) for a in history["audit"]]
    assert actions == [
        ("rita", "feedback", "plain"),
        ("sam", "feedback", ""),
        ("sam", "feedback", ""),
        ("lead", "revert", "sam misread it"),
        ("lead", "remove", "wrong post"),
        ("lead", "remove", "erase"),
    ]


def test_logout_deletes_the_session_row(store):
    session = store.login(store.add_labeler("ann"))
    assert store.labeler_for_session(session)
    assert store.logout(session) is True
    with pytest.raises(LoginError):
        store.labeler_for_session(session)
    assert store.logout(session) is False
    with store.sessions() as s:
        assert s.scalar(select(func.count(Session.id))) == 0


def test_a_queue_database_of_the_first_schema_upgrades_with_its_votes(tmp_path):
    """A database made by migration 0001 opens at head: the loop's tables are added, the generation starts at
    0 under the default rule, and votes become label rows."""
    from ximgctx.queue.db import migrate, open_engine

    db = tmp_path / "old.sqlite"
    engine = open_engine(f"sqlite:///{db}", migrate_schema=False)
    migrate(engine, "0001")
    engine.dispose()
    store = make_store(str(db), overlap=1, gold_rate=0.0)  # migrates to head on open
    store.enqueue(public_posts(1))
    who = store.labeler_for_token(store.add_labeler("ann"))
    store.vote(who, store.lease(who).item_id, {"meaning": "literal"})
    loop = LoopState(store)
    assert loop.generation() == 0 and loop.rule() == LabelRule() and len(store.vote_rows()) == 1
    assert [r["who"][:8] for r in loop.history()["rows"]] == ["labeler:"]
    with store.engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    assert version is not None and version >= "0002"
    store.close()
