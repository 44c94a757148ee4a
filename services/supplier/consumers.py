"""Supplier service consumers: placed orders are routed, cancelled ones called off, held
ones parked until released; returns and supplier-borne refunds count against suppliers."""

from __future__ import annotations

from services.supplier.handlers.aftersales import on_refund_issued, on_return_authorized
from services.supplier.handlers.events import (
    on_order_cancelled,
    on_order_held,
    on_order_placed,
    on_order_released,
)
from services.supplier.store import SupplierUnitOfWork
from shared.consumer import Subscription, on, subscriptions
from shared.events import (
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
