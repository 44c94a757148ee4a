"""Supplier service consumers: placed orders are routed, cancelled ones are called off."""

from __future__ import annotations

from services.supplier.handlers import on_order_cancelled, on_order_placed
from shared.consumer import Handler

HANDLERS: dict[str, Handler] = {
    "order-placed": on_order_placed,
    "order-cancelled": on_order_cancelled,
}
