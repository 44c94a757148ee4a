"""Supplier service consumers: placed orders are routed, cancelled ones are called off."""

from __future__ import annotations

from services.supplier.handlers.events import on_order_cancelled, on_order_placed
from services.supplier.store import SupplierUnitOfWork
from shared.consumer import Subscription, on, subscriptions
from shared.events import OrderCancelled, OrderPlaced

CONSUMERS: dict[str, Subscription[SupplierUnitOfWork]] = subscriptions(
    on(OrderPlaced, on_order_placed),
    on(OrderCancelled, on_order_cancelled),
)
