"""A merchant with two shops on one platform: each shop's order numbers are its own.

Two WooCommerce sites (and two Shopify shops) both send order #4827 (#5906483609841):
two orders, each written back to its own shop; a redelivery to one shop creates nothing
new; one shop's cancellation (or tombstone) leaves the other shop's order alone. The order
service with the real broker and the marketplace simulator in its own process, on
PostgreSQL and SQLite.
"""

from __future__ import annotations

import uuid

import pytest

from services.order.app import create_app
from services.order.marketplaces import sign
from services.order.settings import OrderSettings
from shared.testing import eventually
from tests.support.data import API_KEY
from tests.support.marketplace import (
    FIXTURES,
    calls,
    ship,
    shopify_shop,
    woo_shop,
)
from tests.support.services import in_process

WOO_NUMBER, SHOPIFY_NUMBER = "4827", "5906483609841"  # the fixtures' order numbers


@pytest.fixture
async def order(database_url, settings_for):
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        shopify_secret="default-shop-secret",
        woocommerce_secret="default-shop-secret",
        writeback_poll_s=0.1,
        writeback_backoff_s=0.05,
        writeback_backoff_max_s=0.3,
    )
    async with in_process(create_app, settings) as svc:
        await svc.runtime.bus.wait_connected()
        yield svc


