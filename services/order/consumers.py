"""Order service consumers: supplier events drive the lifecycle; shops hear what happened."""

from __future__ import annotations

from services.order.handlers import apply_supply_event
from services.order.shops.handlers import apply_dispatch, queue_cancellation, queue_refund
from services.order.store import OrderUnitOfWork
from shared.consumer import Subscription, on, subscriptions
from shared.events import (
    OrderCancelled,
    OrderLinesWaiting,
    OrderRoutingFailed,
    RefundIssued,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)

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
