"""Helpers for the marketplace tests: signed webhook deliveries, shops registered on the
marketplace simulator, shipments over the broker and what the simulator received."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx

from services.order.app import create_app
from services.order.marketplaces import sign
from services.order.settings import OrderSettings
from shared.events import ConfirmedLine, ShipmentDispatched, SupplierConfirmed, new_envelope
from tests.support.data import API_KEY
from tests.support.kafka import publish_envelopes
from tests.support.services import InProcessService, in_process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEFAULT_SECRET = "default-shop-secret"
"""The env secret of the default shop in the tests that sign without a registered shop."""
MARKETPLACE_APP = "rigs.marketplace_simulator.app:create_app"


QUICK_WRITEBACK = {
    "writeback_poll_s": 0.1,
    "writeback_backoff_s": 0.05,
    "writeback_backoff_max_s": 0.3,
    "writeback_max_attempts": 4,
}
"""A write-back worker quick enough for tests: 0.1 s polls, retries 0.05-0.3 s apart, 4 tries."""


@contextlib.asynccontextmanager
async def writeback_service(
    database_url, settings_for, **overrides
) -> AsyncIterator[InProcessService]:
    """The order service with `QUICK_WRITEBACK` (and `overrides`), connected to the broker."""
    url = await database_url("order")
    settings = settings_for(OrderSettings, url, **{**QUICK_WRITEBACK, **overrides})
    async with in_process(create_app, settings) as svc:
        await svc.runtime.bus.wait_connected()
        yield svc


async def deliver(order, platform: str, fixture: str, secret: str = DEFAULT_SECRET) -> dict:
    """An `orders/create` / `order.created` fixture signed for the default shop; the order."""
    body = (FIXTURES / fixture).read_bytes()
    if platform == "shopify":
        headers = {
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Hmac-Sha256": sign(body, secret),
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        }
    else:
        headers = {
            "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Signature": sign(body, secret),
            "X-WC-Webhook-Delivery-ID": str(uuid.uuid4().int % 10**6),
        }
    response = await order.client.post(
        f"/v1/webhooks/{platform}",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )
    assert response.status_code == 200, response.text
    detail = await order.client.get(f"/v1/orders/{response.json()['order_id']}", headers=API_KEY)
    return detail.json()


async def sim(market, method: str, path: str, **kwargs) -> httpx.Response:
    """A call to the marketplace simulator's control API."""
    async with httpx.AsyncClient(base_url=market.url, timeout=5) as client:
        response = await client.request(method, path, **kwargs)
    response.raise_for_status()
    return response


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def shopify_shop(order, market, **steering) -> dict:
    """A Shopify shop on the simulator, registered with the order service."""
    name, token, secret = unique("shop"), unique("shpat"), unique("shpss")
    await sim(
        market,
        "PUT",
        f"/_control/shops/{name}",
        json={"platform": "shopify", "access_token": token, **steering},
    )
    response = await order.client.post(
        "/v1/shops",
        json={
            "platform": "shopify",
            "domain": f"{name}.myshopify.com",
            "webhook_secret": secret,
            "api_base_url": f"{market.url}/{name}",
            "access_token": token,
        },
        headers=API_KEY,
    )
    assert response.status_code == 201, response.text
    return {**response.json(), "name": name, "secret": secret, "token": token}


async def woo_shop(order, market) -> dict:
    """A WooCommerce site on the simulator, registered with the order service."""
    name, key, secret, hook = unique("woo"), unique("ck"), unique("cs"), unique("whs")
    await sim(
        market,
        "PUT",
        f"/_control/shops/{name}",
        json={"platform": "woocommerce", "consumer_key": key, "consumer_secret": secret},
    )
    response = await order.client.post(
        "/v1/shops",
        json={
            "platform": "woocommerce",
            "domain": f"https://{name}.example/",
            "webhook_secret": hook,
            "api_base_url": f"{market.url}/{name}",
            "consumer_key": key,
            "consumer_secret": secret,
        },
        headers=API_KEY,
    )
    assert response.status_code == 201, response.text
    return {**response.json(), "name": name, "secret": hook}


async def ship(broker, order_id: str, line_ids: list[str], tracking: str, times: int = 1):
    """The supplier confirms the lines, then dispatches them (`times` deliveries of it)."""
    confirmed = SupplierConfirmed(
        order_id=order_id,
        supplier_id="sup_a",
        supplier_order_ref=unique("A"),
        lines=[ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal("3")) for i in line_ids],
        currency="USD",
        ship_by=datetime.now(UTC) + timedelta(hours=48),
    )
    dispatched = new_envelope(
        ShipmentDispatched(
            order_id=order_id,
            supplier_id="sup_a",
            carrier="UPS",
            tracking_number=tracking,
            line_ids=line_ids,
        )
    )
    await publish_envelopes(broker.bootstrap, [new_envelope(confirmed), *[dispatched] * times])


async def calls(market, shop: dict) -> list[dict]:
    """What the simulator accepted from us for one shop, oldest first."""
    response = await sim(market, "GET", "/_control/calls", params={"shop": shop["name"]})
    return response.json()["items"]


async def cancellations(market, shop: dict) -> list[dict] | None:
    """The `orderCancel` calls the simulator received for `shop`; None while there are none
    (a probe for `eventually`)."""
    return [c for c in await calls(market, shop) if c["operation"] == "orderCancel"] or None
