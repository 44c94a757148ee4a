"""The supplier directory cache never keeps a supplier as it was before a committed change.

A quality-defect return lowers the supplier's ranking. Its cached entry is dropped once
the return commits: a read of the supplier between the return's insert and its commit
sees the old row, and must not be kept for the cache's whole TTL (the stop CI of session
8 caught routing still ranking by the old defect rate). PostgreSQL and SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.supplier.app import MIGRATIONS
from services.supplier.domain import Credentials, NewSupplier
from services.supplier.handlers.aftersales import on_return_authorized
from services.supplier.store import Sealer, SupplierDirectory, SupplierUnitOfWork
from shared.db import create_engine, migrate_async, session_factory
from shared.events import ReturnAuthorized, ReturnLine, ReturnReason, new_envelope

SUPPLIER = "sup_acme"


def defect_return() -> ReturnAuthorized:
    order_id = f"ord_{uuid.uuid4().hex[:10]}"
    return ReturnAuthorized(
        order_id=order_id,
        return_id=f"ret_{uuid.uuid4().hex[:10]}",
        supplier_id=SUPPLIER,
        reason=ReturnReason.DAMAGED_IN_TRANSIT,
        lines=[ReturnLine(line_id=f"{order_id}-1", sku="MUG", quantity=1, supplier_id=SUPPLIER)],
        rma="RMA-1",
        return_address="Returns, 1 Dock Rd",
        authorized_at=datetime.now(UTC),
    )


@pytest.fixture
async def uows(database_url: Any) -> AsyncIterator[Any]:
    """A factory of units of work on one migrated database, sharing one directory whose
    entries would live a minute (far longer than the test)."""
    url = await database_url("supplier")
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
    yield make
    await engine.dispose()


async def defects_seen(make: Any) -> int:
    async with make() as uow:
        entry = await uow.suppliers.entry(SUPPLIER)
    assert entry is not None
    return int(entry.track.defective)


async def test_a_read_during_a_defect_return_is_not_kept_after_it_commits(uows: Any) -> None:
    assert await defects_seen(uows) == 0
    data = defect_return()
    async with uows() as returning:
        await on_return_authorized(new_envelope(data), data, returning)
        # another transaction reads the supplier before the return commits: the old row
        assert await defects_seen(uows) == 0
        await returning.commit()
    assert await defects_seen(uows) == 1


async def test_a_return_rolled_back_leaves_the_cached_entry_as_it_was(uows: Any) -> None:
    assert await defects_seen(uows) == 0
    data = defect_return()
    async with uows() as returning:
        await on_return_authorized(new_envelope(data), data, returning)
        await returning.rollback()
    assert await defects_seen(uows) == 0
