"""The labeling queue on SQLite: schema, leases, overlap, gold, votes, privacy, erasure, and 20 labelers at
once over HTTP."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ximgctx import Post
from ximgctx.queue import ConflictError, NotAssignedError, QueueError
from ximgctx.queue.models import Base
from ximgctx.queue.report import export_manifest, queue_stats
from ximgctx.serve import ServeConfig, create_app

from .._inference_fixtures import model_dir
from .._queue_fixtures import answer, label_concurrently, make_store, public_posts
from .._serve_fixtures import API_KEY, png_data_url, running

pytestmark = pytest.mark.usefixtures("one_thread")


def test_migrations_create_exactly_the_models_schema(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert diff == []
    assert mode == "wal"


def test_overlap_distinct_labelers_and_lease_expiry(store):
    store.enqueue(public_posts(1))
    a, b, c = (store.labeler_for_token(store.add_labeler(n)) for n in ("ann", "bob", "cy"))
    la = store.lease(a, now=1000.0)
    assert store.lease(a, now=1001.0).item_id == la.item_id  # the same lease again, not a second one
    half = 1000.0 + store.config.lease_s / 2
    lb = store.lease(b, now=half)
    assert lb.item_id == la.item_id
    assert store.lease(c, now=half) is None  # overlap 2 reached
    # ann's lease expires: cy gets the slot; ann cannot vote on it any more
    assert store.lease(c, now=1000.0 + store.config.lease_s + 1).item_id == la.item_id
    with pytest.raises(NotAssignedError):
        store.vote(a, la.item_id, answer(0))
    assert store.vote(b, lb.item_id, answer(0)).votes == 3


def test_priority_review_before_select_before_file(store):
    store.enqueue(public_posts(1, "f"), source="file")
    store.enqueue(public_posts(1, "s"), source="select")
    store.enqueue(public_posts(1, "r"), source="review")
    who = store.labeler_for_token(store.add_labeler("ann"))
    order = []
    for _ in range(3):
        lease = store.lease(who)
        order.append(lease.post_id)
        store.vote(who, lease.item_id, {"meaning": "literal"})
    assert order == ["r0", "s0", "f0"]


def test_votes_are_checked_idempotent_and_private(store):
    store.enqueue(public_posts(2))
    ann, bob = (store.labeler_for_token(store.add_labeler(n)) for n in ("ann", "bob"))
    lease = store.lease(ann)
    with pytest.raises(QueueError, match="labels.meaning: expected one of"):
        store.vote(ann, lease.item_id, {"meaning": "funny"})
    with pytest.raises(QueueError, match="not a task"):
        store.vote(ann, lease.item_id, {"mood": "x"})
    with pytest.raises(NotAssignedError):
        store.item_for(bob, lease.item_id)  # bob never leased it: he cannot read it
    first = store.vote(ann, lease.item_id, answer(1), "the replies joke")
    again = store.vote(ann, lease.item_id, answer(1), "the replies joke")
    assert (first.votes, first.duplicate, again.votes, again.duplicate) == (3, False, 0, True)
    with pytest.raises(ConflictError):
        store.vote(ann, lease.item_id, answer(2))
    rows = store.vote_rows()
    assert len(rows) == 3 and {r["note"] for r in rows} == {"the replies joke"}


def test_governance_and_digests_keep_private_data_out_of_the_database(store, tmp_path):
    posts = public_posts(2)
    posts[0].text = "mail jane.doe@example.com or call +1 415 555 0132"
    posts += [
        Post("dm", None, "secret", [], {}, {"visibility": "public", "is_dm": True}),
        Post("priv", None, "hidden", [], {}, {"visibility": "private"}),
        Post("gone", None, "bye", [], {}, {"visibility": "public", "author": "quitter", "opt_out": True}),
    ]
    result = store.enqueue(posts)
    assert result.added == 2 and sum(result.dropped.values()) == 3
    token = store.add_labeler("Alice.Labeler")
    store.vote(store.labeler_for_token(token), store.lease(store.labeler_for_token(token)).item_id, answer(0))
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("q.sqlite*"))
    for secret in (
        b"jane.doe@example.com",
        b"555 0132",
        b"secret",
        b"hidden",
        b"alice.labeler",
        token.encode(),
    ):
        assert secret not in raw.lower()


def test_gold_items_measure_each_labeler(tmp_path):
    store = make_store(str(tmp_path / "g.sqlite"), overlap=2, gold_rate=1.0, seed=0)
    store.enqueue(
        public_posts(2, "gold"), gold={"gold0": {"meaning": "ironic"}, "gold1": {"meaning": "literal"}}
    )
    store.enqueue(public_posts(2))
    good, bad = (store.labeler_for_token(store.add_labeler(n)) for n in ("good", "bad"))
    for who, right in ((good, True), (bad, False)):
        for _ in range(4):
            lease = store.lease(who)
            truth = {"gold0": "ironic", "gold1": "literal"}.get(lease.post_id, "symbolic")
            store.vote(who, lease.item_id, {"meaning": truth if right else "symbolic"})
    stats = queue_stats(store)
    per = stats["gold"]["labelers"]
    assert sorted(round(v["accuracy"], 3) for v in per.values()) == [0.0, 1.0]
    assert all(v["task_votes"] == 2 for v in per.values())  # both saw both gold items (gold_overlap: all)
    assert stats["gold"]["accuracy"] == 0.5
    assert stats["counts"]["posts_gold"] == 2 and stats["throughput"]["answers"] == 8


def test_purge_removes_the_authors_items_votes_and_replies(store, tmp_path):
    store.enqueue(public_posts(10))  # authors author0..4 (two posts each), repliers replier0..2
    who = store.labeler_for_token(store.add_labeler("ann"))
    for i in range(10):
        store.vote(who, store.lease(who).item_id, answer(i))
    counts = store.purge_authors(["@AUTHOR1", "Replier2"])  # the governance identity rule applies
    # replier2 replied under p2, p5, p8 (p... kept); the loop's label rows of p1, p6 go, replies are cut
    assert counts == {"items": 2, "votes": 6, "replies": 3, "label_rows": 2}
    from sqlalchemy import select

    from ximgctx.queue.models import LabelRow

    with store.sessions() as s:
        rows = list(s.scalars(select(LabelRow)))
    assert sorted(r.post_id for r in rows) == [f"p{i}" for i in (0, 2, 3, 4, 5, 7, 8, 9)]
    cut = ("replier2", '"reply 2"', '"reply 5"', '"reply 8"')
    assert not any(text in r.post for r in rows for text in cut)
    assert sum('"reply ' in r.post for r in rows) == 5  # the other replies stay
    out = export_manifest(store, tmp_path / "labels.jsonl", method="majority")
    posts = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert out["posts"] == 8 and {p["id"] for p in posts} == {f"p{i}" for i in range(10)} - {"p1", "p6"}
    assert all(r.get("author") != "replier2" for p in posts for r in p["replies"])


def test_purge_finds_the_author_under_any_key_governance_reads(store):
    posts = public_posts(3)
    posts[0].meta = {"visibility": "public", "username": "Gone"}
    posts[1].meta = {"visibility": "public", "user": {"id": "gone", "name": "G"}}
    store.enqueue(posts)
    assert store.purge_authors(["gone"])["items"] == 2


def test_purge_removes_a_queued_post_quoting_the_author_as_the_index_does(store):
    """One erasure rule: a post quoting an opted-out author goes from the queue, as it goes from the search
    index and the label memory (governance.identity.erasure); a reply by them leaves only the reply."""
    from ximgctx.governance.identity import erasure

    posts = public_posts(3)
    posts[0].meta = {
        "visibility": "public",
        "author": "u1",
        "quoted_status": {"user": {"screen_name": "Gone"}},
    }
    posts[1].meta = {"visibility": "public", "author": "u2", "retweeted_status": {"author": "@gone"}}
    store.enqueue(posts)
    assert store.purge_authors(["gone"])["items"] == 2
    assert erasure({"u1", "gone"}, [[]], {"gone"}).drop_post  # the rule the index applies to these posts
    assert erasure({"u1"}, None, {"gone"}) == (False, ())
    assert erasure({"u1"}, [["x"], ["gone"]], {"gone"}) == (False, (1,))
    assert erasure({"u1", "gone"}, None, {"gone"}).drop_post  # replies inseparable: digests of all authors


def test_ximgctx_purge_erases_the_authors_from_a_queue_database(store, tmp_path, capsys):
    from ximgctx.cli import main

    from .._queue_fixtures import KEY

    store.enqueue(public_posts(10))
    who = store.labeler_for_token(store.add_labeler("ann"))
    for i in range(4):
        store.vote(who, store.lease(who).item_id, answer(i))
    (tmp_path / "opt_out.txt").write_text("author1\n")
    (tmp_path / "queue.key").write_bytes(KEY)
    db = str(tmp_path / "q.sqlite")
    argv = ["purge", "--opt-out", str(tmp_path / "opt_out.txt"), "--queue", db]
    code = main([*argv, "--queue-key-file", str(tmp_path / "queue.key")])
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 0 and line["target"] == "queue" and line["items"] == 2  # p1 and p6
    assert line["votes"] == 3  # ann voted on p1 (one vote per task), not yet on p6
    remaining = {r["post_id"] for r in store.vote_rows()}
    assert "p1" not in remaining and len(remaining) == 3


def test_export_is_a_governed_manifest_with_provenance(store, tmp_path):
    store.enqueue(public_posts(3))
    ids = [store.labeler_for_token(store.add_labeler(n)) for n in ("a", "b")]
    for who in ids:
        for _ in range(3):
            lease = store.lease(who)
            store.vote(who, lease.item_id, {"meaning": "ironic", "intent": ["joke"]})
    report = export_manifest(store, tmp_path / "out.jsonl")
    posts = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert report["posts"] == 3 and report["votes"] == 12
    for p in posts:
        assert p["labels"]["meaning"]["ironic"] > 0.9  # soft labels (Dawid–Skene posteriors)
        assert p["meta"]["label_provenance"]["labelers"] == 2
        assert p["meta"]["label_provenance"]["method"] == "soft"
        assert "policy_sha256" in p["meta"]["governance"]


# ------------------------------------------------------------------------------------------- HTTP
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("served") / "q.sqlite"
    store = make_store(str(db), overlap=3, gold_rate=0.0)
    app = create_app(
        model_dir(), config=ServeConfig(api_keys=[f"{API_KEY} moderate,search,admin"]), queue=store
    )
    with running(app) as url:
        yield url, store
    store.close()


def test_twenty_labelers_at_once_sqlite(served):
    url, store = served
    posts = [
        {**p.to_dict(), "image": png_data_url((10 * i, 80, 160))} for i, p in enumerate(public_posts(30, "c"))
    ]
    r = httpx.post(
        f"{url}/v1/queue/items", json={"posts": posts}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert r.status_code == 200 and r.json()["added"] == 30, r.text
    tokens = [store.add_labeler(f"crowd{i}") for i in range(20)]
    accepted = label_concurrently(url, tokens, per_labeler=6)
    check_concurrent_result(store, accepted, items=30, overlap=3, labelers=20, per_labeler=6)


def check_concurrent_result(store, accepted, *, items, overlap, labelers, per_labeler):
    """No slot leased twice, no vote lost, overlap honoured (shared with the PostgreSQL test)."""
    pairs = Counter((a["labeler"], a["item_id"]) for a in accepted)
    assert max(pairs.values()) == 1  # no labeler got the same item twice
    per_item = Counter(a["item_id"] for a in accepted)
    assert max(per_item.values()) <= overlap
    assert len(accepted) == min(items * overlap, labelers * per_labeler)
    rows = store.vote_rows()
    stored = Counter((r["post_id"], r["labeler"], r["task"]) for r in rows)
    assert max(stored.values()) == 1 and len(rows) == 3 * len(accepted)  # every accepted vote, once
    with store.sessions() as s:
        from sqlalchemy import func, select

        from ximgctx.queue.models import Assignment, Item

        taken = dict(s.execute(select(Item.id, Item.taken)).all())
        counted = dict(s.execute(select(Assignment.item_id, func.count()).group_by(Assignment.item_id)).all())
    assert {k: v for k, v in taken.items() if v} == counted  # the lease counter matches the rows


def test_http_auth_privacy_and_errors(served):
    url, store = served
    store.enqueue(public_posts(1, "auth"))
    assert httpx.post(f"{url}/v1/queue/lease").status_code == 401
    bad = httpx.post(f"{url}/v1/queue/lease", headers={"Authorization": "Bearer xq_nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_token"
    t1, t2 = store.add_labeler("priv1"), store.add_labeler("priv2")
    h1, h2 = {"Authorization": f"Bearer {t1}"}, {"Authorization": f"Bearer {t2}"}
    item = httpx.post(f"{url}/v1/queue/lease", headers=h1).json()["item"]
    assert set(item["post"]) == {"id", "text", "replies"}  # no meta (author), no labels
    other = httpx.get(f"{url}/v1/queue/items/{item['item_id']}", headers=h2)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_assigned"
    assert httpx.get(f"{url}/queue/items/{item['item_id']}/image", headers=h2).status_code == 404
    assert httpx.get(f"{url}/v1/queue/stats", headers=h1).status_code == 401  # labelers are not operators
    wrong = httpx.post(
        f"{url}/v1/queue/items/{item['item_id']}/vote", headers=h1, json={"labels": {"x": "y"}}
    )
    assert wrong.status_code == 400 and "not a task" in wrong.json()["error"]["message"]
    stats = httpx.get(f"{url}/v1/queue/stats", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert stats.status_code == 200 and stats.json()["counts"]["posts"] >= 1


def test_review_decisions_are_queued_once_per_post(store):
    from types import SimpleNamespace

    from ximgctx.serve.queue_routes import queue_reviews

    a, b = public_posts(2)
    a.id = b.id = "input-0"  # what the service names posts sent without an id, request after request
    review, allow = SimpleNamespace(decision="review"), SimpleNamespace(decision="allow")
    assert queue_reviews(store, [a], [review]) == 1
    assert queue_reviews(store, [b], [review]) == 1  # another post with the same request id: queued too
    assert queue_reviews(store, [a], [review]) == 0  # the same post again: already waiting
    assert queue_reviews(store, [a, b], [allow, allow]) == 0
    assert store.count()["items"] == 2
    who = store.labeler_for_token(store.add_labeler("rev"))
    lease = store.lease(who)
    assert lease.post_id.startswith("review-")
    assert store.item_for(who, lease.item_id).post.meta["request_post_id"] == "input-0"


def test_cli_labeler_add_export_stats(tmp_path, capsys):
    from ximgctx import write_posts
    from ximgctx.cli import main

    from .._queue_fixtures import KEY

    key = tmp_path / "queue.key"
    key.write_bytes(KEY)
    db = str(tmp_path / "cli.sqlite")
    common = ["--db", db, "--queue-key-file", str(key), "--overlap", "1"]
    write_posts(public_posts(4, "cli"), tmp_path / "posts.jsonl")
    assert (
        main(["queue", "add", "--data", str(tmp_path / "posts.jsonl"), "--model", str(model_dir()), *common])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["added"] == 4
    assert main(["queue", "labeler", "add", "Cli.Person", *common]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("xq_")
    store = make_store(db, overlap=1)
    who = store.labeler_for_token(token)
    view = store.item_for(who, store.lease(who).item_id)
    assert set(view.scores) == {"objects", "meaning", "intent"}  # the model's scores, stored on the way in
    for i in range(4):
        store.vote(who, store.lease(who).item_id if i else view.item_id, answer(i))
    assert (
        main(["queue", "export", "--out", str(tmp_path / "out.jsonl"), "--method", "majority", *common]) == 0
    )
    assert json.loads(capsys.readouterr().out)["posts"] == 4
    assert main(["queue", "stats", "--out", str(tmp_path / "stats.json"), *common]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["counts"]["task_votes"] == 12 and stats["counts"]["answers"] == 4
    assert stats["throughput"]["answers"] == 4 and set(stats["units"]) >= {"answers", "task_votes", "posts"}
    (tmp_path / "names.txt").write_text("# the operator's list\ncli.person\nnobody-registered\n")
    assert (
        main(
            [
                "queue",
                "stats",
                "--out",
                str(tmp_path / "named.json"),
                "--names",
                str(tmp_path / "names.txt"),
                *common,
            ]
        )
        == 0
    )
    named = json.loads((tmp_path / "named.json").read_text())["labelers"]
    assert [(p.get("name"), p["answers"]) for p in named] == [("cli.person", 4)]  # the digest, named
    assert main(["queue", "labeler", "list", "--names", str(tmp_path / "names.txt"), *common]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["labelers"]
    assert listed["name"] == "cli.person" and listed["labeler"] == named[0]["labeler"]
    assert main(["queue", "labeler", "revoke", "cli.person", *common]) == 0
    with pytest.raises(QueueError, match="revoked"):
        store.labeler_for_token(token)
    assert main(["queue", "stats", "--db", db]) == 2  # no key: one clear line, not a traceback
    assert "no queue key" in capsys.readouterr().err
