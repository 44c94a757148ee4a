"""Order event handlers: the supplier service's events move the order along its lifecycle."""

from __future__ import annotations

from services.order.domain import Order
from services.order.handlers.commands import record_changes
from services.order.store import OrderUnitOfWork
from shared.consumer import PermanentError
from shared.events import Envelope, OrderEvent


async def apply_event(envelope: Envelope, data: OrderEvent, uow: OrderUnitOfWork) -> Order:
    """Apply one supplier event to its order, loaded for update WITHOUT its PII (no column
    of it read, nothing decrypted: the supply chain never needs it), and write back only
    what moved. Returns the order as it now stands (name, e-mail, phone, street blank)."""
    order = await uow.orders.get(data.order_id, for_update=True, pii=False)
    if order is None:
        raise PermanentError(f"{envelope.type} for unknown order {data.order_id}")
    note = order.apply(data, envelope.time)
    await uow.orders.save(order)
    await uow.timeline.add(envelope, note)
    await record_changes(order, uow)  # e.g. `order-released` when the supplier had it
    return order


async def apply_supply_event(envelope: Envelope, data: OrderEvent, uow: OrderUnitOfWork) -> None:
    """Consumer handler for the supplier service's events (the runner owns the transaction)."""
    await apply_event(envelope, data, uow)
