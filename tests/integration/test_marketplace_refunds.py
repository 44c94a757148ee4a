"""Refunds written back to the shop: `refund-issued` over the real broker becomes exactly one
Shopify `refundCreate` / WooCommerce refund per refund id, through duplicates, throttling
and a crash right after the shop accepted it. The marketplace simulator in its own process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from services.order.shops.handlers import queue
from services.order.shops.writeback import WritebackWorker
from shared.db import inbox_table
from shared.events import RefundIssued, ReturnReason, new_envelope
from shared.testing import eventually
from tests.integration.test_marketplace_writeback import (
    API_KEY,
    calls,
    shopify_order,
    shopify_shop,
    sim,
    woo_order,
    woo_shop,
)
from tests.support.kafka import publish_envelopes
from tests.support.marketplace import writeback_service


def refund(order_id: str, amount: str, currency: str = "USD") -> RefundIssued:
    return RefundIssued(
        order_id=order_id,
        refund_id=f"rfd_{uuid.uuid4().hex[:12]}",
        amount=Decimal(amount),
        currency=currency,
        reason=ReturnReason.DAMAGED_IN_TRANSIT,
        cost_bearer="supplier",
        supplier_id="sup_a",
        channel="shopify",
        issued_at=datetime.now(UTC),
    )


async def refunds_made(market, shop: dict, operation: str, count: int):
    async def probe():
        made = [c for c in await calls(market, shop) if c["operation"] == operation]
        return made if len(made) >= count else None

    return await eventually(probe, what=f"{count} {operation} at the shop")


@pytest.mark.parametrize("money", [False, True], ids=["recorded", "paid-by-the-gateway"])
async def test_each_refund_reaches_shopify_exactly_once(
    database_url, settings_for, market, broker, money
):
    async with writeback_service(database_url, settings_for, writeback_refund_money=money) as order:
        await order.runtime.bus.wait_connected()
        shop = await shopify_shop(order, market, throttled_calls=1, rate_limited_calls=1)
        placed = (await shopify_order(order, shop)).json()
        first, second = refund(placed["order_id"], "12.50"), refund(placed["order_id"], "5")
        # delivered twice, and a second refund of the same order
        await publish_envelopes(
            broker.bootstrap, [new_envelope(first)] * 2 + [new_envelope(second)]
        )

        made = await refunds_made(market, shop, "refundCreate", 2)
        assert [c["order_external_id"] for c in made] == ["5906483609841"] * 2
        assert [c.get("amount") for c in made] == (["12.50", "5"] if money else [None, None])
        state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
        notes = [r["note"] for r in state["orders"]["5906483609841"]["refunds"]]
        assert notes == [
            f"Refund of 12.50 USD (damaged_in_transit) [dropship {first.refund_id}]",
            f"Refund of 5 USD (damaged_in_transit) [dropship {second.refund_id}]",
        ]

        async def synced():
            response = await order.client.get(
                f"/v1/orders/{placed['order_id']}/timeline", headers=API_KEY
            )
            entries = [e for e in response.json()["items"] if e["type"] == "marketplace-synced"]
            return entries if len(entries) == 2 else None

        entries = await eventually(synced, what="two synced refunds in the timeline")
        outcome = "refunded" if money else "refund recorded"
        assert [e["data"]["outcome"] for e in entries] == [outcome, outcome]
        assert len(await refunds_made(market, shop, "refundCreate", 2)) == 2


async def test_a_refund_reaches_woocommerce_without_calling_the_gateway(
    database_url, settings_for, market, broker
):
    async with writeback_service(database_url, settings_for) as order:
        await order.runtime.bus.wait_connected()
        shop = await woo_shop(order, market)
        placed = (await woo_order(order, shop)).json()
        issued = refund(placed["order_id"], "14.95", "EUR")
        await publish_envelopes(broker.bootstrap, [new_envelope(issued)] * 2)

        [made] = await refunds_made(market, shop, "refunds.create", 1)
        assert (made["order_external_id"], made["amount"]) == ("4827", "14.95")
        state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
        [stored] = state["orders"]["4827"]["refunds"]
        assert stored["refunded_payment"] is False, "api_refund: false unless configured"
        assert issued.refund_id in stored["reason"]


async def test_a_refund_of_an_order_from_no_shop_is_not_written_back(
    database_url, settings_for, market, broker
):
    async with writeback_service(database_url, settings_for) as order:
        await order.runtime.bus.wait_connected()
        envelope = new_envelope(refund("ord_storefront", "3.00"))
        await publish_envelopes(broker.bootstrap, [envelope])

        async def consumed() -> bool:
            async with order.runtime.engine.connect() as conn:
                found = await conn.scalar(
                    select(inbox_table.c.event_id).where(inbox_table.c.event_id == envelope.id)
                )
            return found is not None

        await eventually(consumed, what="the refund consumed")
        async with order.runtime.uow() as uow:
            assert await queue(uow).of_order("ord_storefront") == []


class CrashAfterRefund(httpx.AsyncBaseTransport):
    """The real network, but the process 'dies' right after the shop accepted a refund."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if b"refundCreate(" in request.content or (
            request.url.path.endswith("/refunds") and (request.method == "POST")
        ):
            await response.aread()
            raise SystemExit("crashed before recording the write-back")
        return response


@pytest.mark.parametrize("platform", ["shopify", "woocommerce"])
async def test_a_crash_after_the_shop_accepted_a_refund_never_refunds_twice(
    database_url, settings_for, market, platform
):
    async with writeback_service(
        database_url, settings_for, writeback_enabled=False, consumers_enabled=False
    ) as svc:
        if platform == "shopify":
            shop = await shopify_shop(svc, market)
            placed, external = (await shopify_order(svc, shop)).json(), "5906483609841"
        else:
            shop = await woo_shop(svc, market)
            placed, external = (await woo_order(svc, shop)).json(), "4827"
        async with svc.runtime.uow() as uow:
            await queue(uow).put(
                "refund:rfd_crash",
                "refund",
                placed["order_id"],
                shop["id"],
                external,
                {"refund_id": "rfd_crash", "amount": "9.99", "currency": "USD",
                 "reason": "wrong_item"},
            )  # fmt: skip
            await uow.commit()
        async with httpx.AsyncClient(transport=CrashAfterRefund()) as http:
            crashing = WritebackWorker(svc.runtime.uow, http, lease_s=0.2)
            with pytest.raises(SystemExit):
                await crashing.run_once()
        async with httpx.AsyncClient() as http:
            restarted = WritebackWorker(svc.runtime.uow, http, lease_s=0.2)
            await eventually(restarted.run_once, what="the leased write-back retried")
        operation = "refundCreate" if platform == "shopify" else "refunds.create"
        made = [c for c in await calls(market, shop) if c["operation"] == operation]
        assert len(made) == 1
        timeline = await svc.client.get(
            f"/v1/orders/{placed['order_id']}/timeline", headers=API_KEY
        )
        [synced] = [e for e in timeline.json()["items"] if e["type"] == "marketplace-synced"]
        assert synced["data"]["outcome"] == "already refunded"
