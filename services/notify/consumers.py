"""Notify service consumers: the facts that turn into customer notices and ops alerts
(after-sales included: return and refund notices, complaint clocks).

A consumed chunk goes to `BATCH`: its events in order, each by its handler, in one unit
of work that keeps the order facts, supplier shares and cleared waiting watches they
write and writes each of those tables once, when the chunk commits."""

from __future__ import annotations

from collections.abc import Sequence

from services.notify.handlers.aftersales import (
    on_refund_issued,
    on_return_authorized,
    on_return_rejected,
    on_return_requested,
)
from services.notify.handlers.complaints import (
    on_complaint_filed,
    on_complaint_resolved,
    on_complaint_responded,
)
from services.notify.handlers.events import (
    on_order_cancelled,
    on_order_lines_waiting,
    on_order_placed,
    on_order_routing_failed,
    on_shipment_delayed,
    on_shipment_dispatched,
    on_supplier_confirmed,
    on_supplier_status_changed,
)
from services.notify.holds import on_order_held, on_order_released
from services.notify.marketplaces import on_marketplace_sync_failed
from services.notify.store import NotifyUnitOfWork
from shared.consumer import BatchHandler, Subscription, event_span, on, subscriptions
from shared.events import (
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    Envelope,
    EventData,
    MarketplaceSyncFailed,
    OrderCancelled,
    OrderHeld,
    OrderLinesWaiting,
    OrderPlaced,
    OrderReleased,
    OrderRoutingFailed,
    RefundIssued,
    ReturnAuthorized,
    ReturnRejected,
    ReturnRequested,
    ShipmentDelayed,
    ShipmentDispatched,
    SupplierConfirmed,
    SupplierStatusChanged,
)
from shared.logging import log_context

CONSUMERS: dict[str, Subscription[NotifyUnitOfWork]] = subscriptions(
    on(OrderPlaced, on_order_placed),
    on(SupplierConfirmed, on_supplier_confirmed),
    on(ShipmentDelayed, on_shipment_delayed),
    on(ShipmentDispatched, on_shipment_dispatched),
    on(OrderCancelled, on_order_cancelled),
    on(OrderRoutingFailed, on_order_routing_failed),
    on(SupplierStatusChanged, on_supplier_status_changed),
    on(OrderHeld, on_order_held),
    on(OrderReleased, on_order_released),
    on(OrderLinesWaiting, on_order_lines_waiting),
    on(ReturnRequested, on_return_requested),
    on(ReturnAuthorized, on_return_authorized),
    on(ReturnRejected, on_return_rejected),
    on(RefundIssued, on_refund_issued),
    on(ComplaintFiled, on_complaint_filed),
    on(ComplaintResponded, on_complaint_responded),
    on(ComplaintResolved, on_complaint_resolved),
    on(MarketplaceSyncFailed, on_marketplace_sync_failed),
)


async def apply_batch(events: Sequence[tuple[Envelope, EventData]], uow: NotifyUnitOfWork) -> None:
    """The fresh events of a chunk in order, each by its handler, with the unit of work's
    fact, share and watch writes kept for its commit (`NotifyUnitOfWork.defer_writes`)."""
    uow.defer_writes()
    for envelope, data in events:
        with event_span(envelope), log_context(order_id=envelope.subject, event_id=envelope.id):
            await CONSUMERS[envelope.type].apply(envelope, data, uow)


BATCH: BatchHandler[NotifyUnitOfWork] = apply_batch
