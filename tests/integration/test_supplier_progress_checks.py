"""What a supplier could not tell us is asked for: dispatch and delivery learnt by polling."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from shared.db import outbox_table
from shared.testing import eventually
from tests.support.kafka import publish_envelopes
from tests.support.supplier import add_supplier, allocations, control, placed, sim_orders


@pytest.fixture
async def asking(supplier_with):
    async with supplier_with(
        supplier_check_after_s=0.5,
        supplier_check_max_s=1.0,
        supplier_reconcile_interval_s=0.2,
    ) as svc:
        yield svc


async def emitted(svc, topic: str, order_id: str) -> int:
    async with svc.runtime.uow() as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(outbox_table)
            .where(outbox_table.c.topic == topic, outbox_table.c.key == order_id)
        )
    return int(count or 0)


async def test_an_order_whose_every_callback_was_lost_is_still_dispatched_and_delivered(
    asking, broker
):
    # every supplier callback is lost, and the carrier's tracking updates never reach us
    # (the test simulator posts them to a closed port): only asking can move the order on
    await add_supplier(asking, "mute", offers=[("MUG", "3.00", 100, 24)])
    await control(asking, "mute", lose_callbacks=True, ship_after_s=0.3, deliver_after_s=0.1)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])

    async def delivered():
        items = await allocations(asking, event.subject)
        return items if items and all(a["state"] == "delivered" for a in items) else None

    await eventually(delivered, timeout=90, what="delivered, learnt by asking")
    [order] = await sim_orders(asking, "mute")
    assert order["state"] == "delivered"
    callbacks = [(e["type"], e["status"]) for e in order["events"] if e["kind"] == "callback"]
    assert callbacks == [("accepted", "lost"), ("dispatched", "lost")], "nothing was called back"
    for topic in ("supplier-confirmed", "shipment-dispatched", "shipment-delivered"):
        assert await emitted(asking, topic, event.subject) == 1, f"{topic} exactly once"


async def test_an_accepted_order_not_reported_dispatched_is_asked_about_again(asking, broker):
    await add_supplier(asking, "slow", offers=[("MUG", "3.00", 100, 24)])
    await control(asking, "slow", lose_callbacks=True, never_ship=True)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])

    async def accepted():
        items = await allocations(asking, event.subject)
        return items if items and items[0]["state"] == "accepted" else None

    await eventually(accepted, timeout=30, what="accepted, learnt by asking")
    asked = await _status_requests(asking, "slow")
    await eventually(lambda: _more_than(asking, "slow", asked + 2), timeout=30, what="asked again")
    assert await emitted(asking, "supplier-confirmed", event.subject) == 1


async def _status_requests(svc, key: str) -> int:
    async with httpx.AsyncClient() as client:
        log = (await client.get(f"{svc.simulator.url}/_control/{key}/requests")).json()["items"]
    return len(log) - 1  # the placement itself


async def _more_than(svc, key: str, count: int) -> bool:
    return await _status_requests(svc, key) >= count
