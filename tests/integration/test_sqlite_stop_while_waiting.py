"""A service stopped while a query of its waits for SQLite's write lock leaves nothing behind.

A service stops by cancelling its background tasks, and the event loop then cancels
whatever is left. A task cancelled while its query waits on SQLite's busy timeout makes
SQLAlchemy terminate the connection: a graceful close queued behind the query, then (on the
second cancel) a forced stop of aiosqlite's worker thread. The close then asked the thread to
stop again and awaited an answer nothing would give: the task stayed pending for ever and
the process never finished shutting down (seen as a test stuck in teardown for 300 s).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
from sqlalchemy import text

from shared.db import create_engine
from shared.testing import eventually


async def test_a_close_racing_a_forced_stop_finishes(tmp_path: Path) -> None:
    connection = await aiosqlite.connect(tmp_path / "x.db")
    closing = asyncio.create_task(connection.close())
    await asyncio.sleep(0)  # the close is queued on the connection's thread
    stopped = connection.stop()  # and a forced stop behind it
    await asyncio.wait_for(closing, 10)
    assert stopped is not None
    await asyncio.wait_for(stopped, 10)  # the thread ended


async def test_a_query_cancelled_twice_while_it_waits_for_the_lock_leaves_no_task(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    before = asyncio.all_tasks()

    async def write() -> None:
        async with engine.begin() as conn:  # BEGIN IMMEDIATE: waits on the busy timeout
            await conn.execute(text("INSERT INTO t VALUES (1)"))

    def others() -> set[asyncio.Task[object]]:
        return asyncio.all_tasks() - before - {asyncio.current_task()}  # type: ignore[operator]

    async def waiting() -> bool:  # its connection checked out: the write awaits the thread
        return engine.sync_engine.pool.checkedout() == 1  # type: ignore[attr-defined]

    async def closing() -> list[asyncio.Task[object]]:
        return [t for t in others() if "graceful_close" in t.get_coro().__qualname__]

    task = asyncio.create_task(write())

    async def ended() -> bool:
        return task.done()

    try:
        await eventually(waiting, timeout=10, what="the write to wait on the lock")
        task.cancel()  # the service stops its background work: a graceful close begins
        [graceful] = await eventually(closing, timeout=10, what="a graceful close")
        task.cancel()  # the event loop cancels it again: the connection is stopped by force
        await eventually(ended, timeout=10, what="the write to end")
        graceful.cancel()  # and then the graceful close, still waiting behind the query
    finally:
        holder.execute("ROLLBACK")  # the lock comes free: the waiting query ends
        holder.close()

    async def nothing_left() -> bool:
        return not others()

    await eventually(nothing_left, timeout=35, what="every task of the stopped write to end")
    await engine.dispose()
    async with engine.connect() as conn:  # the database is still usable, nothing written
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
    await engine.dispose()
