"""The order service's store on a real database, for tests: a migrated engine that records
every statement sent, units of work, orders placed through the real handler, and a probe
for a transaction waiting on a row lock (PostgreSQL)."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.order.app import MIGRATIONS
from services.order.domain import Address, Contact, LineInput, Order, PlaceOrder
from services.order.handlers import Placed, place_order
from services.order.pii import PiiCipher
from services.order.store import OrderUnitOfWork
from shared.db import create_engine, migrate_async, session_factory

KEY = "k1:" + base64.urlsafe_b64encode(bytes(range(32))).decode()
WRITE = re.compile(r"^\s*(?:INSERT INTO|UPDATE|DELETE FROM)\s+\"?(\w+)", re.IGNORECASE)
ONE_TRIP = re.compile(r"^\s*WITH o AS \(")
"""PostgreSQL: the order tables' and the timeline's writes as one statement (`one_trip`)."""
ONE_TRIP_PARTS = {
    "o_id": "customer_order",
    "l_id": "order_line",
    "a_order_id": "allocation",
    "s_order_id": "shipment",
    "t_order_id": "order_timeline",
}
"""The array of the one-trip statement that names each part's rows, and the table written."""


def tables_written(sql: str, params: Any, context: Any, many: bool) -> list[tuple[str, int]]:
    """(table, rows) a statement writes (`before_cursor_execute`'s arguments); each part of
    the one-trip statement as a write of its own."""
    if m := WRITE.match(sql):
        return [(m.group(1), len(params) if many else 1)]
    if ONE_TRIP.match(sql):  # positional on asyncpg: named again from the compiled order
        named = dict(zip(context.compiled.positiontup, params, strict=True))
        return [(table, len(named[k])) for k, table in ONE_TRIP_PARTS.items() if named[k]]
    return []


@dataclass
class Rig:
    engine: AsyncEngine
    uow: Callable[[], OrderUnitOfWork]
    statements: list[str]
    """Every statement sent through `engine`, in order (clear it to count from a point)."""
    writes: list[tuple[str, int]]
    """(table, rows) of every write sent (`tables_written`), in order."""

    def clear(self) -> None:
        """Count from here on."""
        self.statements.clear()
        self.writes.clear()


@asynccontextmanager
async def order_store(url: str) -> AsyncIterator[Rig]:
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    statements: list[str] = []
    writes: list[tuple[str, int]] = []

    def count(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        statements.append(sql)
        writes.extend(tables_written(sql, params, context, many))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        uow = lambda: OrderUnitOfWork(sessions, cipher=PiiCipher(KEY))  # noqa: E731
        yield Rig(engine, uow, statements, writes)
    finally:
        await engine.dispose()


async def place(rig: Rig, n: int, channel: str = "storefront", lines: int = 4) -> Order:
    """Order `n` of a customer of its own, with `lines` lines (SKU-i, quantity i)."""
    cmd = PlaceOrder(
        channel=channel,
        external_id=None if channel == "storefront" else f"#{n}",
        currency="EUR",
        customer=Contact(f"Ann Lee {n}", f"ann{n}@example.com", "+1 212 555 0100", "en"),
        shipping=Address(f"{n} Main St", "Springfield", "10001", "US", "Apt 4", "NY"),
        lines=tuple(LineInput(f"SKU-{i}", i, Decimal("5.25")) for i in range(1, lines + 1)),
    )
    placed = await place_order(cmd, rig.uow())
    assert isinstance(placed, Placed)
    return placed.order


async def waiting_on_a_lock(engine: AsyncEngine) -> bool:
    """Whether a session of this PostgreSQL database is waiting on a lock."""
    async with engine.connect() as conn:
        waits = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
        )
    return bool(waits)
