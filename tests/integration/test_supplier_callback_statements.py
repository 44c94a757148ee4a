"""The lifecycle's cheaper statements on PostgreSQL and SQLite: an in-transit update is one
guarded upsert (unknown parcels write nothing, a redelivery changes nothing), and marking
placed orders received is one statement that skips rows a callback holds (PostgreSQL).
On PostgreSQL both are one statement with their delivery id, sent without BEGIN/COMMIT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.supplier.app import MIGRATIONS
from services.supplier.domain import (
    AllocatedLine,
    Credentials,
    Line,
    NewSupplier,
    RoutingRequest,
    State,
    SupplierOrder,
)
from services.supplier.handlers import callbacks, dispatch
from services.supplier.handlers.callbacks import Outcome, SupplierCallback, TrackingUpdate
from services.supplier.store import Sealer, SupplierDirectory, SupplierUnitOfWork
from services.supplier.tables import supplier_order, tracking_movement, waiting_line
from shared.db import aware, create_engine, migrate_async, session_factory
from tests.support.round_trips import round_trips

pytestmark = pytest.mark.integration
SUPPLIER = "sup_a"
CHECK_AFTER = timedelta(seconds=30)


def no() -> bool:
    return False


@dataclass
class Db:
    engine: AsyncEngine
    sessions: Any
    directory: SupplierDirectory
    backend: str

    def uow(self) -> SupplierUnitOfWork:
        # as in a service whose relay leads in its own process: no NOTIFY for other ones
        return SupplierUnitOfWork(self.sessions, directory=self.directory, notify_others=no)

    async def rows(self, query: Any) -> list[Any]:
        async with self.sessions() as s:
            return list(await s.execute(query))

    async def state(self, so_id: str) -> tuple[str, str | None]:
        cols = supplier_order.c
        [row] = await self.rows(select(cols.state, cols.supplier_order_ref).where(cols.id == so_id))
        return row.state, row.supplier_order_ref

    async def waiting(self) -> list[tuple[str, str]]:
        rows = await self.rows(select(waiting_line.c.order_id, waiting_line.c.line_id))
        return sorted((r.order_id, r.line_id) for r in rows)

    async def movements(self) -> dict[str, datetime]:
        rows = await self.rows(select(tracking_movement))
        return {r.tracking_number: aware(r.moved_at) for r in rows}


@pytest.fixture
async def db(database_url: Any, backend: str) -> AsyncIterator[Db]:
    url = await database_url("supplier")
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)  # counts its statements
    directory = SupplierDirectory(Sealer(str, str), ttl_s=600)  # read once: not counted
    found = Db(engine, session_factory(engine), directory, backend)
    async with found.uow() as uow:
        new = NewSupplier(SUPPLIER, SUPPLIER, "http://sim/a", Credentials("k", "s"))
        await uow.suppliers.add(SUPPLIER, new, datetime.now(UTC))
        await uow.commit()
    yield found
    await engine.dispose()


async def sending(db: Db, *so_ids: str) -> None:
    """Supplier orders committed `sending`, as routing leaves them for the dispatcher."""
    now = datetime.now(UTC)
    line = AllocatedLine("l1", "MUG", "A-MUG", 1, Decimal("3.00"), Decimal("9.00"), "USD")
    async with db.uow() as uow:
        await uow.supplier_orders.add_all(
            [SupplierOrder(i, f"ord-{i}", SUPPLIER, State.SENDING, [line], now) for i in so_ids]
        )
        await uow.commit()


async def mark_received(db: Db, *sent: tuple[str, str]) -> None:
    await dispatch.record_sent(db.uow(), list(sent))


async def overhead(db: Db) -> int:
    """Statements a unit of work sends with nothing in it (SQLite: its BEGIN)."""
    with round_trips(db.engine) as sent:
        async with db.uow() as uow:
            await uow.session.connection()
            await uow.commit()
    return sent.statements


async def test_placed_orders_are_marked_received_once_in_one_statement(db: Db) -> None:
    await sending(db, "so-1", "so-2")
    empty = await overhead(db)
    with round_trips(db.engine) as sent:
        await mark_received(db, ("so-1", "REF-1"), ("so-2", "REF-2"))
    assert sent.statements - empty == 1
    # PostgreSQL: the one statement is its own transaction (no BEGIN, no COMMIT)
    assert sent.transactions == (0 if db.backend == "postgresql" else 1)
    assert await db.state("so-1") == ("received", "REF-1")
    assert await db.state("so-2") == ("received", "REF-2")
    # again (a retried batch): no longer sending, so nothing changes
    await mark_received(db, ("so-1", "OTHER"))
    assert await db.state("so-1") == ("received", "REF-1")


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has one writer: nothing to skip
async def test_a_row_a_callback_holds_is_skipped_not_waited_for(db: Db) -> None:
    await sending(db, "so-1", "so-2")
    async with db.uow() as callback:  # a callback deciding so-1 holds its row
        assert await callback.supplier_orders.get("so-1", for_update=True) is not None
        await mark_received(db, ("so-1", "REF-1"), ("so-2", "REF-2"))
        assert await db.state("so-2") == ("received", "REF-2")
        assert await db.state("so-1") == ("sending", None)
        await callback.rollback()
    await mark_received(db, ("so-1", "REF-1"))  # the next batch gets it
    assert await db.state("so-1") == ("received", "REF-1")


async def track(db: Db, delivery: str, tracking: str, status: Any, at: datetime) -> Outcome:
    update = TrackingUpdate(tracking, status, at)
    return await callbacks.tracking_update(db.uow(), delivery, update)


async def test_in_transit_updates_record_movement_only_for_a_shipped_parcel(db: Db) -> None:
    await sending(db, "so-1")
    await mark_received(db, ("so-1", "REF-1"))
    for kind, delivery in (("accepted", "d-acc"), ("dispatched", "d-dis")):
        cb = SupplierCallback(kind, "so-1", "REF-1", None, "UPS", "1Z999")
        assert (await callbacks.supplier_callback(db.uow(), SUPPLIER, delivery, cb)).value == kind
    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

    assert await track(db, "t-0", "NOPE", "in_transit", t0) is Outcome.UNKNOWN_TRACKING_NUMBER
    assert await db.movements() == {}
    assert await track(db, "t-0", "NOPE", "in_transit", t0) is Outcome.DUPLICATE

    empty = await overhead(db)
    with round_trips(db.engine) as sent:
        assert await track(db, "t-1", "1Z999", "in_transit", t0) is Outcome.RECORDED
    if db.backend == "postgresql":  # the delivery id and the guarded upsert in one statement
        assert (sent.statements, sent.transactions) == (1, 0)
    else:  # the delivery id, the guarded upsert, in one transaction
        assert (sent.statements - empty, sent.transactions) == (2, 1)
    assert await db.movements() == {"1Z999": t0}

    later = t0 + timedelta(hours=3)
    assert await track(db, "t-1", "1Z999", "in_transit", later) is Outcome.DUPLICATE
    assert await db.movements() == {"1Z999": t0}
    assert await track(db, "t-2", "1Z999", "in_transit", later) is Outcome.RECORDED
    assert await db.movements() == {"1Z999": later}

    assert await track(db, "t-3", "1Z999", "delivered", later) is Outcome.DELIVERED
    assert (await db.state("so-1"))[0] == "delivered"
    assert await track(db, "t-4", "1Z999", "in_transit", later) is Outcome.RECORDED


async def decide(db: Db, so_id: str, kind: str, delivery: str) -> str:
    cb = SupplierCallback(kind, so_id, f"REF-{so_id}", None, "UPS", f"TN-{so_id}")  # type: ignore[arg-type]
    return (await callbacks.supplier_callback(db.uow(), SUPPLIER, delivery, cb)).value


async def test_a_decision_clears_waiting_lines_and_sends_nothing_for_them_when_none_wait(
    db: Db,
) -> None:
    await sending(db, "so-1", "so-2")
    await mark_received(db, ("so-1", "REF-so-1"), ("so-2", "REF-so-2"))
    async with db.uow() as uow:  # so-1's line was routed again while it waited
        now = datetime.now(UTC)
        await uow.waiting.wait("ord-so-1", ["l1"], "timeout", now, retry_after_s=5, max_retry_s=60)
        await uow.commit()
    assert await db.waiting() == [("ord-so-1", "l1")]
    async with db.uow() as uow:  # the supplier's entry cached (its SLA), as when warm
        assert await uow.suppliers.entry(SUPPLIER) is not None
    with round_trips(db.engine) as waited:
        assert await decide(db, "so-1", "accepted", "d1") == "accepted"
    assert await db.waiting() == []

    with round_trips(db.engine) as sent:
        assert await decide(db, "so-2", "accepted", "d2") == "accepted"
    assert sent.statements == waited.statements - 1  # no DELETE of waiting lines
    assert await decide(db, "so-2", "accepted", "d2") == "duplicate"
    assert await decide(db, "so-2", "dispatched", "d3") == "dispatched"
    assert (await db.state("so-2"))[0] == "dispatched"


async def test_a_callback_records_its_delivery_id_and_loads_its_order_in_one_round_trip(
    db: Db,
) -> None:
    await sending(db, "so-1", "so-2")
    await mark_received(db, ("so-1", "REF-so-1"), ("so-2", "REF-so-2"))
    async with db.uow() as uow:  # the supplier's entry cached (its SLA), as when warm
        assert await uow.suppliers.entry(SUPPLIER) is not None
    empty = await overhead(db)
    with round_trips(db.engine) as sent:
        assert await decide(db, "so-1", "accepted", "d1") == "accepted"
    # PostgreSQL: the delivery id with the locked load, the update, the tally, the outbox;
    # SQLite: the delivery id apart
    expected = 4 if db.backend == "postgresql" else 5
    assert sent.statements - empty == expected
    assert (await db.state("so-1"))[0] == "accepted"

    assert await decide(db, "so-1", "accepted", "d1") == "duplicate"
    assert await decide(db, "so-9", "accepted", "d9") == "unknown_order"
    assert await decide(db, "so-9", "accepted", "d9") == "duplicate"  # the id was kept
    assert await decide(db, "so-1", "dispatched", "d2") == "dispatched"

    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert await track(db, "t-1", "NOPE", "delivered", t0) is Outcome.UNKNOWN_TRACKING_NUMBER
    assert await track(db, "t-1", "NOPE", "delivered", t0) is Outcome.DUPLICATE
    assert await track(db, "t-2", "TN-so-1", "delivered", t0) is Outcome.DELIVERED
    assert await track(db, "t-2", "TN-so-1", "delivered", t0) is Outcome.DUPLICATE
    assert (await db.state("so-1"))[0] == "delivered"
    assert (await db.state("so-2"))[0] == "received"


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has one writer: nothing to wait on
async def test_a_redelivered_callback_waits_for_no_lock(db: Db) -> None:
    await sending(db, "so-1")
    await mark_received(db, ("so-1", "REF-so-1"))
    assert await decide(db, "so-1", "accepted", "d1") == "accepted"
    async with db.uow() as holder:  # another callback is deciding so-1
        assert await holder.supplier_orders.get("so-1", for_update=True) is not None
        assert await asyncio.wait_for(decide(db, "so-1", "accepted", "d1"), 5) == "duplicate"
        await holder.rollback()


def routing_request(order_id: str) -> RoutingRequest:
    now = datetime.now(UTC)
    line = Line("l1", "MUG", 1, Decimal("9.00"))
    return RoutingRequest(order_id, "USD", [line], "US", "10001", now, now)


async def test_placed_orders_of_any_chunk_size_are_kept_without_compiling_again(db: Db) -> None:
    """Chunks of 1, 3, 2 and 1 placed orders (one redelivered): SQLAlchemy compiles the
    insert once for one row and once for many, not once per chunk; a redelivered order is
    not kept twice."""
    compiled: list[Any] = []

    def seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.startswith("INSERT INTO routing_request"):
            compiled.append(context.compiled)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    kept: list[set[str]] = []
    for chunk in (["o1"], ["o2", "o3", "o4"], ["o4", "o5"], ["o6"]):
        async with db.uow() as uow:
            kept.append(await uow.routing_requests.add_many([routing_request(o) for o in chunk]))
            await uow.commit()
    event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert kept == [{"o1"}, {"o2", "o3", "o4"}, {"o5"}, {"o6"}]
    one, many, many_again, one_again = compiled
    assert (one_again is one, many_again is many, many is not one) == (True, True, True)
