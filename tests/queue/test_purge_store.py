"""A purge recorded in the loop store (SQLite and PostgreSQL): the audit record written first and completed
last, the erased authors announced (keyed) before anything is erased, the store's rows of theirs erased and
their audit rows scrubbed, and replicas' acknowledgements counted."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from ximgctx import Post, Reply
from ximgctx.data.io import write_posts
from ximgctx.governance import govern
from ximgctx.governance.identity import author_digest
from ximgctx.governance.keys import key_id
from ximgctx.purge import Target, run_purge
from ximgctx.queue.erasure import PurgeLog, acknowledge, erased_since, is_erased, wait_for_replicas
from ximgctx.queue.loop import LoopState
from ximgctx.queue.models import Replica

from .._queue_fixtures import KEY, Postgres, make_store
from ..helpers import missing_service

GKEY = b"purge-store-governance-key-0123456789"
AUTHOR = "gone_author_5150"


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres.start()
    if pg is None:
        missing_service(Postgres.why)
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "loop.sqlite")
    return request.getfixturevalue("postgres").create_db(f"purge_{int(time.time() * 1e6) % 10**9}")


def _post(pid: str, author: str, replies: list[Reply] | None = None) -> Post:
    post = Post(pid, None, f"text of {pid}", replies or [], {"meaning": "literal"}, {})
    post.meta = {"visibility": "public", "author": author}
    return govern([post], key=GKEY).posts[0]


def test_a_purge_in_the_store_is_announced_first_resumed_and_acknowledged(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XIMGCTX_QUEUE_KEY", KEY.decode())  # the queue target opens the store with it
    store = make_store(db)
    loop = LoopState(store)
    loop.add_feedback(_post("theirs", AUTHOR), who="rita", note="their words quoted")
    loop.add_feedback(_post("other", "u1", [Reply("a reply of theirs", AUTHOR)]), who="rita", note="kept")
    digest_before = loop.history("theirs")["rows"][0]["post_digest"]
    acknowledge(store, "replica-a", loop.generation())
    acknowledge(store, "replica-old", loop.generation())
    with store.sessions() as s, s.begin():
        s.get(Replica, "replica-old").seen_at = time.time() - 3600  # not seen for an hour: gone
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "replies": "oops"}\n')
    targets = [Target("queue", db), Target("data", str(bad))]
    before = loop.generation()

    failed = run_purge({AUTHOR.upper()}, targets, key=GKEY, store=store)
    assert failed.error is not None  # the manifest is unreadable: the purge stops, recorded as started
    (record,) = PurgeLog(store).records()
    assert record["state"] == "started" and record["key_id"] == key_id(GKEY)
    assert {t["target"]: t["state"] for t in record["targets"]} == {"data": "failed", "queue": "pending"}
    # announced before anything was erased: the keyed digest, never the id or an unkeyed digest
    assert [(k, d) for _, k, d in erased_since(store)] == [(key_id(GKEY), author_digest(AUTHOR, GKEY))]
    assert is_erased(store, key_id(GKEY), [author_digest(AUTHOR, GKEY) or ""])
    assert loop.generation() > before
    assert [r["post_id"] for r in loop.history()["rows"]] == ["theirs", "other"]  # not erased yet

    write_posts([_post("p1", "u2")], bad)  # the operator fixes the manifest; the same purge again
    done = run_purge({AUTHOR.upper()}, targets, key=GKEY, store=store, wait_replicas_s=0.3)
    assert done.error is None and done.resumed and done.record["id"] == record["id"]
    (completed,) = PurgeLog(store).records()  # one record
    assert completed["state"] == "completed" and completed["attempts"] == 2
    assert completed["generation"] == loop.generation() == done.replicas["generation"]
    assert completed["counts"]["queue.label_rows"] == 1 and completed["counts"]["queue.replies"] == 0
    assert len(erased_since(store)) == 1  # not announced twice
    # the store's rows of theirs are gone, their reply cut from the other post's row, the audit scrubbed
    rows = loop.history()["rows"]
    assert [r["post_id"] for r in rows] == ["other"]
    audit = loop.history()["audit"]
    assert [(a["detail"].get("erased"), a["why"]) for a in audit] == [(True, ""), (None, "kept")]
    assert digest_before not in json.dumps(audit)
    assert rows[0]["post_digest"] == audit[1]["detail"]["post_digest"]  # the cut post's new digest
    text = json.dumps(PurgeLog(store).records()) + json.dumps(loop.history())
    assert AUTHOR not in text and hashlib.sha256(AUTHOR.encode()).hexdigest() not in text
    # replica-a polled before the purge completed: pending; the hour-old one is gone, not waited for
    assert done.replicas["acknowledged"] == [] and done.replicas["pending"] == ["replica-a"]
    assert done.replicas["gone"] == ["replica-old"]
    acknowledge(store, "replica-a", completed["generation"])
    acked = wait_for_replicas(store, completed["generation"], 1.0)
    assert acked["acknowledged"] == ["replica-a"] and acked["pending"] == []
    acknowledge(store, "replica-a", completed["generation"], "index keyed by another governance key")
    assert wait_for_replicas(store, completed["generation"], 0.0)["pending"] == ["replica-a"]
    store.close()
