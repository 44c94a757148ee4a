"""Refund write-back adapters through the transport seam: the documented inputs, a refund
found already made, and refusals that no retry can fix."""

from __future__ import annotations

import json

import httpx
import pytest

from services.order.shops.clients import Rejected, ShopifyClient, WooCommerceClient
from services.order.shops.domain import WritebackTask
from tests.unit.test_writeback_clients import SHOPIFY, WOO

REFUND = WritebackTask(
    7, "refund:rfd_1", "refund", "ord_1", "shop_1", "9007199254740993",
    {"refund_id": "rfd_1", "amount": "12.50", "currency": "USD", "reason": "wrong_item"},
    1,
)  # fmt: skip


def shopify_order(refund_notes: list[str], paid: bool = True) -> dict:
    transactions = (
        [{"id": "gid://shopify/OrderTransaction/5", "kind": "SALE", "status": "SUCCESS",
          "gateway": "shopify_payments"}] if paid else []
    )  # fmt: skip
    refunds = [{"id": f"gid://shopify/Refund/{i}", "note": n} for i, n in enumerate(refund_notes)]
    return {"data": {"order": {"id": "x", "refunds": refunds, "transactions": transactions}}}


def client(handler, cls, shop, money: bool):
    return cls(httpx.AsyncClient(transport=httpx.MockTransport(handler)), shop, refund_money=money)


@pytest.mark.parametrize("money", [False, True])
async def test_shopify_refund_create_records_or_pays_once(money: bool) -> None:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        if "refundCreate" in body["query"]:
            refund = {"refund": {"id": "gid://shopify/Refund/9"}, "userErrors": []}
            return httpx.Response(200, json={"data": {"refundCreate": refund}})
        return httpx.Response(200, json=shopify_order([]))

    outcome = await client(handler, ShopifyClient, SHOPIFY, money).refund(REFUND)
    assert outcome == ("refunded" if money else "refund recorded")
    refund = sent[1]["variables"]["input"]
    assert refund["orderId"] == "gid://shopify/Order/9007199254740993"
    assert refund["note"] == "Refund of 12.50 USD (wrong_item) [dropship rfd_1]"
    if money:
        assert refund["transactions"] == [
            {"orderId": refund["orderId"], "parentId": "gid://shopify/OrderTransaction/5",
             "gateway": "shopify_payments", "kind": "REFUND", "amount": "12.50"}
        ]  # fmt: skip
    else:
        assert "transactions" not in refund


async def test_a_refund_the_shop_already_has_is_not_sent_again() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert "refundCreate" not in json.loads(request.content)["query"]
        return httpx.Response(200, json=shopify_order(["Refund … [dropship rfd_1]"]))

    assert await client(handler, ShopifyClient, SHOPIFY, False).refund(REFUND) == (
        "already refunded"
    )

    def woo(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET", "nothing is posted"
        return httpx.Response(
            200, json=[{"id": 1, "amount": "12.50", "reason": "x [dropship rfd_1]"}]
        )

    assert await client(woo, WooCommerceClient, WOO, False).refund(REFUND) == "already refunded"


async def test_woocommerce_refund_posts_amount_reason_and_api_refund() -> None:
    posted: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/wp-json/wc/v3/orders/9007199254740993/refunds"
        if request.method == "GET":
            return httpx.Response(200, json=[])
        posted.append(json.loads(request.content))
        return httpx.Response(201, json={"id": 3})

    assert await client(handler, WooCommerceClient, WOO, False).refund(REFUND) == (
        "refund recorded"
    )
    assert posted == [{"amount": "12.50", "reason": "Refund of 12.50 USD (wrong_item) "
                       "[dropship rfd_1]", "api_refund": False}]  # fmt: skip


async def test_a_refund_that_cannot_be_paid_or_is_refused_is_rejected_for_good() -> None:
    def unpaid(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=shopify_order([], paid=False))

    with pytest.raises(Rejected, match="no captured payment"):
        await client(unpaid, ShopifyClient, SHOPIFY, True).refund(REFUND)

    def refused(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[])
        return httpx.Response(400, json={"code": "woocommerce_rest_invalid_order_refund"})

    with pytest.raises(Rejected, match="HTTP 400"):
        await client(refused, WooCommerceClient, WOO, False).refund(REFUND)
