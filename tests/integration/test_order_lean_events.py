"""Supplier events applied by the order service's consumer never read or decrypt the
customer's PII and write only the rows that moved (issue 15, lever 2)."""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order.app import MIGRATIONS
from services.order.consumers import CONSUMERS
from services.order.domain import Address, Contact, LineInput, PlaceOrder, Status
from services.order.handlers import Placed, place_order
from services.order.pii import PiiCipher
from services.order.shops.handlers import origins, queue
from services.order.store import OrderUnitOfWork
from shared.consumer import MessageProcessor
from shared.db import create_engine, migrate_async, session_factory
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
from tests.support.order_store import ONE_TRIP, WRITE, tables_written

OWN_KEY = "k1:" + base64.urlsafe_b64encode(bytes(range(32))).decode()
OTHER_KEY = "k2:" + base64.urlsafe_b64encode(bytes(range(32, 64))).decode()
NOW = datetime.now(UTC)
READ = re.compile(r"^\s*SELECT\b.*?\bFROM\s+\"?(\w+)", re.IGNORECASE | re.DOTALL)
PII = re.compile(r"\b(customer_name|email|email_index|phone|ship_line1|ship_line2)\b")


class CountingCipher(PiiCipher):
    """The service's cipher, counting what it is asked to decrypt."""

    decrypts = 0

    def decrypt(self, token: str | None, field: str) -> str | None:
        self.decrypts += 1
        return super().decrypt(token, field)


@dataclass
class Statements:
    """Every statement the engine sends, as (text, parameters, executemany)."""

    seen: list[tuple[str, Any, bool]] = field(default_factory=list)
    tables: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, conn: Any, cursor: Any, sql: str, params: Any, ctx: Any, many: bool) -> None:
        self.seen.append((sql, params, many))
        self.tables.extend(tables_written(sql, params, ctx, many))

    def written(self) -> list[tuple[str, int]]:
        """(table, rows) of every write, each part of the one-trip statement as its own."""
        return self.tables

    def writes(self) -> Counter[str]:
        """Statements (or one-trip parts) writing each table."""
        return Counter(table for table, _ in self.written())

    def reads(self) -> Counter[str]:
        return Counter(m.group(1) for sql, _, _ in self.seen if (m := READ.match(sql)))

    def sql(self) -> list[str]:
        return [s for s, _, _ in self.seen if WRITE.match(s) or READ.match(s) or ONE_TRIP.match(s)]

    def clear(self) -> None:
        self.seen.clear()
        self.tables.clear()


@dataclass
class Rig:
    engine: AsyncEngine
    uow: Callable[[PiiCipher], OrderUnitOfWork]
    statements: Statements


@pytest.fixture
async def rig(database_url) -> AsyncIterator[Rig]:
    url = await database_url("order")
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    statements = Statements()
    event.listen(engine.sync_engine, "before_cursor_execute", statements)
    try:
        yield Rig(engine, lambda cipher: OrderUnitOfWork(sessions, cipher=cipher), statements)
    finally:
        await engine.dispose()


async def place_three_lines(rig: Rig, shop: tuple[str, str] | None = None) -> list[str]:
    """A storefront order of three lines, or (`shop`: its id and order number) a shop's."""
    cmd = PlaceOrder(
        channel="shopify" if shop else "storefront",
        external_id=shop[1] if shop else None,
        shop_id=shop[0] if shop else None,
        currency="USD",
        customer=Contact("Ann Lee", "ann@example.com", "+1 212 555 0100", "en"),
        shipping=Address("1 Main St", "Springfield", "10001", "US", "Apt 4", "NY"),
        lines=tuple(LineInput(f"SKU-{i}", i, Decimal("5.00")) for i in (1, 2, 3)),
    )
    placed = await place_order(cmd, rig.uow(PiiCipher(OWN_KEY)))
    assert isinstance(placed, Placed)
    return [ln.line_id for ln in placed.order.lines]


def confirmed(order_id: str, line_ids: list[str], ref: str) -> SupplierConfirmed:
    return SupplierConfirmed(
        order_id=order_id,
        supplier_id="sup-a",
        supplier_order_ref=ref,
        lines=[ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal("3.10")) for i in line_ids],
        currency="USD",
        ship_by=NOW + timedelta(hours=48),
    )


def dispatched(order_id: str, line_ids: list[str], tracking: str) -> ShipmentDispatched:
    return ShipmentDispatched(
        order_id=order_id,
        supplier_id="sup-a",
        carrier="ups",
        tracking_number=tracking,
        line_ids=line_ids,
    )


async def apply(rig: Rig, cipher: PiiCipher, *events: EventData) -> None:
    processor = MessageProcessor("order", CONSUMERS, lambda: rig.uow(cipher))
    for data in events:
        envelope = new_envelope(data)
        assert await processor.process(envelope.type, envelope.to_bytes())


