"""Order service consumers: supplier events drive the lifecycle; shops hear what happened.

A consumed chunk goes to `BATCH`: its events in order, each by its handler, after the
orders the suppliers' events move were locked and loaded together (two statements for the
chunk where each event took two); an order's later events in the chunk find it as the
earlier ones left it, unwritten (none); what they change is written together, one
statement per table, when the chunk commits."""

from __future__ import annotations

from collections.abc import Sequence

from services.order.handlers import apply_supply_event
from services.order.shops.handlers import apply_dispatch, queue_cancellation, queue_refund
from services.order.store import OrderUnitOfWork
from shared.consumer import BatchHandler, Subscription, event_span, on, subscriptions
from shared.events import (
    Envelope,
    EventData,
    OrderCancelled,
    OrderLinesWaiting,
    OrderRoutingFailed,
    RefundIssued,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)
from shared.logging import log_context

CONSUMERS: dict[str, Subscription[OrderUnitOfWork]] = subscriptions(
    on(SupplierConfirmed, apply_supply_event),
    on(OrderRoutingFailed, apply_supply_event),
    on(OrderLinesWaiting, apply_supply_event),
    on(ShipmentDispatched, apply_dispatch),  # and queues the shop's fulfilment
    on(OrderCancelled, queue_cancellation),  # our own event: tell the shop
    on(ShipmentDelayed, apply_supply_event),
    on(ShipmentDelivered, apply_supply_event),
    on(RefundIssued, queue_refund),  # our own event: the shop records the refund
)

MOVED_BY_SUPPLIERS = frozenset(
    model.event_type
    for model in (
        SupplierConfirmed,
        OrderRoutingFailed,
        OrderLinesWaiting,
        ShipmentDispatched,
        ShipmentDelayed,
        ShipmentDelivered,
    )
)
"""Topics whose handler starts by loading the order for update without PII (`apply_event`)."""


def first_moved(events: Sequence[tuple[Envelope, EventData]]) -> list[str]:
    """The orders whose first event in the chunk is one the suppliers move them with: nothing
    in the transaction has written them when their handler loads them."""
    seen: set[str] = set()
    moved: list[str] = []
    for envelope, data in events:
        order_id = getattr(data, "order_id", None) or envelope.subject
        if order_id in seen or envelope.subject in seen:
            continue
        seen.update((order_id, envelope.subject))
        if envelope.type in MOVED_BY_SUPPLIERS:
            moved.append(order_id)
    return moved


async def apply_batch(events: Sequence[tuple[Envelope, EventData]], uow: OrderUnitOfWork) -> None:
    """The fresh events of a chunk in order, each by its handler: the orders they move
    locked and loaded first (`OrderRepository.lock_many`), what the suppliers' events
    change written together when the chunk commits (`defer_writes`; written before any
    other handler runs, so it reads the orders as they stand)."""
    await uow.orders.lock_many(first_moved(events))
    uow.orders.defer_writes()
    for envelope, data in events:
        if envelope.type not in MOVED_BY_SUPPLIERS:
            await uow.orders.flush()
        with event_span(envelope), log_context(order_id=envelope.subject, event_id=envelope.id):
            await CONSUMERS[envelope.type].apply(envelope, data, uow)


BATCH: BatchHandler[OrderUnitOfWork] = apply_batch
