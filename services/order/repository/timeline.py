"""Timeline repository: every event that touched an order, in event-time order."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.domain import Note
from services.order.tables import customer_order, order_timeline
from shared.db import aware
from shared.events import Envelope


@dataclass(frozen=True)
class TimelineEntry:
    type: str
    time: datetime
    source: str
    data: dict[str, Any]
    note: str | None


def event_row(envelope: Envelope, note: str | None = None) -> dict[str, Any]:
    """The timeline row of an event the order emitted or received."""
    return dict(
        order_id=envelope.subject,
        event_id=envelope.id,
        type=envelope.type,
        time=envelope.time,
        source=envelope.source,
        data=envelope.data,
        note=note,
    )


def note_row(order_id: str, note: Note) -> dict[str, Any]:
    """The timeline row of a change of the order's own with no event."""
    return dict(
        order_id=order_id,
        event_id=f"note-{uuid.uuid4().hex}",
        type=note.type,
        time=note.at,
        source="order",
        data=note.data,
        note=None,
    )


async def insert_entries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Timeline entries (`event_row`, `note_row`) in one statement (an executemany for many)."""
    await session.execute(order_timeline.insert(), list(rows))


class Timeline:
    """One row per event an order emitted or received, with a note when it was unusual.

    Entries are written together: those added in a transaction go in one statement when it
    commits (`take`, written by `OrderRepository.flush` from `OrderUnitOfWork.commit`: on
    PostgreSQL in the same statement as the order tables' writes), or before this timeline
    is read (`flush`), in the order they were added. A consumer's chunk of supplier events
    writes one statement where it wrote one per event and per emitted event."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect
        self._pending: list[dict[str, Any]] = []

    async def add(self, envelope: Envelope, note: str | None = None) -> None:
        self._pending.append(event_row(envelope, note))

    async def record(self, order_id: str, note: Note) -> None:
        """A change of the order's own with no event (a hold lifted, an address changed)."""
        self._pending.append(note_row(order_id, note))

    async def add_rows(self, rows: list[dict[str, Any]]) -> None:
        """Many entries (`event_row`, `note_row`)."""
        self._pending.extend(rows)

    def take(self) -> list[dict[str, Any]]:
        """The entries added since the last flush, handed over to be written by the caller
        (`OrderRepository.flush`, with the order tables' writes)."""
        rows, self._pending = self._pending, []
        return rows

    async def flush(self) -> None:
        """Write the entries added since the last flush, in one statement."""
        if self._pending:
            rows, self._pending = self._pending, []
            await insert_entries(self.session, rows)

    async def of(self, order_id: str) -> list[TimelineEntry]:
        await self.flush()
        rows = await self.session.execute(
            select(order_timeline)
            .where(order_timeline.c.order_id == order_id)
            .order_by(order_timeline.c.time, order_timeline.c.id)
        )
        return [
            TimelineEntry(r.type, aware(r.time) or r.time, r.source, r.data, r.note) for r in rows
        ]

    async def delays_of_delayed_orders(self, limit: int) -> list[tuple[str, TimelineEntry]]:
        """`shipment-delayed` entries of orders still delayed, newest first, with order ids."""
        await self.flush()
        t = order_timeline.c
        rows = await self.session.execute(
            select(order_timeline)
            .join(customer_order, customer_order.c.id == t.order_id)
            .where(t.type == "shipment-delayed", customer_order.c.delayed.is_(True))
            .order_by(t.time.desc(), t.id.desc())
            .limit(limit)
        )
        return [
            (r.order_id, TimelineEntry(r.type, aware(r.time) or r.time, r.source, r.data, r.note))
            for r in rows
        ]
