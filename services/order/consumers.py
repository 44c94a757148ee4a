"""Order service consumers: the supplier service's events drive the order lifecycle."""

from __future__ import annotations

from services.order.handlers import apply_supply_event
from services.order.store import OrderUnitOfWork
from shared.consumer import Subscription, on, subscriptions
from shared.events import (
    OrderLinesWaiting,
    OrderRoutingFailed,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)

CONSUMERS: dict[str, Subscription[OrderUnitOfWork]] = subscriptions(
    on(SupplierConfirmed, apply_supply_event),
    on(OrderRoutingFailed, apply_supply_event),
    on(OrderLinesWaiting, apply_supply_event),
    on(ShipmentDispatched, apply_supply_event),
    on(ShipmentDelayed, apply_supply_event),
    on(ShipmentDelivered, apply_supply_event),
)
