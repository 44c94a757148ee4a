"""An order loads in one round trip (issue 15) exactly as it loaded in four: the order row,
then its lines, allocations and shipments, each read on its own (the loader before)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select

from services.order.consumers import CONSUMERS
from services.order.domain import Order
from services.order.handlers import hold_order
from services.order.repository import OrderFilter
from services.order.repository.rows import LEAN_COLUMNS, order_from_rows
from services.order.tables import allocation, customer_order, order_line, shipment
from shared.consumer import MessageProcessor
from shared.events import (
    ConfirmedLine,
    DelayReason,
    EventData,
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

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def rig(database_url: Any) -> AsyncIterator[store.Rig]:
    async with store.order_store(await database_url("order")) as found:
        yield found


async def apply(rig: Rig, *events: EventData) -> None:
    processor = MessageProcessor("order", CONSUMERS, rig.uow)
    for data in events:
        envelope = new_envelope(data)
        assert await processor.process(envelope.type, envelope.to_bytes())


async def busy_order(rig: Rig, n: int, channel: str = "storefront") -> str:
    """An order with two allocations and two shipments (one delivered), delayed."""
    order = await store.place(rig, n, channel)
    lines = [ln.line_id for ln in order.lines]

    def confirm(ids: list[str], ref: str, cost: str) -> SupplierConfirmed:
        return SupplierConfirmed(
            order_id=order.id,
            supplier_id="sup-a",
            supplier_order_ref=ref,
            lines=[ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal(cost)) for i in ids],
            currency="EUR",
            ship_by=NOW + timedelta(hours=48),
        )

    def dispatch(ids: list[str], tracking: str) -> ShipmentDispatched:
        return ShipmentDispatched(
            order_id=order.id,
            supplier_id="sup-a",
            carrier="dhl",
            tracking_number=tracking,
            line_ids=ids,
        )

    await apply(
        rig,
        confirm(lines[2:], "SO-2", "1.0001"),  # confirmed out of line order
        confirm(lines[:2], "SO-1", "3.10"),
        ShipmentDelayed(
            order_id=order.id,
            supplier_id="sup-a",
            reason=DelayReason.CARRIER_EXCEPTION,
            severity=Severity.NORMAL,
        ),
        dispatch(lines[3:], "1Z2"),
        dispatch(lines[:2], "1Z1"),
        ShipmentDelivered(order_id=order.id, tracking_number="1Z2", delivered_at=NOW),
    )
    return order.id


async def bare_order(rig: Rig, n: int) -> str:
    """An order with no lines, no allocations and no shipments, held by hand."""
    order = await store.place(rig, n)
    await hold_order(order.id, "check the address", rig.uow())
    async with rig.uow() as uow:
        await uow.session.execute(delete(order_line).where(order_line.c.order_id == order.id))
        await uow.commit()
    return order.id


async def four_reads(rig: Rig, order_id: str, pii: bool = True) -> Order:
    """The order as the loader before this change read it: four statements."""
    async with rig.uow() as uow:
        s = uow.session
        head = select(customer_order) if pii else select(*LEAN_COLUMNS)
        row = (await s.execute(head.where(customer_order.c.id == order_id))).one()
        lines = await s.execute(
            select(order_line)
            .where(order_line.c.order_id == order_id)
            .order_by(order_line.c.position)
        )
        allocs = await s.execute(
            select(allocation).where(allocation.c.order_id == order_id).order_by(allocation.c.id)
        )
        ships = await s.execute(
            select(shipment).where(shipment.c.order_id == order_id).order_by(shipment.c.id)
        )
        cipher = uow.cipher if pii else None
        return order_from_rows(row, lines.all(), allocs.all(), ships.all(), cipher)


async def test_busy_and_bare_orders_load_as_before_in_one_round_trip(rig: Rig) -> None:
    busy, bare = await busy_order(rig, 1), await bare_order(rig, 2)
    postgres = rig.engine.dialect.name == "postgresql"
    for order_id in (busy, bare):
        for pii in (True, False):
            expected = await four_reads(rig, order_id, pii)
            for for_update in (False, True):
                async with rig.uow() as uow:
                    rig.statements.clear()
                    loaded = await uow.orders.get(order_id, for_update=for_update, pii=pii)
                    reads = [sql for sql in rig.statements if sql.startswith("SELECT")]
                assert loaded == expected, (order_id, pii, for_update)
                assert len(reads) == (2 if for_update and postgres else 1)

    order = await four_reads(rig, busy)
    assert [ln.unit_cost for ln in order.lines] == [
        Decimal("3.10"), Decimal("3.10"), Decimal("1.0001"), Decimal("1.0001")
    ]  # fmt: skip
    assert [a.supplier_order_ref for a in order.allocations] == ["SO-2", "SO-1"]
    assert [(s.tracking_number, s.delivered_at) for s in order.shipments] == [
        ("1Z2", NOW),
        ("1Z1", None),
    ]
    assert order.delayed and order.customer.name == "Ann Lee 1"
    empty = await four_reads(rig, bare)
    assert (empty.lines, empty.allocations, empty.shipments) == ([], [], [])
    assert [h.note for h in empty.holds] == ["check the address"]


async def test_an_unknown_order_loads_as_none(rig: Rig) -> None:
    async with rig.uow() as uow:
        assert await uow.orders.get("ord_missing") is None
        assert await uow.orders.get("ord_missing", for_update=True, pii=False) is None
        assert await uow.orders.get_by_external("shopify", "#404", None, for_update=True) is None


async def test_a_shops_order_loads_by_its_number_as_before(rig: Rig) -> None:
    order_id = await busy_order(rig, 7, channel="shopify")
    expected = await four_reads(rig, order_id)
    for for_update in (False, True):
        async with rig.uow() as uow:
            loaded = await uow.orders.get_by_external("shopify", "#7", None, for_update=for_update)
        assert loaded == expected


async def test_a_page_of_orders_loads_in_two_round_trips_as_before(rig: Rig) -> None:
    ids = [await busy_order(rig, 1), await bare_order(rig, 2), await busy_order(rig, 3)]
    expected = {order_id: await four_reads(rig, order_id) for order_id in ids}
    async with rig.uow() as uow:
        rig.statements.clear()
        page, cursor = await uow.orders.list(OrderFilter(), limit=10, cursor=None)
        reads = [sql for sql in rig.statements if sql.startswith("SELECT")]
        assert len(reads) == 2  # the page, then every child row of its orders
        assert cursor is None
        assert {o.id: o for o in page} == expected
        first, cursor = await uow.orders.list(OrderFilter(), limit=2, cursor=None)
        rest, _ = await uow.orders.list(OrderFilter(), limit=2, cursor=cursor)
    assert [o.id for o in first + rest] == [o.id for o in page]
    assert first + rest == page


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite's BEGIN IMMEDIATE serialises writers
async def test_a_load_for_update_sees_what_the_lock_holder_committed(rig: Rig) -> None:
    """Two writers of one order: the second waits for the first's lock, then loads the
    children the first committed (one statement would read them as they were before)."""
    order = await store.place(rig, 1)
    lines = [ln.line_id for ln in order.lines]
    confirm = SupplierConfirmed(
        order_id=order.id,
        supplier_id="sup-a",
        supplier_order_ref="SO-1",
        lines=[ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal("3.10")) for i in lines],
        currency="EUR",
        ship_by=NOW + timedelta(hours=48),
    )

    async def second() -> Order | None:
        async with rig.uow() as uow:
            return await uow.orders.get(order.id, for_update=True, pii=False)

    async with rig.uow() as first:
        held = await first.orders.get(order.id, for_update=True, pii=False)
        assert held is not None
        waiter = asyncio.create_task(second())
        locked = store.waiting_on_a_lock
        await eventually(lambda: locked(rig.engine), what="the second load waiting on the lock")
        held.apply(confirm, NOW)
        await first.orders.save(held)
        await first.commit()
    loaded = await waiter
    assert loaded is not None and loaded.status is held.status
    assert [a.supplier_order_ref for a in loaded.allocations] == ["SO-1"]
    assert [ln.unit_cost for ln in loaded.lines] == [Decimal("3.10")] * 4