async def test_a_confirmation_of_two_of_three_lines_writes_only_what_moved(rig: Rig) -> None:
    cipher = CountingCipher(OWN_KEY)
    lines = await place_three_lines(rig)
    order_id = lines[0].rsplit("-", 1)[0]
    rig.statements.clear()

    await apply(rig, cipher, confirmed(order_id, lines[:2], "SO-1"))

    assert cipher.decrypts == 0
    assert not [s for s in rig.statements.sql() if PII.search(s)]  # not even a PII column read
    # ONE read loads the order with its lines, allocations and shipments (PostgreSQL first
    # locks the order row on its own, so the load sees what the last lock holder committed)
    postgres = rig.engine.dialect.name == "postgresql"
    reads = [sql for sql in rig.statements.sql() if READ.match(sql)]
    assert rig.statements.reads() == Counter({"customer_order": 2 if postgres else 1})
    assert all(f"FROM {t}" in reads[-1] for t in ("order_line", "allocation", "shipment"))
    if postgres:
        assert "FOR UPDATE" in reads[0] and "FOR UPDATE" not in reads[1]
    # status placed -> routed; two lines in ONE executemany; the new allocation; the timeline
    assert rig.statements.writes() == Counter(
        {"inbox_event": 1, "customer_order": 1, "order_line": 1, "allocation": 1,
         "order_timeline": 1}
    )  # fmt: skip
    assert ("order_line", 2) in rig.statements.written()  # both lines in one statement
    # PostgreSQL: the order, its lines and the allocation in ONE statement (`one_trip`; the
    # timeline joins it where a chunk's writes wait for the commit, as the live consumer's do)
    assert len(rig.statements.sql()) == (5 if postgres else 6)

    # the two lines ship: the order stays `routed`, so customer_order is not written
    rig.statements.clear()
    await apply(rig, cipher, dispatched(order_id, lines[:2], "1Z1"))
    assert rig.statements.writes() == Counter(
        {"inbox_event": 1, "order_line": 1, "shipment": 1, "order_timeline": 1}
    )  # routed stays routed: customer_order is not written
    # a storefront order came from no registered shop: its shop of origin is not looked up
    assert rig.statements.reads() == Counter({"customer_order": 2 if postgres else 1})
    rig.statements.clear()
    await apply(rig, cipher, confirmed(order_id, lines[:2], "SO-1"))  # a supplier's repeat
    assert rig.statements.writes() == Counter({"inbox_event": 1, "order_timeline": 1})
    assert cipher.decrypts == 0

    async with rig.uow(PiiCipher(OWN_KEY)) as uow:
        order = await uow.orders.get(order_id)
    assert order is not None and order.status is Status.ROUTED
    assert [ln.stage.name for ln in order.lines] == ["SHIPPED", "SHIPPED", "PENDING"]
    assert [ln.unit_cost for ln in order.lines] == [Decimal("3.10"), Decimal("3.10"), None]
    assert [a.supplier_order_ref for a in order.allocations] == ["SO-1"]


async def test_the_whole_supply_chain_needs_no_pii_key_and_keeps_the_pii(rig: Rig) -> None:
    """Applied with a key that cannot decrypt this order's PII (and counting every call):
    the order is delivered, its shop's fulfilment queued, and its PII still reads back."""
    lines = await place_three_lines(rig, shop=("shop_1", "#1001"))
    order_id = lines[0].rsplit("-", 1)[0]
    async with rig.uow(PiiCipher(OWN_KEY)) as uow:
        await origins(uow).remember(order_id, "shop_1", "#1001")
        await uow.commit()
    stranger = CountingCipher(OTHER_KEY)

    await apply(
        rig,
        stranger,
        confirmed(order_id, lines[:2], "SO-1"),
        confirmed(order_id, lines[2:], "SO-2"),
        ShipmentDelayed(
            order_id=order_id,
            supplier_id="sup-a",
            reason=DelayReason.CARRIER_EXCEPTION,
            severity=Severity.NORMAL,
        ),
        dispatched(order_id, lines, "1Z9"),
        ShipmentDelivered(order_id=order_id, tracking_number="1Z9", delivered_at=NOW),
    )

    assert stranger.decrypts == 0
    async with rig.uow(PiiCipher(OWN_KEY)) as uow:
        order = await uow.orders.get(order_id)
        tasks = await queue(uow).of_order(order_id)
    assert order is not None and order.status is Status.DELIVERED and not order.delayed
    assert order.customer == Contact("Ann Lee", "ann@example.com", "+1 212 555 0100", "en")
    assert (order.shipping.line1, order.shipping.line2) == ("1 Main St", "Apt 4")
    assert [a.supplier_order_ref for a in order.allocations] == ["SO-1", "SO-2"]
    assert [(s.tracking_number, s.delivered_at) for s in order.shipments] == [("1Z9", NOW)]
    (task,) = tasks
    assert task["kind"] == "fulfil" and task["external_id"] == "#1001"
    assert task["payload"]["skus"] == {"SKU-1": 1, "SKU-2": 2, "SKU-3": 3}
    assert task["payload"]["all_shipped"] is True
