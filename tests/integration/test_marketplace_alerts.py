"""A write-back that keeps failing pages ops: `marketplace-sync-failed` from the order service
(through the outbox and the real broker) becomes one ops alert in notify, delivered to a
real webhook; the order's timeline shows it. The marketplace simulator in its own process."""

from __future__ import annotations

import json

import pytest

from services.notify.app import create_app as notify_app
from services.notify.settings import NotifySettings
from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from shared.testing import eventually
from tests.integration.test_marketplace_writeback import (
    API_KEY,
    calls,
    ship,
    shopify_order,
    shopify_shop,
    sim,
)
from tests.support.notify import until, webhook_sink
from tests.support.services import in_process


@pytest.fixture
async def sink():
    async with webhook_sink() as hooks:
        yield hooks


@pytest.fixture
async def services(database_url, settings_for, sink):
    order_settings = settings_for(
        OrderSettings,
        await database_url("order"),
        writeback_poll_s=0.1,
        writeback_backoff_s=0.05,
        writeback_backoff_max_s=0.2,
        writeback_max_attempts=3,
    )
    notify_settings = settings_for(
        NotifySettings,
        await database_url("notify"),
        ops_webhooks=json.dumps([{"kind": "generic", "url": sink.endpoint("generic")}]),
        order_url="http://127.0.0.1:9",
        sender_poll_s=0.1,
        escalation_scan_s=60,
    )
    async with (
        in_process(order_app, order_settings) as order,
        in_process(notify_app, notify_settings) as notify,
    ):
        await order.runtime.bus.wait_connected()
        await notify.runtime.bus.wait_connected()
        yield order, notify


@pytest.mark.parametrize(
    ("steering", "attempts"),
    [({"forbidden_calls": 100}, 1), ({"failing_calls": 100}, 3)],
    ids=["refused-for-good", "attempts-exhausted"],
)
async def test_a_write_back_that_keeps_failing_raises_one_ops_alert(
    services, market, broker, sink, steering, attempts
):
    order, notify = services
    shop = await shopify_shop(order, market, **steering)
    placed = (await shopify_order(order, shop)).json()
    order_id = placed["order_id"]
    detail = (await order.client.get(f"/v1/orders/{order_id}", headers=API_KEY)).json()
    await ship(broker, order_id, [ln["line_id"] for ln in detail["lines"]], "1ZALERT", times=2)

    async def failed_entry():
        response = await order.client.get(f"/v1/orders/{order_id}/timeline", headers=API_KEY)
        found = [e for e in response.json()["items"] if e["type"] == "marketplace-sync-failed"]
        return found or None

    [entry] = await eventually(failed_entry, what="the failed write-back in the timeline")
    assert entry["data"]["operation"] == "fulfil" and entry["data"]["attempts"] == attempts
    assert entry["data"]["shop"] == shop["domain"]
    assert entry["data"]["tracking_number"] == "1ZALERT"

    await until(lambda: len(sink.of("generic")) >= 1, what="the ops alert")
    alert = sink.of("generic")[0].body
    assert alert["kind"] == "marketplace_sync_failed"
    assert order_id in alert["title"] and shop["domain"] in alert["title"]
    text = json.dumps(alert)
    assert "1ZALERT" in text and "5906483609841" in text
    for pii in ("Emily", "Glenarm", "emily.carter"):  # the fixture's customer
        assert pii not in text

    alerts = (await notify.client.get("/v1/alerts", headers=API_KEY)).json()["items"]
    assert [(a["kind"], a["order_id"]) for a in alerts] == [("marketplace_sync_failed", order_id)]
    state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
    assert sum(state["refused"].values()) == attempts
    assert await calls(market, shop) == []
    await until(lambda: len(sink.of("generic")) >= 1, what="still one alert")
    assert len(sink.of("generic")) == 1
