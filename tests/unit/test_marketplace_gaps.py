"""Marketplace orders with gaps, pure: SKU-less lines carry their platform ids into
`order-placed`; a missing customer or shipping address becomes an `address_invalid` hold
whose note names what is missing (fixtures from the platforms' published examples)."""

from __future__ import annotations

import json
from pathlib import Path

from services.order.domain import Address, Order
from services.order.handlers.webhooks import MarketplaceWebhook, decide
from services.order.intake import IntakePolicy
from shared.events import HoldReason, OrderHeld, OrderPlaced

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def order_of(platform: str, fixture: str) -> Order:
    payload = json.loads((FIXTURES / fixture).read_text("utf-8"))
    topic = "orders/create" if platform == "shopify" else "order.created"
    action = decide(MarketplaceWebhook(platform, "d-1", topic, payload))  # type: ignore[arg-type]
    cmd = action.order  # type: ignore[union-attr]
    return Order.place(cmd, holds=IntakePolicy().holds_for(cmd))


def test_skuless_lines_carry_the_platforms_ids_most_specific_first() -> None:
    order = order_of("shopify", "shopify/orders_create_skuless.json")
    [placed] = [e for e in order.events if isinstance(e, OrderPlaced)]
    assert [ln.external_ids for ln in placed.lines] == [
        ["shopify:variant:44123456789041", "shopify:product:8012345678321"],
        ["shopify:variant:44123456821809", "shopify:product:8012345711089"],
    ]
    woo = order_of("woocommerce", "woocommerce/order_created_coupon.json")
    [placed] = [e for e in woo.events if isinstance(e, OrderPlaced)]
    assert [ln.external_ids for ln in placed.lines] == [None, ["woocommerce:product:1902"]]
    wire = json.loads(placed.model_dump_json(exclude_none=True))
    assert "external_ids" not in wire["lines"][0], "a line with a SKU sends nothing new"


def test_an_order_without_customer_or_address_is_held_naming_what_is_missing() -> None:
    order = order_of("shopify", "shopify/orders_create_no_customer.json")
    assert [type(e) for e in order.events] == [OrderHeld]
    [hold] = order.holds
    assert hold.reason is HoldReason.ADDRESS_INVALID
    assert hold.note == "customer.name: missing; shipping_address: missing"
    assert order.customer.email == "" and order.shipping == Address("", "", "", "")

    woo = order_of("woocommerce", "woocommerce/order_created_no_shipping.json")
    assert [h.note for h in woo.holds] == ["shipping_address: missing"]
    assert woo.customer.name == "Sophie Müller", "the billing name is the recipient's"
