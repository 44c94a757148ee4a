"""Reads that must answer while SQLite's write lock is held by someone else.

Every SQLite transaction of ours begins `BEGIN IMMEDIATE` (it takes the write lock) unless
it says it only reads. Under a burst the lock is always held by some writer, so a read
that takes it queues behind every write: the readiness probe called a busy database
unreachable, the relay's backlog gauge stalled the metrics scrape, and a supplier job whose
supplier had dropped out of the directory cache waited its turn just to read one row.
Here another process's connection holds the lock while each of them answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.supplier.app import MIGRATIONS
from services.supplier.domain import Credentials, NewSupplier
from services.supplier.handlers import dispatch
from services.supplier.store import Sealer, SupplierDirectory, SupplierUnitOfWork
from shared.bus import OutgoingMessage
from shared.db import create_engine, migrate_async, new_metadata, reachable, session_factory
from shared.events import OrderCancelled
from shared.outbox import OutboxRelay
from shared.uow import UnitOfWork

SUPPLIER = "sup_acme"
ANSWER_WITHIN_S = 10.0
"""Far below SQLite's 30 s busy timeout, which a read taking the lock would wait out."""


class Unused:
    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        raise AssertionError("nothing is published here")


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock until the block ends."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def assert_locked(path: Path) -> None:
    """No other writer gets the lock now (the holder really holds it)."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()


async def test_readiness_answers_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "ready.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        assert await reachable(engine)
        with write_lock(path):
            assert_locked(path)
            assert await reachable(engine, timeout_s=ANSWER_WITHIN_S), "busy, not unreachable"
    finally:
        await engine.dispose()


async def test_an_unreachable_database_is_not_ready() -> None:
    engine = create_engine("postgresql+asyncpg://nobody:x@127.0.0.1:1/none")
    try:
        assert not await reachable(engine)
    finally:
        await engine.dispose()


async def test_the_relay_counts_its_backlog_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
    sessions = session_factory(engine)
    try:
        async with UnitOfWork(sessions) as uow:
            uow.emit(OrderCancelled(order_id=f"ord_{uuid.uuid4().hex[:10]}", reason="test"))
            await uow.commit()
        relay = OutboxRelay("producer", engine, sessions, Unused(), poll_interval=300)
        with write_lock(path):
            assert_locked(path)
            async with asyncio.timeout(ANSWER_WITHIN_S):
                assert await relay.backlog() == 1
    finally:
        await engine.dispose()


SupplierDb = tuple[Path, SupplierDirectory, Callable[[], SupplierUnitOfWork]]
"""The database file (to lock from outside), its directory cache, a unit-of-work factory."""


@pytest.fixture
async def supplier_db(tmp_path: Path) -> AsyncIterator[SupplierDb]:
    path = tmp_path / "supplier.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    directory = SupplierDirectory(Sealer(str, str), ttl_s=60)

    def make() -> SupplierUnitOfWork:
        return SupplierUnitOfWork(sessions, directory=directory)

    async with make() as uow:
        new = NewSupplier("acme", "Acme", "http://sim/acme", Credentials("k", "s"))
        await uow.suppliers.add(SUPPLIER, new, datetime.now(UTC))
        await uow.commit()
    directory.invalidate(SUPPLIER)
    yield path, directory, make
    await engine.dispose()


async def test_a_supplier_job_reads_its_supplier_while_a_writer_holds_the_lock(
    supplier_db: SupplierDb,
) -> None:
    path, directory, make = supplier_db
    assert not directory.cached(SUPPLIER)[0], "the entry is read from the database"
    with write_lock(path):
        assert_locked(path)
        async with asyncio.timeout(ANSWER_WITHIN_S):
            entry = await dispatch.supplier_entry(make(), SUPPLIER)
            assert entry is not None and entry.api_base_url == "http://sim/acme"
            assert await dispatch.supplier_entry(make(), "sup_gone") is None
            assert await dispatch.next_status_check(make()) is None
