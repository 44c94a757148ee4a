"""Shopify and WooCommerce webhooks against the order service, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from services.order.app import create_app
from services.order.marketplaces import sign
from services.order.settings import OrderSettings
from tests.support.data import API_KEY
from tests.support.services import in_process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHOPIFY_SECRET = "shpss_test_5b2c0d7e"
WOO_SECRET = "woo_test_secret_91"
SERVICE = {"Authorization": "Bearer dev-service-token"}


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def shopify_headers(
    body: bytes, topic: str, delivery: str | None = None, secret: str = SHOPIFY_SECRET
):
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Webhook-Id": delivery or str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": "dropship-demo.myshopify.com",
    }


def woo_headers(body: bytes, topic: str, delivery: str | None = None, secret: str = WOO_SECRET):
    return {
        "Content-Type": "application/json",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Signature": sign(body, secret),
        "X-WC-Webhook-Delivery-ID": delivery or str(uuid.uuid4().int % 10**6),
        "X-WC-Webhook-Source": "https://shop.example.de/",
    }


@pytest.fixture
async def order(database_url, settings_for):
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        shopify_secret=SHOPIFY_SECRET,
        woocommerce_secret=WOO_SECRET,
        consumers_enabled=False,
    )
    async with in_process(create_app, settings) as svc:
        yield svc


async def all_orders(svc) -> list[dict]:
    return (await svc.client.get("/v1/orders", params={"limit": 200}, headers=API_KEY)).json()[
        "items"
    ]


async def test_shopify_order_create_becomes_one_canonical_order(order):
    body = raw("shopify/orders_create.json")
    started = time.perf_counter()
    response = await order.client.post(
        "/v1/webhooks/shopify", content=body, headers=shopify_headers(body, "orders/create")
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted" and response.json()["created"] is True
    assert elapsed < 5, "Shopify gives up after 5 s"
    [placed] = await all_orders(order)
    assert placed["channel"] == "shopify" and placed["external_id"] == "5906483609841"
    assert placed["currency"] == "USD" and placed["total"] == "64.48"
    assert [(ln["sku"], ln["quantity"], ln["unit_price"]) for ln in placed["lines"]] == [
        ("BCB-L-001", 2, "19.99"),
        ("SSWB-750-BLK", 1, "24.50"),
    ]
    contact = (await order.client.get(f"/v1/orders/{placed['id']}/contact", headers=SERVICE)).json()
    assert contact["email"] == "emily.carter@example.com"


async def test_shopify_redelivery_and_a_second_webhook_for_the_same_order_create_nothing(order):
    body = raw("shopify/orders_create.json")
    headers = shopify_headers(
        body, "orders/create", delivery="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    )
    first = await order.client.post("/v1/webhooks/shopify", content=body, headers=headers)
    again = await order.client.post("/v1/webhooks/shopify", content=body, headers=headers)
    other_delivery = await order.client.post(
        "/v1/webhooks/shopify", content=body, headers=shopify_headers(body, "orders/create")
    )
    assert first.json()["created"] is True
    assert again.json() == {"status": "duplicate"}
    assert other_delivery.json()["created"] is False
    assert other_delivery.json()["order_id"] == first.json()["order_id"]
    assert len(await all_orders(order)) == 1


async def test_concurrent_deliveries_of_one_shopify_order_create_one_order(order):
    body = raw("shopify/orders_create.json")
    responses = await asyncio.gather(
        *(
            order.client.post(
                "/v1/webhooks/shopify", content=body, headers=shopify_headers(body, "orders/create")
            )
            for _ in range(6)
        )
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert len(await all_orders(order)) == 1


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "one byte changed", "missing header", "empty signature"],
)
async def test_shopify_bad_signature_is_401_and_stores_nothing(order, tamper):
    body = raw("shopify/orders_create.json")
    headers = shopify_headers(body, "orders/create")
    sent = body
    if tamper == "wrong secret":
        headers["X-Shopify-Hmac-Sha256"] = sign(body, "not-the-secret")
    elif tamper == "one byte changed":
        at = body.index(b"19.99")
        sent = body[:at] + b"2" + body[at + 1 :]  # 19.99 -> 29.99
    elif tamper == "missing header":
        del headers["X-Shopify-Hmac-Sha256"]
    else:
        headers["X-Shopify-Hmac-Sha256"] = ""
    response = await order.client.post("/v1/webhooks/shopify", content=sent, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert await all_orders(order) == []
    # the same delivery, correctly signed, is still accepted: nothing was recorded
    good = await order.client.post(
        "/v1/webhooks/shopify",
        content=body,
        headers=shopify_headers(body, "orders/create", headers["X-Shopify-Webhook-Id"]),
    )
    assert good.json()["status"] == "accepted"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_shopify_chinese_order_cancel_and_redact(order):
    zh = raw("shopify/orders_create_zh.json")
    created = await order.client.post(
        "/v1/webhooks/shopify", content=zh, headers=shopify_headers(zh, "orders/create")
    )
    order_id = created.json()["order_id"]
    contact = (await order.client.get(f"/v1/orders/{order_id}/contact", headers=SERVICE)).json()
    assert contact["name"] == "王小明" and contact["locale"] == "zh-CN"
    detail = (await order.client.get(f"/v1/orders/{order_id}", headers=API_KEY)).json()
    assert detail["shipping"]["city"] == "广州市" and detail["currency"] == "CNY"

    us = raw("shopify/orders_create.json")
    await order.client.post(
        "/v1/webhooks/shopify", content=us, headers=shopify_headers(us, "orders/create")
    )
    cancelled = raw("shopify/orders_cancelled.json")
    result = await order.client.post(
        "/v1/webhooks/shopify",
        content=cancelled,
        headers=shopify_headers(cancelled, "orders/cancelled"),
    )
    assert result.json()["status"] == "accepted"
    statuses = {o["external_id"]: o["status"] for o in await all_orders(order)}
    assert statuses == {"5906483609841": "cancelled", "5912345678961": "placed"}

    redact = raw("shopify/customers_redact.json")
    result = await order.client.post(
        "/v1/webhooks/shopify", content=redact, headers=shopify_headers(redact, "customers/redact")
    )
    assert result.json() == {"status": "accepted", "redacted": 1}
    us_id = next(o["id"] for o in await all_orders(order) if o["external_id"] == "5906483609841")
    assert (await order.client.get(f"/v1/orders/{us_id}/contact", headers=SERVICE)).json()[
        "redacted"
    ] is True
    assert (await order.client.get(f"/v1/orders/{order_id}/contact", headers=SERVICE)).json()[
        "redacted"
    ] is False


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_shopify_payload_that_cannot_be_an_order_is_422_naming_the_field(order):
    payload = json.loads(raw("shopify/orders_create.json"))
    payload["line_items"][1]["price"] = "12,50"  # a null SKU is accepted (DESIGN §6)
    body = json.dumps(payload).encode()
    response = await order.client.post(
        "/v1/webhooks/shopify", content=body, headers=shopify_headers(body, "orders/create")
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.line_items.1.price"
    payload["line_items"][1]["price"] = "24.50"
    payload["currency"] = "usd"
    body = json.dumps(payload).encode()
    response = await order.client.post(
        "/v1/webhooks/shopify", content=body, headers=shopify_headers(body, "orders/create")
    )
    assert response.status_code == 422 and "currency" in response.json()["error"]["message"]
    assert await all_orders(order) == []


async def test_woocommerce_ping_created_dedupe_and_cancelled(order):
    ping = await order.client.post(
        "/v1/webhooks/woocommerce",
        content=b"webhook_id=17",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ping.status_code == 200

    body = raw("woocommerce/order_created.json")
    headers = woo_headers(body, "order.created", delivery="88231")
    first = await order.client.post("/v1/webhooks/woocommerce", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["created"] is True
    assert (
        await order.client.post("/v1/webhooks/woocommerce", content=body, headers=headers)
    ).json() == {"status": "duplicate"}
    [placed] = await all_orders(order)
    assert placed["channel"] == "woocommerce" and placed["external_id"] == "4827"
    assert [(ln["sku"], ln["unit_price"]) for ln in placed["lines"]] == [
        ("LT-GT-2-NAT", "10.10"),
        ("EB-350-WS", "14.95"),
    ]

    cancelled = raw("woocommerce/order_cancelled.json")
    result = await order.client.post(
        "/v1/webhooks/woocommerce",
        content=cancelled,
        headers=woo_headers(cancelled, "order.updated"),
    )
    assert result.json()["status"] == "accepted"
    assert (await all_orders(order))[0]["status"] == "cancelled"


@pytest.mark.parametrize("tamper", ["wrong secret", "one byte changed", "missing header"])
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_woocommerce_bad_signature_is_401_and_stores_nothing(order, tamper):
    body = raw("woocommerce/order_created.json")
    headers = woo_headers(body, "order.created")
    if tamper == "wrong secret":
        headers["X-WC-Webhook-Signature"] = sign(body, "nope")
    elif tamper == "one byte changed":
        body = body.replace(b"30.30", b"30.31", 1)
    else:
        del headers["X-WC-Webhook-Signature"]
    response = await order.client.post("/v1/webhooks/woocommerce", content=body, headers=headers)
    assert response.status_code == 401
    assert await all_orders(order) == []


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize(
    ("header", "length"), [("X-Shopify-Webhook-Id", 129), ("X-Shopify-Topic", 65)]
)
async def test_over_long_webhook_headers_are_422_not_500(order, header, length):
    body = b"{}"
    headers = shopify_headers(body, "orders/updated")
    headers[header] = "x" * length
    response = await order.client.post("/v1/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == f"header.{header}"


async def test_a_captured_order_replayed_under_another_topic_does_nothing(order):
    """Shopify signs the body, not the topic header (review finding 8)."""
    created = raw("shopify/orders_create.json")
    first = await order.client.post(
        "/v1/webhooks/shopify", content=created, headers=shopify_headers(created, "orders/create")
    )
    order_id = first.json()["order_id"]
    for topic, field in (("orders/cancelled", "cancelled_at"), ("customers/redact", "line_items")):
        replayed = await order.client.post(
            "/v1/webhooks/shopify", content=created, headers=shopify_headers(created, topic)
        )
        assert replayed.status_code == 422, topic
        assert replayed.json()["error"]["details"][0]["field"] == f"body.{field}"
    detail = (await order.client.get(f"/v1/orders/{order_id}", headers=API_KEY)).json()
    assert detail["status"] == "placed", "not cancelled by a replayed creation"
    contact = (await order.client.get(f"/v1/orders/{order_id}/contact", headers=SERVICE)).json()
    assert contact["redacted"] is False and contact["email"], "not redacted by it either"

    cancelled = raw("shopify/orders_cancelled.json")
    as_new = await order.client.post(
        "/v1/webhooks/shopify",
        content=cancelled,
        headers=shopify_headers(cancelled, "orders/create"),
    )
    assert as_new.status_code == 422
    assert as_new.json()["error"]["details"][0]["field"] == "body.cancelled_at"


async def test_a_cancellation_that_arrives_before_its_order_wins(order):
    cancelled = raw("shopify/orders_cancelled.json")
    early = await order.client.post(
        "/v1/webhooks/shopify",
        content=cancelled,
        headers=shopify_headers(cancelled, "orders/cancelled"),
    )
    assert early.status_code == 200 and early.json()["status"] == "ignored"
    created = raw("shopify/orders_create.json")
    late = await order.client.post(
        "/v1/webhooks/shopify", content=created, headers=shopify_headers(created, "orders/create")
    )
    assert late.status_code == 200
    assert late.json() == {"status": "ignored", "reason": "cancelled before it arrived"}
    assert await all_orders(order) == []


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_cancellation_racing_its_order_still_wins(order):
    """Whichever of the two commits second sees the other: never a live cancelled order."""
    for n in range(8):
        external_id = 7_000_000_000_000 + n
        bodies = {}
        for topic, fixture in (
            ("orders/cancelled", "shopify/orders_cancelled.json"),
            ("orders/create", "shopify/orders_create.json"),
        ):
            payload = json.loads(raw(fixture))
            payload["id"] = external_id
            bodies[topic] = json.dumps(payload).encode()
        results = await asyncio.gather(
            *(
                order.client.post(
                    "/v1/webhooks/shopify", content=body, headers=shopify_headers(body, topic)
                )
                for topic, body in bodies.items()
            )
        )
        assert all(r.status_code == 200 for r in results), [r.text for r in results]
    statuses = {o["external_id"]: o["status"] for o in await all_orders(order)}
    assert set(statuses.values()) <= {"cancelled"}, statuses
