"""The outbox relay's leadership: a PostgreSQL advisory lock, or a file lock beside SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, table, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import AUTOCOMMIT
from shared.uow import OUTBOX_CHANNEL


def lock_key(service: str) -> int:
    return zlib.crc32(f"outbox-relay:{service}".encode())


_HELD_WHERE = (
    "locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
    " AND classid = 0 AND objid::text::bigint = :k AND objsubid = 1"
)
HELD_SQL = f"SELECT count(*) FROM pg_locks WHERE {_HELD_WHERE}"  # noqa: S608 - constants
"""How many times the session running it holds the advisory lock `:k` (0 or 1)."""


def held(key: int) -> Any:
    """Whether the session running it holds the advisory lock `key` (a scalar subquery)."""
    return (
        select(func.count())
        .select_from(table("pg_locks"))
        .where(text(_HELD_WHERE).bindparams(k=key))
        .scalar_subquery()
    )


@contextlib.asynccontextmanager
async def lead(
    engine: AsyncEngine, key: int, on_notify: Callable[[], None]
) -> AsyncIterator[AsyncConnection | None]:
    """Wait for the lead and hold it. PostgreSQL: yields the lock's own connection, in
    autocommit, listening for outbox NOTIFYs (`on_notify`); SQLite: yields None."""
    if engine.dialect.name != "postgresql":
        async with _file_lock(engine):
            yield None
        return
    conn = await engine.connect()
    try:
        await conn.execution_options(isolation_level=AUTOCOMMIT)
        while not await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
            await conn.rollback()  # autocommit: nothing to end; the leader may be going
            await asyncio.sleep(2.0)
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.add_listener(OUTBOX_CHANNEL, lambda *_: on_notify())
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await conn.execute(text("SELECT pg_advisory_unlock_all()"))
        with contextlib.suppress(Exception):
            await conn.close()


@contextlib.asynccontextmanager
async def _file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    database = make_url(str(engine.url)).database or ""
    if not database or database == ":memory:":
        yield
        return
    path = Path(database + ".relay.lock")
    with path.open("a+") as handle:  # noqa: ASYNC230 - opening a lock file is instant
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(2.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
