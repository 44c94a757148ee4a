"""Documented marketplace payloads the order service must accept: SKU-less lines, discounts,
ids above 2^53, non-Latin text (fixtures built from the platforms' published examples)."""

from __future__ import annotations

import json

import pytest

from services.order.app import create_app
from services.order.settings import OrderSettings
from tests.support.marketplace import DEFAULT_SECRET as SECRET
from tests.support.marketplace import FIXTURES, deliver
from tests.support.services import in_process

SERVICE = {"Authorization": "Bearer dev-service-token"}


@pytest.fixture
async def order(database_url, settings_for):
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        shopify_secret=SECRET,
        woocommerce_secret=SECRET,
        consumers_enabled=False,
        writeback_enabled=False,
    )
    async with in_process(create_app, settings) as svc:
        yield svc


async def test_a_shopify_order_with_a_big_id_a_discount_and_a_skuless_line_is_kept_exactly(order):
    placed = await deliver(order, "shopify", "shopify/orders_create_edge.json")
    assert placed["external_id"] == "9007199254740993", "2^53 + 1, not rounded to a float"
    assert [(ln["sku"], ln["quantity"], ln["unit_price"]) for ln in placed["lines"]] == [
        ("TEA-CUP-CEL-6", 1, "268.00"),
        ("unmapped/shopify/variant/44198765464881", 2, "80.91"),  # 89.90 less 17.98 / 2
    ]
    contact = (await order.client.get(f"/v1/orders/{placed['id']}/contact", headers=SERVICE)).json()
    payload = json.loads((FIXTURES / "shopify/orders_create_edge.json").read_text("utf-8"))
    family, given = (
        payload["shipping_address"]["last_name"],
        payload["shipping_address"]["first_name"],
    )
    assert contact["name"] == family + given, "Chinese name, family name first, no space"


async def test_a_woocommerce_order_with_a_coupon_is_priced_at_what_the_customer_paid(order):
    placed = await deliver(order, "woocommerce", "woocommerce/order_created_coupon.json")
    assert placed["external_id"] == "9007199254740997"
    assert [(ln["sku"], ln["quantity"], ln["unit_price"]) for ln in placed["lines"]] == [
        ("LT-GT-2-NAT", 3, "9.09"),
        ("unmapped/woocommerce/product/1902", 1, "13.46"),
    ]
    contact = (await order.client.get(f"/v1/orders/{placed['id']}/contact", headers=SERVICE)).json()
    assert contact["name"] == "Jürgen Groß"
