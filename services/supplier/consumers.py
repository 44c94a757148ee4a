"""Supplier service consumers: topic -> handler (the runner does envelope, inbox and commit)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.supplier.store import SupplierUnitOfWork
from shared.consumer import Handler
from shared.events import Envelope, EventData, OrderPlaced
from shared.uow import UnitOfWork


async def on_order_placed(envelope: Envelope, data: EventData, uow: UnitOfWork) -> None:
    assert isinstance(data, OrderPlaced) and isinstance(uow, SupplierUnitOfWork)
    await uow.requests.add(
        order_id=data.order_id,
        event_id=envelope.id,
        currency=data.currency,
        line_count=len(data.lines),
        placed_at=data.placed_at,
        received_at=datetime.now(UTC),
    )


HANDLERS: dict[str, Handler] = {"order-placed": on_order_placed}
