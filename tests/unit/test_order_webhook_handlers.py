"""Marketplace webhook handlers: what each topic means, and once-per-delivery, through fakes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.order.errors import InvalidMarketplaceOrder
from services.order.handlers.webhooks import (
    CancelOrder,
    CreateOrder,
    Duplicate,
    Ignore,
    Ignored,
    MarketplaceWebhook,
    RedactCustomer,
    decide,
    handle_marketplace_webhook,
)
from services.order.marketplaces import MarketplacePayloadError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def payload(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return result


def shopify(topic: str, body: dict[str, Any]) -> MarketplaceWebhook:
    return MarketplaceWebhook("shopify", "d-1", topic, body)


def woo(topic: str, body: dict[str, Any]) -> MarketplaceWebhook:
    return MarketplaceWebhook("woocommerce", "17", topic, body)


def test_shopify_topics() -> None:
    created = decide(shopify("orders/create", payload("shopify/orders_create.json")))
    assert isinstance(created, CreateOrder)
    assert (created.order.channel, created.order.external_id) == ("shopify", "5906483609841")
    assert decide(shopify("orders/cancelled", payload("shopify/orders_cancelled.json"))) == (
        CancelOrder("shopify", "5906483609841", "cancelled in Shopify")
    )
    redact = decide(shopify("customers/redact", payload("shopify/customers_redact.json")))
    assert isinstance(redact, RedactCustomer) and redact.email
    assert decide(shopify("orders/updated", {})) == Ignore("orders/updated")


def test_woocommerce_topics() -> None:
    created = decide(woo("order.created", payload("woocommerce/order_created.json")))
    assert isinstance(created, CreateOrder) and created.order.external_id == "4827"
    cancelled = payload("woocommerce/order_cancelled.json")
    for topic in ("order.updated", "order.created"):
        assert decide(woo(topic, cancelled)) == CancelOrder(
            "woocommerce", "4827", "cancelled in WooCommerce"
        )
    assert decide(woo("order.updated", payload("woocommerce/order_created.json"))) == Ignore(
        "order.updated"
    )


def test_an_order_that_breaks_a_storefront_rule_is_refused_naming_the_field() -> None:
    body = payload("shopify/orders_create.json")
    body["currency"] = "usd"
    with pytest.raises(InvalidMarketplaceOrder) as caught:
        decide(shopify("orders/create", body))
    assert str(caught.value).startswith("Shopify order cannot be accepted: currency: ")
    assert caught.value.details[0]["field"] == "currency"
    with pytest.raises(MarketplacePayloadError) as unusable:
        decide(shopify("orders/create", {}))
    assert unusable.value.details == [{"field": "body.id", "reason": "missing"}]


class FakeDeliveries:
    def __init__(self) -> None:
        self.recorded: set[tuple[str, str | None, str]] = set()

    async def seen(self, source: str, shop_id: str | None, delivery_id: str) -> bool:
        return (source, shop_id, delivery_id) in self.recorded

    async def first_time(
        self, source: str, shop_id: str | None, delivery_id: str, topic: str
    ) -> bool:
        fresh = (source, shop_id, delivery_id) not in self.recorded
        self.recorded.add((source, shop_id, delivery_id))
        return fresh


class FakeUnitOfWork:
    """Just enough of `OrderUnitOfWork` for the delivery log."""

    def __init__(self) -> None:
        self.webhooks = FakeDeliveries()
        self.commits = 0

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def commit(self) -> None:
        self.commits += 1


async def test_a_delivery_is_recorded_after_its_effect_and_then_answered_duplicate() -> None:
    uow: Any = FakeUnitOfWork()
    delivery = shopify("app/uninstalled", {})
    assert await handle_marketplace_webhook(delivery, uow) == Ignored("app/uninstalled")
    assert uow.webhooks.recorded == {("shopify", None, "d-1")} and uow.commits == 1
    assert await handle_marketplace_webhook(delivery, uow) == Duplicate()
    assert uow.commits == 1


async def test_the_same_delivery_id_from_another_shop_is_another_delivery() -> None:
    uow: Any = FakeUnitOfWork()
    first = replace(shopify("app/uninstalled", {}), shop_id="shop_a")
    other = replace(first, shop_id="shop_b")
    assert await handle_marketplace_webhook(first, uow) == Ignored("app/uninstalled")
    assert await handle_marketplace_webhook(other, uow) == Ignored("app/uninstalled")
    assert await handle_marketplace_webhook(first, uow) == Duplicate()
    assert uow.webhooks.recorded == {("shopify", "shop_a", "d-1"), ("shopify", "shop_b", "d-1")}


def test_what_a_shop_sends_is_decided_for_that_shop() -> None:
    """Its order and its cancellation go by the sending shop: numbers are per shop."""
    created = decide(
        replace(shopify("orders/create", payload("shopify/orders_create.json")), shop_id="s1")
    )
    assert isinstance(created, CreateOrder) and created.order.shop_id == "s1"
    cancelled = replace(
        woo("order.updated", payload("woocommerce/order_cancelled.json")), shop_id="s2"
    )
    assert decide(cancelled) == CancelOrder("woocommerce", "4827", "cancelled in WooCommerce", "s2")
    default = decide(shopify("orders/create", payload("shopify/orders_create.json")))
    assert isinstance(default, CreateOrder) and default.order.shop_id is None


class UnreachableOrders:
    async def redact(self, email: str) -> int:
        raise ConnectionError("database went away")


async def test_a_delivery_whose_effect_fails_is_not_recorded() -> None:
    uow: Any = FakeUnitOfWork()
    uow.orders = UnreachableOrders()
    delivery = shopify("customers/redact", payload("shopify/customers_redact.json"))
    with pytest.raises(ConnectionError):
        await handle_marketplace_webhook(delivery, uow)
    assert uow.webhooks.recorded == set(), "the marketplace's retry must be processed again"
