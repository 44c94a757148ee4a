"""A consumed chunk of supplier events, on real PostgreSQL and SQLite (issue 15, lever 2):
the orders it moves are locked and loaded together, its timeline entries written in one
statement, and every order ends exactly as when its events were applied one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from services.order.consumers import BATCH, CONSUMERS
from services.order.domain import Order
from services.order.tables import order_timeline
from shared.consumer import MessageProcessor, PermanentError
from shared.events import (
    ConfirmedLine,
    DelayReason,
    EventData,
    OrderCancelled,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    new_envelope,
)
from shared.testing import eventually
from tests.support import order_store as store
from tests.support.order_store import Rig

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def rig(database_url: Any) -> AsyncIterator[store.Rig]:
    async with store.order_store(await database_url("order")) as found:
        yield found


def sent(rig: Rig, start: str) -> int:
    return sum(1 for sql in rig.statements if sql.lstrip().startswith(start))


def locks(rig: Rig) -> int:
    return sum(1 for sql in rig.statements if "FOR UPDATE" in sql)


async def place(rig: Rig, n: int) -> Order:
    return await store.place(rig, n, lines=2)


def confirmed(order: Order, ref: str) -> SupplierConfirmed:
    return SupplierConfirmed(
        order_id=order.id,
        supplier_id="sup-a",
        supplier_order_ref=ref,
        lines=[
            ConfirmedLine(line_id=ln.line_id, quantity=ln.quantity, unit_cost=Decimal("3.10"))
            for ln in order.lines
        ],
        currency="EUR",
        ship_by=NOW + timedelta(hours=48),
    )


def dispatched(order: Order, tracking: str) -> ShipmentDispatched:
    return ShipmentDispatched(
        order_id=order.id,
        supplier_id="sup-a",
        carrier="dhl",
        tracking_number=tracking,
        line_ids=[ln.line_id for ln in order.lines],
    )


def story(orders: list[Order]) -> list[EventData]:
    """One chunk: a confirmation each, a second event for the first order in the same
    chunk, an order whose first event is not the suppliers' (cancelled, then confirmed:
    not locked ahead), a delay and a delivery."""
    a, b, c = orders
    return [
        confirmed(a, "SO-A"),
        OrderCancelled(order_id=c.id, reason="customer asked"),
        confirmed(b, "SO-B"),
        dispatched(a, "1ZA"),
        confirmed(c, "SO-C"),
        ShipmentDelayed(
            order_id=b.id,
            supplier_id="sup-a",
            reason=DelayReason.CARRIER_EXCEPTION,
            severity=Severity.NORMAL,
        ),
        ShipmentDelivered(order_id=a.id, tracking_number="1ZA", delivered_at=NOW),
    ]


async def seen_by_customer(rig: Rig, order: Order) -> tuple[Any, ...]:
    """What an order's page shows: status, lines, allocations, shipments, its timeline."""
    async with rig.uow() as uow:
        now = await uow.orders.get(order.id)
        timeline = await uow.timeline.of(order.id)
    assert now is not None
    return (
        now.status,
        now.delayed,
        [(ln.sku, ln.unit_cost, ln.supplier_id) for ln in now.lines],
        [a.supplier_order_ref for a in now.allocations],
        [(s.tracking_number, s.delivered_at) for s in now.shipments],
        [(e.type, e.note) for e in timeline],
    )


def messages(events: list[EventData]) -> list[tuple[str, bytes]]:
    envelopes = [new_envelope(data) for data in events]
    return [(e.type, e.to_bytes()) for e in envelopes]


async def one_by_one_then_chunked(
    rig: Rig, one_by_one: list[EventData], chunked: list[EventData]
) -> None:
    """`one_by_one` applied an event at a time, then (statements counted from here on)
    `chunked` as one chunk; every event of both applied."""
    single = MessageProcessor("order", CONSUMERS, rig.uow)
    for topic, raw in messages(one_by_one):
        assert await single.process(topic, raw)
    rig.clear()
    chunk = MessageProcessor("order", CONSUMERS, rig.uow, batch_handler=BATCH)
    assert await chunk.process_many(messages(chunked)) == [True] * len(chunked)


async def test_a_chunk_ends_every_order_as_its_events_one_by_one_do(rig: Rig) -> None:
    one_by_one = [await place(rig, n) for n in (1, 2, 3)]
    chunked = [await place(rig, n) for n in (4, 5, 6)]
    await one_by_one_then_chunked(rig, story(one_by_one), story(chunked))

    for before, after in zip(one_by_one, chunked, strict=True):
        expected, got = await seen_by_customer(rig, before), await seen_by_customer(rig, after)
        assert got == expected
    assert (await seen_by_customer(rig, chunked[0]))[0] == "delivered"
    postgres = rig.engine.dialect.name == "postgresql"
    # PostgreSQL: the chunk's two orders locked together; then, each on its own, the
    # cancelled order and the first order again (the cancellation's flush came between);
    # the other later events find their order as the chunk left it; SQLite: no locks
    assert locks(rig) == (3 if postgres else 0)
    # every entry of the chunk at once (PostgreSQL: with the last orders' writes, `one_trip`)
    assert [table for table, _ in rig.writes].count("order_timeline") == 1


def order_reads(rig: Rig) -> int:
    return sum(1 for sql in rig.statements if sql.lstrip().startswith("SELECT customer_order"))


