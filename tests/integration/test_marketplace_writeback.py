"""Shops and write-back: the order service, the real broker and the marketplace simulator
in its own process, on PostgreSQL and SQLite."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from services.order.app import create_app
from services.order.marketplaces import sign
from services.order.settings import OrderSettings
from services.order.shops.handlers import queue
from services.order.shops.writeback import WritebackWorker
from shared.testing import eventually
from tests.support.data import API_KEY
from tests.support.marketplace import (
    FIXTURES,
    calls,
    cancellations,
    ship,
    shopify_shop,
    sim,
    woo_shop,
    writeback_service,
)
from tests.support.services import in_process


@pytest.fixture
async def order(database_url, settings_for):
    async with writeback_service(database_url, settings_for) as svc:
        yield svc


async def shopify_order(
    order, shop: dict, fixture: str = "shopify/orders_create.json", secret=None
):
    body = (FIXTURES / fixture).read_bytes()
    return await order.client.post(
        "/v1/webhooks/shopify",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Hmac-Sha256": sign(body, secret or shop["secret"]),
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Shop-Domain": shop["domain"],
        },
    )


async def woo_order(order, shop: dict):
    body = (FIXTURES / "woocommerce/order_created.json").read_bytes()
    return await order.client.post(
        "/v1/webhooks/woocommerce",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Signature": sign(body, shop["secret"]),
            "X-WC-Webhook-Delivery-ID": str(uuid.uuid4().int % 10**6),
            "X-WC-Webhook-Source": f"https://{shop['domain']}/",
        },
    )


async def timeline_types(order, order_id: str) -> list[str]:
    response = await order.client.get(f"/v1/orders/{order_id}/timeline", headers=API_KEY)
    return [e["type"] for e in response.json()["items"]]


async def test_shops_are_listed_and_edited_without_ever_showing_a_secret(order, market):
    shop = await shopify_shop(order, market)
    listed = await order.client.get("/v1/shops", headers=API_KEY)
    assert [s["domain"] for s in listed.json()["items"]] == [shop["domain"]]
    for secret in (shop["secret"], shop["token"]):
        assert secret not in listed.text
    async with order.runtime.engine.connect() as conn:
        stored = (
            await conn.execute(text("SELECT webhook_secret, access_token FROM marketplace_shop"))
        ).one()
    assert shop["secret"] not in str(stored) and shop["token"] not in str(stored)

    again = await order.client.post(
        "/v1/shops",
        json={"platform": "shopify", "domain": shop["domain"].upper(), "webhook_secret": "x",
              "api_base_url": "https://x.example", "access_token": "y"},
        headers=API_KEY,
    )  # fmt: skip
    assert again.status_code == 409
    no_token = await order.client.post(
        "/v1/shops",
        json={"platform": "shopify", "domain": "other.myshopify.com", "webhook_secret": "x",
              "api_base_url": "https://x.example"},
        headers=API_KEY,
    )  # fmt: skip
    assert no_token.status_code == 422
    assert no_token.json()["error"]["details"][0]["field"] == "body.access_token"
    assert (await order.client.get("/v1/shops")).status_code == 401

    disabled = await order.client.patch(
        f"/v1/shops/{shop['id']}", json={"active": False}, headers=API_KEY
    )
    assert disabled.status_code == 200 and disabled.json()["active"] is False
    assert (await shopify_order(order, shop)).status_code == 401
    missing = await order.client.patch("/v1/shops/shop_nope", json={}, headers=API_KEY)
    assert missing.status_code == 404


async def test_a_webhook_is_verified_with_the_secret_of_the_shop_that_sent_it(order, market):
    first, second = await shopify_shop(order, market), await shopify_shop(order, market)
    wrong = await shopify_order(order, second, secret=first["secret"])
    assert wrong.status_code == 401
    unknown = await shopify_order(order, {"domain": "nobody.myshopify.com", "secret": "s"})
    assert unknown.status_code == 401
    listed = await order.client.get("/v1/orders", headers=API_KEY)
    assert listed.json()["items"] == [], "a refused delivery stores nothing"
    accepted = await shopify_order(order, second)
    assert accepted.status_code == 200 and accepted.json()["created"] is True


async def test_a_dispatched_shopify_order_is_fulfilled_once_through_throttling(
    order, market, broker
):
    shop = await shopify_shop(
        order, market, throttled_calls=1, rate_limited_calls=1, retry_after_s=0.2
    )
    placed = (await shopify_order(order, shop)).json()
    detail = (await order.client.get(f"/v1/orders/{placed['order_id']}", headers=API_KEY)).json()
    line_ids = [ln["line_id"] for ln in detail["lines"]]
    await ship(broker, placed["order_id"], line_ids, "1Z999AA10123456784", times=2)

    async def fulfilled():
        made = [c for c in (await calls(market, shop)) if c["operation"] == "fulfillmentCreate"]
        return made or None

    [made] = await eventually(fulfilled, what="fulfillmentCreate at the shop")
    assert made["order_external_id"] == "5906483609841"
    assert made["tracking_number"] == "1Z999AA10123456784"
    state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
    assert state["refused"] == {"throttled_calls": 1, "rate_limited_calls": 1}
    fulfillment = state["orders"]["5906483609841"]["fulfillments"][0]["trackingInfo"][0]
    assert fulfillment["company"] == "UPS" and fulfillment["url"].startswith("https://www.ups.com")
    await eventually(
        lambda: _has(order, placed["order_id"], "marketplace-synced"), what="synced entry"
    )
    await order.runtime.bus.wait_connected()
    assert (
        len([c for c in (await calls(market, shop)) if c["operation"] == "fulfillmentCreate"]) == 1
    )


async def _has(order, order_id: str, kind: str) -> bool:
    return kind in await timeline_types(order, order_id)


async def test_a_woocommerce_order_gets_tracking_notes_and_completes_when_all_shipped(
    order, market, broker
):
    shop = await woo_shop(order, market)
    placed = (await woo_order(order, shop)).json()
    detail = (await order.client.get(f"/v1/orders/{placed['order_id']}", headers=API_KEY)).json()
    first, second = (ln["line_id"] for ln in detail["lines"])
    await ship(broker, placed["order_id"], [first], "SF1000000001")

    async def operations(count: int):
        ops = [
            (c["operation"], c["tracking_number"], c.get("status"))
            for c in (await calls(market, shop))
        ]
        return ops if len(ops) >= count else None

    assert await eventually(lambda: operations(1)) == [("notes.create", "SF1000000001", None)]
    await ship(broker, placed["order_id"], [second], "SF1000000002")
    assert await eventually(lambda: operations(3)) == [
        ("notes.create", "SF1000000001", None),
        ("notes.create", "SF1000000002", None),
        ("orders.update", None, "completed"),
    ]
    state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
    assert state["orders"]["4827"]["status"] == "completed"


async def test_a_write_back_that_keeps_failing_shows_in_the_timeline(order, market, broker):
    shop = await shopify_shop(order, market, failing_calls=100)
    placed = (await shopify_order(order, shop)).json()
    detail = (await order.client.get(f"/v1/orders/{placed['order_id']}", headers=API_KEY)).json()
    await ship(broker, placed["order_id"], [ln["line_id"] for ln in detail["lines"]], "1ZFAIL")
    await eventually(
        lambda: _has(order, placed["order_id"], "marketplace-sync-failed"),
        what="failed entry",
    )
    state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
    assert state["refused"] == {"failing_calls": 4}, "max attempts, then given up"
    assert (await calls(market, shop)) == []


async def test_a_cancellation_is_written_back_to_shopify(order, market):
    shop = await shopify_shop(order, market)
    placed = (await shopify_order(order, shop)).json()
    cancel = await order.client.post(
        f"/v1/orders/{placed['order_id']}/cancel",
        json={"reason": "customer asked"},
        headers=API_KEY,
    )
    assert cancel.status_code == 200, cancel.text

    [call] = await eventually(lambda: cancellations(market, shop), what="orderCancel at the shop")
    assert call["order_external_id"] == "5906483609841"


class CrashAfterFulfilment(httpx.AsyncBaseTransport):
    """The real network, but the process 'dies' right after the shop accepted a fulfilment."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if b"fulfillmentCreate(" in request.content:
            await response.aread()
            raise SystemExit("crashed before recording the write-back")
        return response


async def test_a_crash_after_the_shop_accepted_a_fulfilment_never_sends_it_twice(
    database_url, settings_for, market
):
    settings = settings_for(
        OrderSettings, await database_url("order"), writeback_enabled=False, consumers_enabled=False
    )
    async with in_process(create_app, settings) as svc:
        shop = await shopify_shop(svc, market)
        placed = (await shopify_order(svc, shop)).json()
        async with svc.runtime.uow() as uow:
            await queue(uow).put(
                f"fulfil:{placed['order_id']}:1ZCRASH",
                "fulfil",
                placed["order_id"],
                shop["id"],
                "5906483609841",
                {"carrier": "UPS", "tracking_number": "1ZCRASH", "tracking_url": None,
                 "skus": {}, "all_shipped": True},
            )  # fmt: skip
            await uow.commit()
        async with httpx.AsyncClient(transport=CrashAfterFulfilment()) as http:
            crashing = WritebackWorker(svc.runtime.uow, http, lease_s=0.2)
            with pytest.raises(SystemExit):
                await crashing.run_once()
        async with httpx.AsyncClient() as http:
            restarted = WritebackWorker(svc.runtime.uow, http, lease_s=0.2)
            await eventually(restarted.run_once, what="the leased write-back retried")
        made = [c for c in await calls(market, shop) if c["operation"] == "fulfillmentCreate"]
        assert [c["tracking_number"] for c in made] == ["1ZCRASH"]
        timeline = await svc.client.get(
            f"/v1/orders/{placed['order_id']}/timeline", headers=API_KEY
        )
        [synced] = [e for e in timeline.json()["items"] if e["type"] == "marketplace-synced"]
        assert synced["data"]["outcome"] == "already fulfilled"


async def test_each_shipment_of_a_split_shopify_order_fulfils_its_own_lines(order, market, broker):
    shop = await shopify_shop(order, market)
    await sim(
        market,
        "PUT",
        f"/_control/shops/{shop['name']}/orders/5906483609841",
        json=[{"sku": "BCB-L-001", "quantity": 2}, {"sku": "SSWB-750-BLK", "quantity": 1}],
    )
    placed = (await shopify_order(order, shop)).json()
    detail = (await order.client.get(f"/v1/orders/{placed['order_id']}", headers=API_KEY)).json()
    first, second = (ln["line_id"] for ln in detail["lines"])
    await ship(broker, placed["order_id"], [first], "1ZFIRST")

    async def fulfilled(count: int):
        made = [c for c in await calls(market, shop) if c["operation"] == "fulfillmentCreate"]
        return made if len(made) >= count else None

    await eventually(lambda: fulfilled(1), what="first fulfilment")
    state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
    items = state["orders"]["5906483609841"]["fulfillment_orders"][0]["lineItems"]
    assert [i["remainingQuantity"] for i in items] == [0, 1], "only the shipped line"
    await ship(broker, placed["order_id"], [second], "1ZSECOND")
    made = await eventually(lambda: fulfilled(2), what="second fulfilment")
    assert [c["tracking_number"] for c in made] == ["1ZFIRST", "1ZSECOND"]
    state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
    assert state["orders"]["5906483609841"]["fulfillment_orders"][0]["status"] == "CLOSED"
