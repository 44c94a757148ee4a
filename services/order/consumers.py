"""Order service consumers: the supplier service's events drive the order lifecycle."""

from __future__ import annotations

from services.order.handlers import apply_supply_event
from shared.consumer import Handler

HANDLERS: dict[str, Handler] = {
    topic: apply_supply_event
    for topic in (
        "supplier-confirmed",
        "order-routing-failed",
        "shipment-dispatched",
        "shipment-delayed",
        "shipment-delivered",
    )
}
