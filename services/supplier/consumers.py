"""Supplier service consumers: placed orders are routed, cancelled ones called off, held
ones parked until released; returns and supplier-borne refunds count against suppliers.

With `BATCH` (the default, `DROPSHIP_SUPPLIER_ROUTE_IN_BATCHES`) the placed orders of a
consumed chunk are routed together (`on_orders_placed`); every other event still goes to
its own handler, in offset order."""

from __future__ import annotations

from collections.abc import Sequence

from services.supplier.handlers.aftersales import on_refund_issued, on_return_authorized
from services.supplier.handlers.events import (
    on_order_cancelled,
    on_order_held,
    on_order_placed,
    on_order_released,
    on_orders_placed,
)
from services.supplier.store import SupplierUnitOfWork
from shared.consumer import BatchHandler, Subscription, event_span, on, subscriptions
from shared.events import (
    Envelope,
    EventData,
    OrderCancelled,
    OrderHeld,
    OrderPlaced,
    OrderReleased,
    RefundIssued,
    ReturnAuthorized,
)

CONSUMERS: dict[str, Subscription[SupplierUnitOfWork]] = subscriptions(
    on(OrderPlaced, on_order_placed),
    on(OrderCancelled, on_order_cancelled),
    on(OrderHeld, on_order_held),
    on(OrderReleased, on_order_released),
    on(ReturnAuthorized, on_return_authorized),
    on(RefundIssued, on_refund_issued),
)


async def apply_batch(
    events: Sequence[tuple[Envelope, EventData]], uow: SupplierUnitOfWork
) -> None:
    """The fresh events of a chunk in order: each run of `order-placed` routed at once, the
    others one by one by their handlers."""
    placed: list[tuple[Envelope, OrderPlaced]] = []
    for envelope, data in events:
        if isinstance(data, OrderPlaced):
            placed.append((envelope, data))
            continue
        if placed:
            await on_orders_placed(placed, uow)
            placed = []
        with event_span(envelope):  # what it emits continues its own trace
            await CONSUMERS[envelope.type].apply(envelope, data, uow)
    if placed:
        await on_orders_placed(placed, uow)


BATCH: BatchHandler[SupplierUnitOfWork] = apply_batch