async def test_an_orders_later_events_in_a_chunk_find_it_as_the_chunk_left_it(
    rig: Rig,
) -> None:
    """Confirmed, dispatched and delivered in one chunk: the order is locked and read once,
    written once, and ends as the three events applied one by one leave it."""
    alone, chunked = await place(rig, 1), await place(rig, 2)

    def lifecycle(order: Order) -> list[EventData]:
        return [
            confirmed(order, "SO-1"),
            dispatched(order, "1Z1"),
            ShipmentDelivered(order_id=order.id, tracking_number="1Z1", delivered_at=NOW),
        ]

    await one_by_one_then_chunked(rig, lifecycle(alone), lifecycle(chunked))
    postgres = rig.engine.dialect.name == "postgresql"
    assert locks(rig) == (1 if postgres else 0)
    assert order_reads(rig) == (2 if postgres else 1)  # PostgreSQL: the lock, then the load
    assert [table for table, _ in rig.writes].count("customer_order") == 1
    assert await seen_by_customer(rig, chunked) == await seen_by_customer(rig, alone)
    assert (await seen_by_customer(rig, chunked))[0] == "delivered"


async def test_a_chunk_of_confirmations_writes_each_table_once(rig: Rig) -> None:
    """Five orders confirmed in one chunk: one statement per table for all of them, and
    each order as a confirmation applied on its own leaves it."""
    alone, chunked = await place(rig, 0), [await place(rig, n) for n in range(1, 6)]
    single = MessageProcessor("order", CONSUMERS, rig.uow)
    [(topic, raw)] = messages([confirmed(alone, "SO-0")])
    assert await single.process(topic, raw)

    rig.clear()
    chunk = MessageProcessor("order", CONSUMERS, rig.uow, batch_handler=BATCH)
    events = [confirmed(o, f"SO-{n}") for n, o in enumerate(chunked, 1)]
    assert await chunk.process_many(messages(events)) == [True] * 5
    tables = ("customer_order", "order_line", "allocation", "order_timeline")
    assert sorted(table for table, _ in rig.writes if table in tables) == sorted(tables)
    assert [rows for table, rows in rig.writes if table in tables[1:3]] == [10, 5]
    # PostgreSQL: the four in ONE statement (`one_trip`), SQLite one statement each
    postgres = rig.engine.dialect.name == "postgresql"
    assert sent(rig, "WITH o AS") == (1 if postgres else 0)
    assert sum(sent(rig, w) for w in ("UPDATE", "INSERT INTO")) == (1 if postgres else 5)

    expected = await seen_by_customer(rig, alone)
    for order in chunked:
        status, delayed, lines, allocations, shipments, timeline = await seen_by_customer(
            rig, order
        )
        assert (status, delayed, lines, shipments, timeline) == (
            expected[0],
            expected[1],
            expected[2],
            expected[4],
            expected[5],
        )
        assert allocations == [f"SO-{chunked.index(order) + 1}"]


async def test_a_chunk_is_applied_once_and_a_redelivery_changes_nothing(rig: Rig) -> None:
    orders = [await place(rig, n) for n in (1, 2, 3)]
    chunk = MessageProcessor("order", CONSUMERS, rig.uow, batch_handler=BATCH)
    sent = messages(story(orders))
    assert await chunk.process_many(sent) == [True] * 7
    seen = [await seen_by_customer(rig, o) for o in orders]
    assert await chunk.process_many(sent) == [False] * 7
    assert [await seen_by_customer(rig, o) for o in orders] == seen


async def timeline_rows(rig: Rig) -> int:
    async with rig.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(order_timeline)) or 0)


async def test_a_chunk_with_an_unknown_order_writes_nothing(rig: Rig) -> None:
    """The whole chunk rolls back (the runner then retries it message by message)."""
    known = await place(rig, 1)
    ghost = confirmed(known, "SO-2").model_copy(update={"order_id": "ord_unknown"})
    before = await timeline_rows(rig)
    chunk = MessageProcessor("order", CONSUMERS, rig.uow, batch_handler=BATCH)
    with pytest.raises(PermanentError, match="ord_unknown"):
        await chunk.process_many(messages([confirmed(known, "SO-1"), ghost]))
    assert await timeline_rows(rig) == before
    assert (await seen_by_customer(rig, known))[3] == []


async def test_the_timeline_reads_what_its_transaction_added(rig: Rig) -> None:
    order = await place(rig, 1)
    async with rig.uow() as uow:
        await uow.timeline.add(new_envelope(OrderCancelled(order_id=order.id, reason="asked")))
        entries = await uow.timeline.of(order.id)
        assert [e.type for e in entries][-1] == "order-cancelled"
        await uow.rollback()
    assert [e for e in (await seen_by_customer(rig, order))[5] if e[0] == "order-cancelled"] == []


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite's BEGIN IMMEDIATE serialises writers
async def test_a_chunk_waits_for_a_lock_holder_and_moves_what_it_committed(rig: Rig) -> None:
    """The chunk's load comes after its locks: a dispatch waiting on a transaction that
    confirms the order sees that confirmation once it commits."""
    order = await place(rig, 1)
    chunk = MessageProcessor("order", CONSUMERS, rig.uow, batch_handler=BATCH)

    async with rig.uow() as first:
        held = await first.orders.get(order.id, for_update=True, pii=False)
        assert held is not None
        waiter = asyncio.create_task(chunk.process_many(messages([dispatched(order, "1Z1")])))
        locked = store.waiting_on_a_lock
        await eventually(lambda: locked(rig.engine), what="the chunk waiting on the order's lock")
        held.apply(confirmed(order, "SO-1"), NOW)
        await first.orders.save(held)
        await first.commit()
    assert await asyncio.wait_for(waiter, 10) == [True]
    status, _, lines, allocations, shipments, _ = await seen_by_customer(rig, order)
    assert (status, allocations, shipments) == ("shipped", ["SO-1"], [("1Z1", None)])
    assert {supplier for _, _, supplier in lines} == {"sup-a"}