async def woo(order, shop: dict, fixture: str, topic: str, delivery: str | None = None) -> dict:
    """A signed WooCommerce delivery from `shop`; the service's answer."""
    body = (FIXTURES / fixture).read_bytes()
    response = await order.client.post(
        "/v1/webhooks/woocommerce",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Signature": sign(body, shop["secret"]),
            "X-WC-Webhook-Delivery-ID": delivery or str(uuid.uuid4().int % 10**9),
            "X-WC-Webhook-Source": f"https://{shop['domain']}/",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


async def shopify(order, shop: dict, fixture: str, topic: str, delivery: str | None = None):
    """A signed Shopify delivery from `shop`; the service's answer."""
    body = (FIXTURES / fixture).read_bytes()
    response = await order.client.post(
        "/v1/webhooks/shopify",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": sign(body, shop["secret"]),
            "X-Shopify-Webhook-Id": delivery or str(uuid.uuid4()),
            "X-Shopify-Shop-Domain": shop["domain"],
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


async def by_number(order, number: str, **query) -> list[dict]:
    response = await order.client.get(
        "/v1/orders", params={"external_id": number, **query}, headers=API_KEY
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def detail(order, order_id: str) -> dict:
    return (await order.client.get(f"/v1/orders/{order_id}", headers=API_KEY)).json()


async def test_two_woocommerce_sites_with_the_same_order_number_get_two_orders_written_back_apart(
    order, market, broker
):
    a, b = await woo_shop(order, market), await woo_shop(order, market)
    # each site numbers its deliveries alone too: the same delivery id from both is two
    first = await woo(order, a, "woocommerce/order_created.json", "order.created", "701")
    second = await woo(order, b, "woocommerce/order_created.json", "order.created", "701")
    assert first["created"] is True and second["created"] is True
    assert first["order_id"] != second["order_id"], "each site's #4827 is its own order"

    # a redelivery to site A (same delivery id), and the same order under a new delivery id
    assert (await woo(order, a, "woocommerce/order_created.json", "order.created", "701")) == {
        "status": "duplicate"
    }
    again = await woo(order, a, "woocommerce/order_created.json", "order.created")
    assert again == {"status": "accepted", "order_id": first["order_id"], "created": False}

    found = await by_number(order, WOO_NUMBER)
    assert sorted((o["shop_id"], o["external_id"]) for o in found) == sorted(
        [(a["id"], WOO_NUMBER), (b["id"], WOO_NUMBER)]
    ), "the public order number stays the shop's own"
    assert [o["id"] for o in await by_number(order, WOO_NUMBER, shop_id=b["id"])] == [
        second["order_id"]
    ]

    for placed, tracking in ((first, "SFA0001"), (second, "SFB0002")):
        lines = [ln["line_id"] for ln in (await detail(order, placed["order_id"]))["lines"]]
        await ship(broker, placed["order_id"], lines, tracking)

    async def written(shop: dict):
        ops = [(c["operation"], c["order_external_id"]) for c in await calls(market, shop)]
        return ops if ("orders.update", WOO_NUMBER) in ops else None

    for shop, tracking in ((a, "SFA0001"), (b, "SFB0002")):
        assert await eventually(lambda s=shop: written(s), what="write-back") == [
            ("notes.create", WOO_NUMBER),
            ("orders.update", WOO_NUMBER),
        ]
        [note] = [c for c in await calls(market, shop) if c["operation"] == "notes.create"]
        assert note["tracking_number"] == tracking, "each site hears of its own parcel only"


async def test_two_shopify_shops_with_the_same_order_id_are_fulfilled_apart(order, market, broker):
    a, b = await shopify_shop(order, market), await shopify_shop(order, market)
    first = await shopify(order, a, "shopify/orders_create.json", "orders/create")
    second = await shopify(order, b, "shopify/orders_create.json", "orders/create")
    assert first["created"] is True and second["created"] is True
    assert first["order_id"] != second["order_id"]
    default = await shopify(
        order, {"domain": "", "secret": "default-shop-secret"}, "shopify/orders_create.json",
        "orders/create",
    )  # fmt: skip
    assert default["created"] is True, "the default (env) shop numbers its orders alone too"
    assert len(await by_number(order, SHOPIFY_NUMBER)) == 3

    for placed, tracking in ((first, "1ZSHOPA"), (second, "1ZSHOPB")):
        lines = [ln["line_id"] for ln in (await detail(order, placed["order_id"]))["lines"]]
        await ship(broker, placed["order_id"], lines, tracking, times=2)

    async def fulfilled(shop: dict):
        made = [c for c in await calls(market, shop) if c["operation"] == "fulfillmentCreate"]
        return made or None

    for shop, tracking in ((a, "1ZSHOPA"), (b, "1ZSHOPB")):
        [made] = await eventually(lambda s=shop: fulfilled(s), what="fulfillmentCreate")
        assert (made["order_external_id"], made["tracking_number"]) == (SHOPIFY_NUMBER, tracking)


async def test_one_shops_cancellation_leaves_the_other_shops_same_number_alone(order, market):
    woo_a, woo_b = await woo_shop(order, market), await woo_shop(order, market)
    shop_a, shop_b = await shopify_shop(order, market), await shopify_shop(order, market)
    woo_orders = [
        (await woo(order, s, "woocommerce/order_created.json", "order.created"))["order_id"]
        for s in (woo_a, woo_b)
    ]
    shop_orders = [
        (await shopify(order, s, "shopify/orders_create.json", "orders/create"))["order_id"]
        for s in (shop_a, shop_b)
    ]

    cancelled = await woo(order, woo_a, "woocommerce/order_cancelled.json", "order.updated")
    assert cancelled == {"status": "accepted", "order_id": woo_orders[0]}
    cancelled = await shopify(order, shop_a, "shopify/orders_cancelled.json", "orders/cancelled")
    assert cancelled == {"status": "accepted", "order_id": shop_orders[0]}

    statuses = [(await detail(order, o))["status"] for o in (*woo_orders, *shop_orders)]
    assert statuses == ["cancelled", "placed", "cancelled", "placed"]


async def test_a_cancellation_ahead_of_its_order_buries_only_that_shops_number(order, market):
    a, b = await woo_shop(order, market), await woo_shop(order, market)
    early = await woo(order, a, "woocommerce/order_cancelled.json", "order.updated")
    assert early["status"] == "ignored"

    from_b = await woo(order, b, "woocommerce/order_created.json", "order.created")
    assert from_b["created"] is True, "site B's #4827 is not the one site A cancelled"
    from_a = await woo(order, a, "woocommerce/order_created.json", "order.created")
    assert from_a == {"status": "ignored", "reason": "cancelled before it arrived"}
    assert [o["shop_id"] for o in await by_number(order, WOO_NUMBER)] == [b["id"]]
