"""Alembic environment shared by every service's `migrations/env.py`."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shared.db import is_sqlite

_LOCK_KEY = 727_274_101  # advisory lock id held while migrating (PostgreSQL only)


def run_env(metadata: MetaData) -> None:
    """Run migrations online against the configured URL (called from env.py)."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not configured"
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    if is_sqlite(url):
        with _sqlite_lock(url):  # several workers starting at once migrate one at a time
            asyncio.run(_run_online(url, metadata))
    else:
        asyncio.run(_run_online(url, metadata))


@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with Path(database + ".migrate.lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _run_online(url: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    sqlite = is_sqlite(url)
    try:
        async with engine.connect() as connection:
            if not sqlite:
                await connection.execute(text(f"SELECT pg_advisory_lock({_LOCK_KEY})"))
            await connection.run_sync(_do_run, metadata, sqlite)
            await connection.commit()
    finally:
        await engine.dispose()


def _do_run(connection: Connection, metadata: MetaData, sqlite: bool) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
