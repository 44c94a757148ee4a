"""Database plumbing: async engines for SQLite and PostgreSQL, the platform tables, migrations."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from alembic import command
from alembic.config import Config
from prometheus_client import Counter
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Id = BigInteger().with_variant(Integer(), "sqlite")
"""Autoincrementing primary key: BIGINT on PostgreSQL, INTEGER (rowid) on SQLite."""


platform_metadata = MetaData(naming_convention=NAMING)

outbox_table = Table(
    "outbox_event",
    platform_metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("topic", String(128), nullable=False),
    Column("key", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Index(
        "ix_outbox_event_unpublished",
        "id",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
)
inbox_table = Table(
    "inbox_event",
    platform_metadata,
    Column("consumer", String(64), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("topic", String(128), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)


SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy stores a DateTime on SQLite (naive UTC); range queries compare these."""


def sqlite_moment(value: datetime | None) -> str | None:
    """`SQLITE_DATETIME` text of a moment, for statements written without SQLAlchemy's type
    processing (isoformat: several times faster than strftime)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # the offset ("+00:00") cut off: cheaper than `replace(tzinfo=None)` first
    return value.isoformat(" ", "microseconds")[:26]


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def dialect_insert(dialect: str) -> Any:
    """`insert` of the dialect, for `ON CONFLICT` clauses (PostgreSQL and SQLite agree)."""
    return (postgresql if dialect == "postgresql" else sqlite).insert


DIALECTS = ("postgresql", "sqlite")
"""The databases every service runs on."""


def per_dialect(build: Callable[[str], Any]) -> dict[str, Any]:
    """`build(dialect)` for each supported database: statements built once, at import,
    and looked up by the session's dialect name on every execution."""
    return {dialect: build(dialect) for dialect in DIALECTS}


def insert_skipping_conflicts(table: Table) -> dict[str, Any]:
    """`INSERT INTO table … ON CONFLICT DO NOTHING` for each supported database."""
    return per_dialect(lambda dialect: dialect_insert(dialect)(table).on_conflict_do_nothing())


def new_metadata() -> MetaData:
    """A service's metadata, already holding the platform's outbox and inbox tables."""
    metadata = MetaData(naming_convention=NAMING)
    outbox_table.to_metadata(metadata)
    inbox_table.to_metadata(metadata)
    return metadata


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


READ_ONLY = "read_only"
"""Execution option: this transaction only reads (SQLite: no write lock at BEGIN)."""
AUTOCOMMIT = "AUTOCOMMIT"
"""The `isolation_level` execution option of a connection with no BEGIN or COMMIT: each
statement is its own transaction (PostgreSQL: `UnitOfWork.single_statement`)."""


STATEMENTS = Counter(
    "dropship_db_statements_total",
    "SQL statements sent to the database: its round trips (an executemany counts once).",
)
TRANSACTIONS = Counter(
    "dropship_db_transactions_total", "Database transactions ended.", ["outcome"]
)


def ends_transaction(conn: Connection) -> bool:
    """Whether this commit or rollback ended a transaction (autocommit: there was none)."""
    return conn.get_execution_options().get("isolation_level") != AUTOCOMMIT


def count_round_trips(engine: AsyncEngine) -> AsyncEngine:
    """Count the engine's statements and transactions for the cost model (`bench stack`)."""
    committed, rolled_back = TRANSACTIONS.labels("commit"), TRANSACTIONS.labels("rollback")
    sync = engine.sync_engine

    def ended(counter: Any) -> Callable[[Connection], None]:
        def count(conn: Connection) -> None:
            if ends_transaction(conn):
                counter.inc()

        return count

    event.listen(sync, "before_cursor_execute", lambda *_: STATEMENTS.inc())
    event.listen(sync, "commit", ended(committed))
    event.listen(sync, "rollback", ended(rolled_back))
    return engine


async def reachable(engine: AsyncEngine, timeout_s: float = 2.0) -> bool:
    """The database answers a `SELECT 1` within `timeout_s` (readiness).

    Read-only, so on SQLite it waits for no writer: a probe taking the write lock would
    queue behind every write of a busy moment and call a busy database unreachable.
    """
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execution_options(**{READ_ONLY: True})
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


_aiosqlite_stop = getattr(aiosqlite.Connection.stop, "__wrapped__", aiosqlite.Connection.stop)


@functools.wraps(_aiosqlite_stop)
def _stop_once(connection: aiosqlite.Connection) -> asyncio.Future[Any] | None:
    """aiosqlite's `Connection.stop`, made idempotent (installed below).

    `stop` queues a sentinel that ends the connection's worker thread, and returns a
    future the thread resolves. SQLAlchemy terminates a connection whose task was
    cancelled mid-query (a service stopping while a query waits on SQLite's busy timeout)
    by starting a graceful `close` and, when cancelled again, a forced `stop`. The close
    then calls `stop` a second time: that sentinel sits behind the first, the thread is
    gone before it, and the close awaits a future nothing will resolve, so the event
    loop never finishes shutting down. A second call has nothing left to stop.
    """
    if not connection._running:  # already stopping: the thread ends at the first sentinel
        return None
    return _aiosqlite_stop(connection)


aiosqlite.Connection.stop = _stop_once  # type: ignore[method-assign,assignment]


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` transactions.

    `BEGIN IMMEDIATE` takes SQLite's write lock at the start of a transaction, so two
    writers queue on the busy timeout instead of failing on a lock upgrade. A connection
    with the execution option `read_only=True` begins a deferred transaction instead: it
    takes no lock and, in WAL mode, reads while a writer holds the lock (e.g. a webhook
    reading a signing secret before the signature is checked).
    """
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.pop("pool_pre_ping", None)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return count_round_trips(engine)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", False)  # a dead connection fails once; the pool resets
    kwargs.setdefault("pool_recycle", 1800)
    return count_round_trips(create_async_engine(url, **kwargs))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def alembic_config(migrations_dir: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def migrate(migrations_dir: Path, url: str) -> None:
    """Upgrade a service's database to the newest revision (blocking; safe to repeat).

    On PostgreSQL, concurrent starters serialise on an advisory lock in the migration
    environment, so several replicas starting at once migrate exactly once.
    """
    log.info("migrating database", extra={"migrations": str(migrations_dir)})
    command.upgrade(alembic_config(migrations_dir, url), "head")


async def migrate_async(migrations_dir: Path, url: str) -> None:
    await asyncio.to_thread(migrate, migrations_dir, url)
