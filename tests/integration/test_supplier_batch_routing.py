"""Batched routing on PostgreSQL and SQLite: limited stock shared by a batch (and by two
batches at once) is never oversold, the decisions equal routing one by one, and a
redelivered batch does nothing twice."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from services.supplier.app import MIGRATIONS
from services.supplier.consumers import BATCH, CONSUMERS
from services.supplier.domain import Credentials, NewSupplier, Offer
from services.supplier.store import Sealer, StockConflict, SupplierDirectory, SupplierUnitOfWork
from services.supplier.tables import allocation, offer, routing_request, supplier_order
from shared.consumer import MessageProcessor
from shared.db import create_engine, migrate_async, outbox_table, session_factory
from shared.events import Envelope, OrderPlaced, PlacedLine, new_envelope

STOCK = {("sup_cheap", "MUG"): 5, ("sup_dear", "MUG"): 3, ("sup_cheap", "TEA"): 4}
COST = {"sup_cheap": "3.00", "sup_dear": "5.00"}


@dataclass
class Db:
    url: str
    sessions: Any
    directory: SupplierDirectory

    def uow(self) -> SupplierUnitOfWork:
        return SupplierUnitOfWork(self.sessions, directory=self.directory)

    def processor(self, batched: bool) -> MessageProcessor[SupplierUnitOfWork]:
        return MessageProcessor(
            "supplier", CONSUMERS, self.uow, batch_handler=BATCH if batched else None
        )

    async def scalar(self, query: Any) -> Any:
        async with self.sessions() as s:
            return (await s.execute(query)).scalar()

    async def rows(self, query: Any) -> list[Any]:
        async with self.sessions() as s:
            return list(await s.execute(query))

    async def stock(self) -> dict[tuple[str, str], int]:
        rows = await self.rows(select(offer.c.supplier_id, offer.c.sku, offer.c.stock))
        return {(r.supplier_id, r.sku): r.stock for r in rows}

    async def routed(self) -> list[tuple[str, str, str, int]]:
        """(order, line, supplier, quantity) of every allocation."""
        query = select(
            allocation.c.order_id,
            allocation.c.line_id,
            supplier_order.c.supplier_id,
            allocation.c.quantity,
        ).join(supplier_order, supplier_order.c.id == allocation.c.supplier_order_id)
        return sorted(tuple(r) for r in await self.rows(query))

    async def events(self) -> list[tuple[str, str]]:
        """(topic, key) of the outbox rows, in the order written."""
        query = select(outbox_table.c.topic, outbox_table.c.key).order_by(outbox_table.c.id)
        return [(r.topic, r.key) for r in await self.rows(query)]

    async def counts(self) -> tuple[int, int, int]:
        return (
            await self.scalar(select(func.count()).select_from(supplier_order)),
            await self.scalar(select(func.count()).select_from(allocation)),
            await self.scalar(select(func.count()).select_from(routing_request)),
        )


@pytest.fixture
async def dbs(database_url: Any) -> AsyncIterator[Any]:
    """Factory: a migrated supplier database with two suppliers offering MUG and TEA."""
    engines = []

    async def make(name: str) -> Db:
        url = await database_url(name)
        await migrate_async(MIGRATIONS, url)
        engine = create_engine(url)
        engines.append(engine)
        db = Db(url, session_factory(engine), SupplierDirectory(Sealer(str, str), ttl_s=0))
        now = datetime.now(UTC)
        async with db.uow() as uow:
            for supplier_id in COST:
                new = NewSupplier(
                    supplier_id, supplier_id, f"http://sim/{supplier_id}", Credentials("k", "s")
                )
                await uow.suppliers.add(supplier_id, new, now)
            await uow.offers.upsert(
                Offer(s, sku, f"{s}-{sku}", Decimal(COST[s]), "USD", stock, 24.0)
                for (s, sku), stock in STOCK.items()
            )
            await uow.commit()
        return db

    yield make
    for engine in engines:
        await engine.dispose()


def placed(order_id: str, *lines: tuple[str, int]) -> Envelope:
    return new_envelope(
        OrderPlaced(
            order_id=order_id,
            channel="storefront",
            currency="USD",
            lines=[
                PlacedLine(line_id=f"{order_id}-{n}", sku=sku, quantity=q, unit_price=Decimal(9))
                for n, (sku, q) in enumerate(lines)
            ],
            shipping_country="US",
            shipping_postal_code="10001",
            placed_at=datetime.now(UTC),
        )
    )


def messages(envelopes: list[Envelope]) -> list[tuple[str, bytes | None]]:
    return [(e.type, e.to_bytes()) for e in envelopes]


def orders(rng: random.Random, prefix: str, count: int) -> list[Envelope]:
    return [
        placed(
            f"{prefix}{i:02d}",
            *[
                (sku, rng.randint(1, 2))
                for sku in rng.sample(["MUG", "TEA", "CUP"], rng.randint(1, 2))
            ],
        )
        for i in range(count)
    ]


async def test_a_batch_sharing_a_sku_never_oversells_and_routes_as_one_by_one(dbs, backend):
    batch, single = await dbs("supplier"), await dbs("supplier_single")
    events = [placed(f"ord_{i}", ("MUG", 1)) for i in range(10)]
    assert await batch.processor(batched=True).process_many(messages(events)) == [True] * 10
    for e in events:  # the same orders, each in its own transaction, as before
        assert await single.processor(batched=False).process(e.type, e.to_bytes())

    routed = await batch.routed()
    assert Counter(s for _, _, s, _ in routed) == {"sup_cheap": 5, "sup_dear": 3}
    assert [o for o, *_ in routed] == [f"ord_{i}" for i in range(8)], "in offset order"
    assert await batch.stock() == {**STOCK, ("sup_cheap", "MUG"): 0, ("sup_dear", "MUG"): 0}
    failed = [key for topic, key in await batch.events() if topic == "order-routing-failed"]
    assert failed == ["ord_8", "ord_9"]
    assert routed == await single.routed()
    assert await batch.stock() == await single.stock()
    assert await batch.events() == await single.events()


async def test_random_batches_route_as_one_by_one(dbs):
    """Random orders (MUG and TEA run out, CUP has no offer) in chunks of 1-12."""
    batch, single = await dbs("supplier"), await dbs("supplier_single")
    rng = random.Random(15)
    events = orders(rng, "o", 30)
    events.insert(7, events[3])  # a redelivery inside the stream
    start = 0
    while start < len(events):
        size = rng.randint(1, 12)
        await batch.processor(batched=True).process_many(messages(events[start : start + size]))
        start += size
    for e in events:
        await single.processor(batched=False).process(e.type, e.to_bytes())
    assert await batch.routed() == await single.routed()
    assert await batch.stock() == await single.stock()
    assert await batch.events() == await single.events()
    assert all(v >= 0 for v in (await batch.stock()).values())


async def test_two_batches_racing_for_the_same_stock_never_oversell(dbs):
    db = await dbs("supplier")
    rng = random.Random(7)
    first, second = orders(rng, "a", 15), orders(rng, "b", 15)
    await asyncio.gather(
        db.processor(batched=True).process_many(messages(first)),
        db.processor(batched=True).process_many(messages(second)),
    )
    stock = await db.stock()
    assert all(v >= 0 for v in stock.values())
    routed = await db.routed()
    used = sum(q for *_, q in routed)
    assert used == sum(STOCK.values()) - sum(stock.values()), "every unit taken is allocated"
    assert len({(o, ln) for o, ln, _, _ in routed}) == len(routed), "no line routed twice"


async def test_a_redelivered_batch_does_nothing_twice(dbs):
    db = await dbs("supplier")
    events = [placed(f"ord_{i}", ("MUG", 2), ("TEA", 1)) for i in range(5)]
    events.append(events[1])  # the same event twice in one batch
    assert await db.processor(batched=True).process_many(messages(events)) == [True] * 5 + [False]
    before = (await db.counts(), await db.stock(), await db.routed(), await db.events())
    assert before[0] == (5, 7, 5), "MUG runs out at the 4th order, TEA at the 5th"

    # the same envelopes again (a crash before the offsets were committed): the inbox
    assert await db.processor(batched=True).process_many(messages(events)) == [False] * 6
    # the order re-sent under new envelope ids: the routing request
    again = [placed(f"ord_{i}", ("MUG", 2), ("TEA", 1)) for i in range(5)]
    assert await db.processor(batched=True).process_many(messages(again)) == [True] * 5
    after = (await db.counts(), await db.stock(), await db.routed(), await db.events())
    assert after == before


async def test_a_short_sku_undoes_what_the_same_call_reserved_before_it(dbs):
    """One order wants 2 MUG and 5 TEA from the same supplier, which has only 4 TEA: the
    MUG reserved first is handed back, so the transaction can go on (another supplier,
    a routing failure) without holding stock no one was given."""
    db = await dbs("supplier")
    async with db.uow() as uow:
        with pytest.raises(StockConflict, match="sup_cheap/TEA"):
            await uow.offers.move_stock(take=[("sup_cheap", "MUG", 2), ("sup_cheap", "TEA", 5)])
        await uow.offers.move_stock(take=[("sup_dear", "MUG", 1)])  # the same transaction goes on
        await uow.commit()
    assert await db.stock() == {**STOCK, ("sup_dear", "MUG"): 2}

    async with db.uow() as uow:  # a release in the same call is undone as well
        with pytest.raises(StockConflict, match="sup_dear/MUG"):
            await uow.offers.move_stock(
                take=[("sup_dear", "MUG", 3)], give=[("sup_cheap", "MUG", 1)]
            )
        await uow.commit()
    assert await db.stock() == {**STOCK, ("sup_dear", "MUG"): 2}
