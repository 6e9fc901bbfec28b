"""Opening the queue database: SQLite (a file, WAL, ``BEGIN IMMEDIATE`` transactions) or PostgreSQL, with
the schema brought up to date by the shipped Alembic migrations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ximgctx._extras import missing_extra, require

try:
    from sqlalchemy import Engine, create_engine, event
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session, sessionmaker
except ImportError as e:
    raise missing_extra(e, feature="the labeling queue (ximgctx queue)") from None

from ximgctx.errors import ConfigError

__all__ = ["MIGRATIONS", "migrate", "open_engine", "transaction"]

#: The Alembic scripts shipped inside the package.
MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_setup(engine: Engine) -> None:
    """WAL (readers never block the writer), foreign keys, a busy timeout, secure deletion (a deleted row's
    bytes are overwritten with zeros: an erased author's posts leave no residue in free pages), and every
    transaction started with ``BEGIN IMMEDIATE``, so two writers never both read a free slot before one of
    them writes."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None  # the driver's own implicit BEGIN is replaced by ours below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute("PRAGMA synchronous=FULL")  # a committed vote survives a power cut, not only a crash
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def open_engine(url: str, *, migrate_schema: bool = True) -> Engine:
    """An engine on ``url`` (see :func:`~ximgctx.queue.config.database_url`), schema migrated to head."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise ConfigError(f"{path}: the folder of the queue database does not exist")
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_setup(engine)
    else:
        engine = create_engine(url, pool_size=8, max_overflow=24, pool_pre_ping=True)
    if migrate_schema:
        try:
            migrate(engine)
        except OperationalError as e:
            engine.dispose()
            raise ConfigError(f"cannot open the queue database: {e.orig}") from None
    return engine


def migrate(engine: Engine, revision: str = "head") -> None:
    """Run the shipped Alembic migrations up to ``revision`` on ``engine`` (idempotent)."""
    command = require("alembic.command", feature="the queue database's migrations")
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on any error (nothing half-written)."""
    with factory() as session, session.begin():
        yield session
