"""The order service's store on a real database, for tests: a migrated engine that records
every statement sent, units of work, orders placed through the real handler, and a probe
for a transaction waiting on a row lock (PostgreSQL)."""

from __future__ import annotations

import base64
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


@dataclass
class Rig:
    engine: AsyncEngine
    uow: Callable[[], OrderUnitOfWork]
    statements: list[str]
    """Every statement sent through `engine`, in order (clear it to count from a point)."""


@asynccontextmanager
async def order_store(url: str) -> AsyncIterator[Rig]:
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
        statements.append(sql)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield Rig(engine, lambda: OrderUnitOfWork(sessions, cipher=PiiCipher(KEY)), statements)
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
