"""Sample requests and small probes shared by the tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from shared.db import inbox_table
from shared.runtime import ServiceRuntime

API_KEY = {"X-API-Key": "dev-api-key"}


def order_body(
    sku: str = "MUG-1", quantity: int = 2, price: str = "12.50", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "storefront",
        "currency": "USD",
        "customer": {"name": "Ann Lee", "email": "ann@example.com", "locale": "en"},
        "shipping_address": {
            "line1": "1 Main St",
            "city": "Springfield",
            "region": "NY",
            "postal_code": "10001",
            "country": "US",
        },
        "lines": [{"sku": sku, "quantity": quantity, "unit_price": price}],
    }
    body.update(extra)
    return body


async def supplier_received(runtime: ServiceRuntime[Any]) -> list[str]:
    """Order ids the supplier service has recorded, in arrival order."""
    async with runtime.uow() as uow:
        return list(await uow.routing_requests.received_orders())


async def inbox_count(runtime: ServiceRuntime[Any]) -> int:
    async with runtime.uow() as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(inbox_table)) or 0)
