"""The handling clock (placed -> accepted) and the lost-parcel clock, each firing once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from shared.events import Envelope
from shared.signing import sign_callback
from tests.support.kafka import consume, publish_envelopes
from tests.support.supplier import add_supplier, control, delays, placed, sim_orders, states


@pytest.fixture
async def clocked(supplier_with):
    """Lines must be accepted within 12 s of placing; a parcel silent 6 s is lost. The
    orders in time are accepted (or scanned) in well under a second, but the margins hold
    on a machine busy with other tests too (the first placing waits for the consumer to
    join its group, about three seconds)."""
    async with supplier_with(
        handling_sla_s=12.0,
        tracking_silence_h=6.0 / 3600,
    ) as svc:
        yield svc


async def test_an_order_not_accepted_in_time_is_delayed_once(clocked, broker):
    await add_supplier(clocked, "mute", offers=[("MUG", "3.00", 100, 24), ("JAM", "1.00", 9, 24)])
    await add_supplier(clocked, "quick", offers=[("TEA", "1.00", 100, 24)])
    await control(clocked, "mute", callback_delay_s=60)  # decides, but we hear it too late
    await control(clocked, "quick", never_ship=True)  # accepted in time, then nothing
    late = placed(("MUG", 1, "12.50"), ("TEA", 1, "4.00"))
    on_time = placed(("TEA", 1, "4.00"))
    await publish_envelopes(broker.bootstrap, [late, on_time])
    await states(clocked, on_time.subject, "accepted")

    [record] = await consume(broker.bootstrap, "shipment-delayed", 1, within=30)
    assert delays([record]) == [(late.subject, "not_accepted_in_time", "urgent")]
    assert Envelope.from_bytes(record.value).data["supplier_id"].startswith("sup_")
    # a later late order: by the time its delay comes, the clock has scanned the first
    # many times, yet reported it once, and never the order accepted in time
    marker = placed(("JAM", 1, "4.00"))
    await publish_envelopes(broker.bootstrap, [marker])
    records = await consume(broker.bootstrap, "shipment-delayed", 2, within=30)
    assert delays(records) == [
        (late.subject, "not_accepted_in_time", "urgent"),
        (marker.subject, "not_accepted_in_time", "urgent"),
    ]


async def test_a_silent_parcel_is_lost_once_and_movement_keeps_it_found(clocked, broker):
    await add_supplier(clocked, "ship", offers=[("MUG", "3.00", 100, 24)])
    await control(clocked, "ship", ship_after_s=0, deliver_after_s=None)
    silent, moving = placed(("MUG", 1, "12.50")), placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [silent, moving])
    await states(clocked, silent.subject, "dispatched")
    await states(clocked, moving.subject, "dispatched")
    orders = {o["order_id"]: o for o in await sim_orders(clocked, "ship")}
    tracking = orders[moving.subject]["tracking_number"]

    async def in_transit() -> None:
        body = json.dumps(
            {"carrier": "ups", "tracking_number": tracking, "status": "in_transit"}
        ).encode()
        stamp = str(int(time.time()))
        sig = sign_callback("dev-tracking-secret", stamp, body)
        response = await clocked.client.post(
            "/v1/webhooks/tracking",
            content=body,
            headers={
                "X-Tracking-Signature": sig,
                "X-Tracking-Timestamp": stamp,
                "X-Tracking-Delivery-Id": uuid.uuid4().hex,
            },
        )
        assert response.status_code == 200, response.text

    async def carrier() -> None:  # the moving parcel is scanned every half second
        while True:
            await in_transit()
            await asyncio.sleep(0.5)

    scanning = asyncio.create_task(carrier())
    try:
        [record] = await consume(broker.bootstrap, "shipment-delayed", 1, within=30)
        assert delays([record]) == [(silent.subject, "lost_in_transit", "urgent")]
    finally:
        scanning.cancel()
    # the carrier goes quiet: now the other parcel is lost too, and the first is not
    # reported again however often the clock scanned meanwhile
    records = await consume(broker.bootstrap, "shipment-delayed", 2, within=30)
    assert delays(records) == [
        (silent.subject, "lost_in_transit", "urgent"),
        (moving.subject, "lost_in_transit", "urgent"),
    ]


async def test_a_supplier_that_misses_its_deadline_loses_the_next_order(supplier_with, broker):
    async with supplier_with(handling_sla_s=2.0, supplier_cache_ttl_s=0) as svc:
        cheap = await add_supplier(svc, "cheapest", offers=[("MUG", "3.00", 100, 24)])
        steady = await add_supplier(svc, "steady", offers=[("MUG", "3.20", 100, 24)])
        await control(svc, "cheapest", callback_delay_s=60)  # takes orders, decides too late
        first = placed(("MUG", 1, "12.50"))
        await publish_envelopes(broker.bootstrap, [first])
        [item] = await states(svc, first.subject, "received")
        assert item["supplier_id"] == cheap, "the cheapest wins while its record is clean"

        [record] = await consume(broker.bootstrap, "shipment-delayed", 1, within=30)
        assert delays([record]) == [(first.subject, "not_accepted_in_time", "urgent")]
        second = placed(("MUG", 1, "12.50"))
        await publish_envelopes(broker.bootstrap, [second])
        [item] = await states(svc, second.subject, "accepted")
        assert item["supplier_id"] == steady, "the miss moved the route away"
