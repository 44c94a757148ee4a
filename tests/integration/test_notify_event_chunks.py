"""A consumed chunk of events in notify, on real PostgreSQL and SQLite (issue 15): the order
facts, supplier shares and cleared waiting watches its events write go to each table in
one statement when the chunk commits, and the tables end as the events applied one by one
leave them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notify.app import MIGRATIONS
from services.notify.consumers import BATCH, CONSUMERS
from services.notify.store import NotifyUnitOfWork
from services.notify.tables import notification, order_fact, supplier_share, waiting_watch
from shared.consumer import MessageProcessor
from shared.db import create_engine, migrate_async, session_factory
from shared.events import (
    ConfirmedLine,
    DelayReason,
    EventData,
    OrderLinesWaiting,
    OrderPlaced,
    PlacedLine,
    Severity,
    ShipmentDelayed,
    ShipmentDispatched,
    SupplierConfirmed,
    WaitingReason,
    new_envelope,
)

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)
WAITING = WaitingReason.BREAKER_OPEN


@dataclass
class Rig:
    engine: AsyncEngine
    uow: Callable[[], NotifyUnitOfWork]
    statements: list[str] = field(default_factory=list)

    def sent(self, start: str) -> int:
        return sum(1 for sql in self.statements if " ".join(sql.split()).startswith(start))


@pytest.fixture
async def rig(database_url: Any) -> AsyncIterator[Rig]:
    url = await database_url("notify")
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    found = Rig(engine, lambda: NotifyUnitOfWork(sessions))

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        found.statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield found
    await engine.dispose()


def story(tag: str) -> list[EventData]:
    """Two orders placed; the first waits, is confirmed (then confirmed again by the same
    supplier, which wins) and dispatched; the second is confirmed and delayed (the delay
    reads the share its confirmation wrote earlier in the chunk)."""
    a, b = f"ord_{tag}_a", f"ord_{tag}_b"

    def placed(order_id: str) -> OrderPlaced:
        return OrderPlaced(
            order_id=order_id,
            channel="storefront",
            currency="EUR",
            lines=[
                PlacedLine(line_id=f"{order_id}_l{n}", sku="MUG", quantity=1,
                           unit_price=Decimal("5.00"))
                for n in (1, 2)
            ],
            shipping_country="DE",
            shipping_postal_code="10115",
            placed_at=NOW,
        )  # fmt: skip

    def confirmed(order_id: str, lines: list[str], hours: int) -> SupplierConfirmed:
        return SupplierConfirmed(
            order_id=order_id,
            supplier_id="sup-a",
            supplier_order_ref=f"SO-{order_id}",
            lines=[ConfirmedLine(line_id=ln, quantity=1, unit_cost=Decimal("3")) for ln in lines],
            currency="EUR",
            ship_by=NOW + timedelta(hours=hours),
        )

    return [
        placed(a),
        OrderLinesWaiting(
            order_id=a, line_ids=[f"{a}_l1", f"{a}_l2"], reason=WAITING, since=NOW
        ),
        placed(b),
        confirmed(a, [f"{a}_l1"], 24),
        confirmed(b, [f"{b}_l1", f"{b}_l2"], 24),
        confirmed(a, [f"{a}_l1", f"{a}_l2"], 48),
        ShipmentDispatched(
            order_id=a, supplier_id="sup-a", carrier="dhl", tracking_number=f"1Z{tag}",
            line_ids=[f"{a}_l1", f"{a}_l2"],
        ),
        ShipmentDelayed(
            order_id=b, supplier_id="sup-a", reason=DelayReason.SUPPLIER_BACKORDER,
            severity=Severity.NORMAL,
        ),
    ]  # fmt: skip


def messages(events: list[EventData]) -> list[tuple[str, bytes]]:
    envelopes = [new_envelope(data) for data in events]
    return [(e.type, e.to_bytes()) for e in envelopes]


async def seen(rig: Rig, tag: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the chunk left in notify's tables for the orders of `tag`, the tag taken out."""

    def plain(value: Any) -> Any:
        return value.replace(f"_{tag}_", "_").replace(f"1Z{tag}", "1Z") if isinstance(
            value, str
        ) else value  # fmt: skip

    def rows(found: Any) -> list[tuple[Any, ...]]:
        return sorted(tuple(plain(v) for v in r) for r in found)

    like = f"ord_{tag}_%"
    async with rig.engine.connect() as conn:
        facts = await conn.execute(
            select(order_fact.c.order_id, order_fact.c.currency).where(
                order_fact.c.order_id.like(like)
            )
        )
        shares = await conn.execute(
            select(supplier_share.c.order_id, supplier_share.c.supplier_id,
                   supplier_share.c.line_ids).where(supplier_share.c.order_id.like(like))
        )  # fmt: skip
        waiting = await conn.execute(
            select(waiting_watch.c.order_id, waiting_watch.c.line_id).where(
                waiting_watch.c.order_id.like(like)
            )
        )
        notices = await conn.execute(
            select(notification.c.order_id, notification.c.kind, notification.c.channel).where(
                notification.c.order_id.like(like)
            )
        )
        return {
            "facts": rows(facts),
            "shares": [(o, s, sorted(plain(x) for x in lines)) for o, s, lines in rows(shares)],
            "waiting": rows(waiting),
            "notices": rows(notices),
        }


async def test_a_chunk_writes_facts_shares_and_watches_once_and_ends_as_one_by_one(
    rig: Rig,
) -> None:
    single = MessageProcessor("notify", CONSUMERS, rig.uow)
    for topic, raw in messages(story("one")):
        assert await single.process(topic, raw)
    one_by_one = await seen(rig, "one")

    rig.statements.clear()
    chunk = MessageProcessor("notify", CONSUMERS, rig.uow, batch_handler=BATCH)
    assert await chunk.process_many(messages(story("all"))) == [True] * 8

    assert await seen(rig, "all") == one_by_one
    assert one_by_one["waiting"] == []  # the confirmation cleared both waiting lines
    assert one_by_one["shares"] == [
        ("ord_a", "sup-a", ["ord_a_l1", "ord_a_l2"]),  # the later confirmation won
        ("ord_b", "sup-a", ["ord_b_l1", "ord_b_l2"]),
    ]
    assert [kind for _, kind, _ in one_by_one["notices"]] == [
        "shipment_dispatched",
        "shipment_delayed",
    ]
    # two facts, three shares, three clears: one statement each (the delay's read of the
    # shares wrote the kept facts and shares first; the clears went at the commit)
    assert rig.sent("INSERT INTO order_fact") == 1
    assert rig.sent("INSERT INTO supplier_share") == 1
    assert rig.sent("DELETE FROM waiting_watch") == 1


async def test_a_redelivered_chunk_changes_nothing(rig: Rig) -> None:
    chunk = MessageProcessor("notify", CONSUMERS, rig.uow, batch_handler=BATCH)
    sent = messages(story("re"))
    assert await chunk.process_many(sent) == [True] * 8
    before = await seen(rig, "re")
    assert await chunk.process_many(sent) == [False] * 8
    assert await seen(rig, "re") == before
