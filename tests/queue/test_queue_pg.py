"""The labeling queue on a real PostgreSQL server (Debian's package, started here on 127.0.0.1; skipped with
the reason where it cannot start): the same schema, and 20 labelers leasing and voting at once."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ximgctx.queue.models import Base
from ximgctx.serve import ServeConfig, create_app

from .._inference_fixtures import model_dir
from .._queue_fixtures import Postgres, label_concurrently, make_store, public_posts
from .._serve_fixtures import API_KEY, running
from ..helpers import missing_service
from .test_queue import check_concurrent_result

pytestmark = pytest.mark.usefixtures("one_thread")


def _head() -> str:
    """The newest shipped migration."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from ximgctx.queue.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres.start()
    if pg is None:
        missing_service(Postgres.why)
    yield pg
    pg.stop()


def test_postgres_schema_matches_the_models(postgres):
    store = make_store(postgres.create_db("schema"))
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == _head()
    assert store.dialect == "postgresql"
    store.close()


def test_twenty_labelers_at_once_postgres(postgres):
    store = make_store(postgres.create_db("crowd"), overlap=3, gold_rate=0.0)
    store.enqueue(public_posts(30, "c"))
    tokens = [store.add_labeler(f"crowd{i}") for i in range(20)]
    app = create_app(
        model_dir(), config=ServeConfig(api_keys=[f"{API_KEY} moderate,search,admin"]), queue=store
    )
    with running(app) as url:
        accepted = label_concurrently(url, tokens, per_labeler=6)
    check_concurrent_result(store, accepted, items=30, overlap=3, labelers=20, per_labeler=6)
    store.close()


def test_leases_directly_from_many_threads_postgres(postgres):
    """Without HTTP in between: 20 threads lease at once; no item exceeds its overlap."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    store = make_store(postgres.create_db("raw"), overlap=2, gold_rate=0.0)
    store.enqueue(public_posts(10, "r"))
    who = [store.labeler_for_token(store.add_labeler(f"raw{i}")) for i in range(20)]

    def take(labeler: int) -> int | None:
        lease = store.lease(labeler)
        return None if lease is None else lease.item_id

    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(take, who))
    counts = Counter(g for g in got if g is not None)
    assert sum(counts.values()) == 20 and set(counts.values()) == {2}  # 10 items x overlap 2, all distinct
    store.close()


def test_the_loop_rule_on_postgres_with_votes_at_once(postgres):
    """Labelers voting on one item at the same moment: each vote sees the others (the item row is locked),
    so the agreeing pair takes effect and moves the generation, whichever commits last."""
    from concurrent.futures import ThreadPoolExecutor

    from ximgctx import Post
    from ximgctx.queue.loop import LoopState

    store = make_store(postgres.create_db("loop"), overlap=2, gold_rate=0.0)  # each round's pair: its item
    loop = LoopState(store)
    for round_ in range(3):
        store.enqueue(
            [Post(f"same{round_}", None, f"meet at noon {round_}", [], {}, {"visibility": "public"})]
        )
        who = [store.labeler_for_token(store.add_labeler(f"pg{round_}-{i}")) for i in range(2)]
        (item_id,) = {store.lease(w).item_id for w in who}
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda w, i=item_id: store.vote(w, i, {"meaning": "ironic"}), who))
        assert sorted(r.changed for r in results) == [False, True]  # exactly one vote made it effective
    assert loop.generation() == 3
    assert sorted(e.post.id for e in loop.effective()[1]) == ["same0", "same1", "same2"]
    post = Post("fb", None, "a reviewed post", [], {"meaning": "literal"}, {"visibility": "public"})
    row = loop.add_feedback(post, who="rita")
    assert loop.revert("fb", who="lead", why="test")["id"] == row["id"]
    assert [a["action"] for a in loop.history("fb")["audit"]] == ["feedback", "revert"]
    assert loop.generation() == 5
    store.close()
