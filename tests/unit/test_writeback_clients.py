"""Write-back adapters through the transport seam: throttling, Retry-After, exactly once."""

from __future__ import annotations

import json

import httpx
import pytest

from services.order.shops.api import SHOP_ERRORS
from services.order.shops.clients import (
    Rejected,
    RetryLater,
    ShopifyClient,
    WooCommerceClient,
    _pick,
)
from services.order.shops.domain import (
    Credentials,
    InvalidShop,
    Shop,
    ShopError,
    WritebackTask,
    normalise_domain,
    tracking_url,
)

SHOPIFY = Shop("shop_1", "shopify", "a.myshopify.com", "https://a.myshopify.com",
               Credentials("whsec", access_token="shpat_1"))  # fmt: skip
WOO = Shop("shop_2", "woocommerce", "woo.example", "https://woo.example",
           Credentials("whsec", consumer_key="ck", consumer_secret="cs"))  # fmt: skip
TASK = WritebackTask(
    1, "fulfil:ord_1:1Z1", "fulfil", "ord_1", "shop_1", "9007199254740993",
    {"carrier": "UPS", "tracking_number": "1Z1", "tracking_url": None,
     "skus": {"MUG-1": 2}, "all_shipped": True},
    1,
)  # fmt: skip


def order_answer(fulfilled: list[str] | None = None) -> dict:
    return {
        "data": {
            "order": {
                "id": "gid://shopify/Order/9007199254740993",
                "fulfillments": [{"trackingInfo": [{"number": n}]} for n in fulfilled or []],
                "fulfillmentOrders": {"nodes": [{
                    "id": "gid://shopify/FulfillmentOrder/1", "status": "OPEN",
                    "lineItems": {"nodes": [
                        {"id": "gid://shopify/FulfillmentOrderLineItem/1", "sku": "MUG-1",
                         "remainingQuantity": 2},
                        {"id": "gid://shopify/FulfillmentOrderLineItem/2", "sku": "TEA-2",
                         "remainingQuantity": 1},
                    ]},
                }]},
            }
        }
    }  # fmt: skip


def shopify(handler) -> ShopifyClient:
    return ShopifyClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)), SHOPIFY)


async def test_shopify_fulfils_the_shipped_lines_with_tracking_and_the_big_id_exact():
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-Shopify-Access-Token"] == "shpat_1"
        assert request.url.path == "/admin/api/2024-10/graphql.json"
        body = json.loads(request.content)
        sent.append(body)
        if "fulfillmentCreate" in body["query"]:
            return httpx.Response(200, json={"data": {"fulfillmentCreate": {"userErrors": []}}})
        return httpx.Response(200, json=order_answer())

    assert await shopify(handler).fulfil(TASK) == "fulfilled"
    assert sent[0]["variables"] == {"id": "gid://shopify/Order/9007199254740993"}
    fulfillment = sent[1]["variables"]["fulfillment"]
    assert fulfillment["trackingInfo"] == {"company": "UPS", "number": "1Z1"}
    assert fulfillment["lineItemsByFulfillmentOrder"] == [
        {"fulfillmentOrderId": "gid://shopify/FulfillmentOrder/1",
         "fulfillmentOrderLineItems": [
             {"id": "gid://shopify/FulfillmentOrderLineItem/1", "quantity": 2}]}
    ]  # fmt: skip


async def test_shopify_finds_its_own_earlier_fulfilment_and_does_not_create_another():
    def handler(request: httpx.Request) -> httpx.Response:
        assert "fulfillmentCreate" not in json.loads(request.content)["query"]
        return httpx.Response(200, json=order_answer(fulfilled=["1Z1"]))

    assert await shopify(handler).fulfil(TASK) == "already fulfilled"


async def test_shopify_throttle_waits_as_long_as_the_bucket_needs():
    throttled = {
        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
        "extensions": {"cost": {"requestedQueryCost": 112, "actualQueryCost": None,
                                "throttleStatus": {"maximumAvailable": 2000.0,
                                                   "currentlyAvailable": 12,
                                                   "restoreRate": 100.0}}},
    }  # fmt: skip
    client = shopify(lambda _: httpx.Response(200, json=throttled))
    with pytest.raises(RetryLater) as caught:
        await client.fulfil(TASK)
    assert caught.value.wait_s == 1.0


@pytest.mark.parametrize(
    ("response", "error", "wait"),
    [
        (httpx.Response(429, headers={"Retry-After": "2.0"}), RetryLater, 2.0),
        (httpx.Response(503), RetryLater, None),
        (httpx.Response(401, json={"errors": "[API] Invalid API key"}), Rejected, None),
    ],
)
async def test_http_errors_are_retried_or_refused(response, error, wait):
    with pytest.raises(error) as caught:
        await shopify(lambda _: response).fulfil(TASK)
    assert getattr(caught.value, "wait_s", None) == wait


async def test_woocommerce_adds_the_tracking_note_once_and_completes_the_order():
    seen: list[tuple[str, str, object]] = []
    notes: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"].startswith("Basic ")
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.method == "GET":
            return httpx.Response(200, json=notes)
        if request.url.path.endswith("/notes"):
            notes.append(body)
            return httpx.Response(201, json=body)
        return httpx.Response(200, json={"status": "completed"})

    client = WooCommerceClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)), WOO)
    assert await client.fulfil(TASK) == "noted and completed"
    assert await client.fulfil(TASK) == "noted and completed"
    posts = [s for s in seen if s[0] == "POST"]
    assert len(posts) == 1 and "1Z1" in posts[0][2]["note"]
    assert ("PUT", "/wp-json/wc/v3/orders/9007199254740993", {"status": "completed"}) in seen


def test_unmatched_skus_fulfil_the_whole_open_fulfilment_order():
    nodes = order_answer()["data"]["order"]["fulfillmentOrders"]["nodes"]
    assert _pick(nodes, {"": 1}) == [{"fulfillmentOrderId": "gid://shopify/FulfillmentOrder/1"}]
    assert _pick([{**nodes[0], "status": "CLOSED"}], {"MUG-1": 1}) == []


def test_domains_and_tracking_pages():
    assert normalise_domain("https://Shop.Example.de/") == "shop.example.de"
    assert normalise_domain("shop.example.de") == "shop.example.de"
    assert normalise_domain("http://example.com/store/") == "example.com/store"
    assert tracking_url("UPS", "1Z9") == "https://www.ups.com/track?tracknum=1Z9"
    assert tracking_url("Local Courier", "1") is None


def test_every_shop_error_has_a_status():
    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    for cls in subclasses(ShopError):
        assert any(base in SHOP_ERRORS for base in cls.__mro__), cls
    with pytest.raises(InvalidShop):
        Shop("s", "woocommerce", "w.example", "https://w", Credentials("x")).check()
