"""The whole ship-to reaches the supplier, read from the order service at call time."""

from __future__ import annotations

import json

from shared.events import Envelope
from shared.testing import eventually
from tests.support.kafka import consume, publish_envelopes
from tests.support.order_contacts import ADDRESS
from tests.support.supplier import add_supplier, allocations, placed, sim_orders, states


async def test_the_supplier_receives_the_full_ship_to_and_nothing_keeps_it(supplier, broker):
    await add_supplier(supplier, "shipto", offers=[("MUG", "4.00", 100, 24)])
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])

    await states(supplier, event.subject, "accepted")
    [order] = await sim_orders(supplier, "shipto")
    assert order["ship_to"] == ADDRESS
    assert event.subject in await supplier.order_contacts.asked()
    shown = json.dumps(await allocations(supplier, event.subject))
    assert ADDRESS["line1"] not in shown and ADDRESS["name"] not in shown


async def test_orders_placed_together_have_their_ship_tos_read_in_one_request(
    supplier_with, order_contacts, broker
):
    async with supplier_with(supplier_ship_to_linger_ms=300) as supplier:  # surely together
        await add_supplier(supplier, "batch", offers=[("MUG", "4.00", 100, 24)])
        events = [placed(("MUG", 1, "12.50")), placed(("MUG", 2, "12.50"))]
        await publish_envelopes(broker.bootstrap, events)

        for event in events:
            await states(supplier, event.subject, "accepted")
        placed_orders = await sim_orders(supplier, "batch")
        assert [o["ship_to"] for o in placed_orders] == [ADDRESS, ADDRESS]
        assert [sorted(ids) for ids in await order_contacts.lookups()] == [
            sorted(e.subject for e in events)
        ]
        assert sorted(await order_contacts.asked()) == sorted(e.subject for e in events)


async def test_an_incomplete_address_is_refused_once_and_needs_attention(supplier, broker):
    await add_supplier(supplier, "strict", offers=[("MUG", "4.00", 100, 24)])
    await add_supplier(supplier, "strict2", offers=[("MUG", "5.00", 100, 24)])
    event = placed(("MUG", 1, "12.50"))
    await supplier.order_contacts.mark("incomplete", event.subject)
    await publish_envelopes(broker.bootstrap, [event])

    [record] = await consume(broker.bootstrap, "order-routing-failed", 1, within=30)
    failed = Envelope.from_bytes(record.value)
    assert failed.subject == event.subject
    assert failed.data == {**failed.data, "reason": "bad_address"}
    assert failed.data["line_ids"] == [f"{event.subject}-1"]
    assert ADDRESS["postal_code"] not in record.value.decode()
    items = await allocations(supplier, event.subject)
    assert [i["state"] for i in items] == ["rejected"], "not failed over: no supplier can fix it"
    assert await sim_orders(supplier, "strict") == []
    assert await sim_orders(supplier, "strict2") == []


async def test_an_erased_customer_cannot_be_shipped_to(supplier, broker):
    await add_supplier(supplier, "gdpr", offers=[("MUG", "4.00", 100, 24)])
    event = placed(("MUG", 2, "12.50"))
    await supplier.order_contacts.mark("redacted", event.subject)
    await publish_envelopes(broker.bootstrap, [event])

    [record] = await consume(broker.bootstrap, "order-routing-failed", 1, within=30)
    assert Envelope.from_bytes(record.value).data["reason"] == "bad_address"

    async def stock_back():
        offers = (
            await supplier.client.get(
                f"/v1/suppliers/{(await allocations(supplier, event.subject))[0]['supplier_id']}"
                "/offers",
                headers={"X-API-Key": "dev-api-key"},
            )
        ).json()["items"]
        return offers if offers[0]["stock"] == 100 else None

    await eventually(stock_back, what="stock given back")
    assert await sim_orders(supplier, "gdpr") == []
