"""Clock-driven polls that sleep long while idle still pick work up at once: the commit that
creates it wakes them, and they sleep only until the next due time the database holds.

Every service here may sleep up to ten minutes (`idle_poll_max_s`), so only those two
paths can deliver within the tests' deadlines; on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.supplier.handlers import dispatch
from shared.testing import eventually
from tests.integration.test_marketplace_writeback import shopify_order
from tests.support.data import API_KEY
from tests.support.kafka import publish_envelopes
from tests.support.marketplace import cancellations, shopify_shop, sim, writeback_service
from tests.support.supplier import add_supplier, control, placed, states

ASLEEP_S = 600.0


@pytest.fixture
async def order(database_url, settings_for):
    async with writeback_service(database_url, settings_for, idle_poll_max_s=ASLEEP_S) as svc:
        yield svc


async def test_a_write_back_queued_while_the_worker_sleeps_is_sent_at_once(order, market):
    shop = await shopify_shop(order, market)
    placed_order = (await shopify_order(order, shop)).json()
    cancel = await order.client.post(
        f"/v1/orders/{placed_order['order_id']}/cancel",
        json={"reason": "customer asked"},
        headers=API_KEY,
    )
    assert cancel.status_code == 200, cancel.text

    await eventually(
        lambda: cancellations(market, shop), timeout=20, what="orderCancel at the shop (woken)"
    )


async def test_a_write_back_retried_later_is_sent_when_due_while_the_worker_sleeps(order, market):
    shop = await shopify_shop(order, market, failing_calls=2)
    placed_order = (await shopify_order(order, shop)).json()
    await order.client.post(
        f"/v1/orders/{placed_order['order_id']}/cancel",
        json={"reason": "customer asked"},
        headers=API_KEY,
    )

    await eventually(
        lambda: cancellations(market, shop),
        timeout=20,
        what="orderCancel after two refusals (due time)",
    )
    state = (await sim(market, "GET", f"/_control/shops/{shop['name']}")).json()
    assert state["refused"] == {"failing_calls": 2}


async def test_lines_parked_while_the_waiting_clock_sleeps_are_routed_when_due(
    supplier_with, broker
):
    async with supplier_with(
        supplier_timeout_s=1.0,
        supplier_backoff_s=0.02,
        supplier_max_attempts=1,
        breaker_cooldown_s=0.5,
        supplier_retry_waiting_s=0.5,
        supplier_retry_waiting_max_s=1.0,
        idle_poll_max_s=ASLEEP_S,
    ) as svc:
        await add_supplier(svc, "down", offers=[("MUG", "4.00", 100, 24)])
        await control(svc, "down", fail_http_rate=1.0)
        order = placed(("MUG", 1, "12.50"))
        await publish_envelopes(broker.bootstrap, [order])

        await eventually(lambda: _waits(svc, order.subject), timeout=30, what="the line waiting")
        await control(svc, "down", fail_http_rate=0.0)
        await states(svc, order.subject, "accepted")


async def _waits(svc, order_id: str) -> bool:
    async with svc.runtime.uow() as uow:
        return bool(await uow.waiting.of_order(order_id))


async def test_the_reconciler_reads_when_its_next_check_is_due(supplier_with, broker):
    async with supplier_with(
        supplier_check_after_s=30.0,
        supplier_reconcile_interval_s=0.2,
        idle_poll_max_s=ASLEEP_S,
    ) as svc:
        check_max = timedelta(seconds=svc.runtime.settings.supplier_check_max_s)
        assert await dispatch.next_status_check(svc.runtime.uow(), check_max) is None
        await add_supplier(svc, "mute", offers=[("MUG", "3.00", 100, 24)])
        await control(svc, "mute", lose_callbacks=True, never_ship=True)
        event = placed(("MUG", 1, "12.50"))
        await publish_envelopes(broker.bootstrap, [event])
        await states(svc, event.subject, "received")
        due = await dispatch.next_status_check(svc.runtime.uow(), check_max)
        now = datetime.now(UTC)
        assert due is not None and now + timedelta(seconds=20) < due <= now + timedelta(seconds=30)
