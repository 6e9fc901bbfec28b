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
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
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
