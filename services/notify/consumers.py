"""Notify service consumers: the facts that turn into customer notices and ops alerts."""

from __future__ import annotations

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
from services.notify.store import NotifyUnitOfWork
from shared.consumer import Subscription, on, subscriptions
from shared.events import (
    OrderCancelled,
    OrderHeld,
    OrderLinesWaiting,
    OrderPlaced,
    OrderReleased,
    OrderRoutingFailed,
    ShipmentDelayed,
    ShipmentDispatched,
    SupplierConfirmed,
    SupplierStatusChanged,
)

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
)
