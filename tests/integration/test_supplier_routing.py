"""Routing, failover, supplier calls and callbacks: supplier service + simulator over real HTTP."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from shared.events import Envelope, OrderCancelled, new_envelope
from shared.signing import sign_callback
from shared.testing import eventually
from tests.support.kafka import publish_envelopes
from tests.support.supplier import (
    ADMIN,
    add_supplier,
    allocations,
    control,
    placed,
    sim_orders,
    states,
)


async def test_an_order_splits_across_two_suppliers_and_is_confirmed(supplier, broker):
    a = await add_supplier(supplier, "acme", offers=[("MUG", "4.00", 100, 24)])
    b = await add_supplier(supplier, "bolt", offers=[("TEA", "1.00", 100, 24)])
    event = placed(("MUG", 2, "12.50"), ("TEA", 1, "4.00"))
    await publish_envelopes(broker.bootstrap, [event])

    async def both_accepted():
        items = await allocations(supplier, event.subject)
        return (
            items
            if len(items) == 2 and all(i["state"] in ("accepted", "dispatched") for i in items)
            else None
        )

    items = await eventually(both_accepted, timeout=30)
    assert {(i["sku"], i["supplier_id"]) for i in items} == {("MUG", a), ("TEA", b)}
    assert {i["unit_cost"] for i in items} == {"4", "1"}
    assert (
        len(await sim_orders(supplier, "acme")) == 1
        and len(await sim_orders(supplier, "bolt")) == 1
    )
    offers = (await supplier.client.get(f"/v1/suppliers/{a}/offers", headers=ADMIN)).json()["items"]
    assert offers[0]["stock"] == 98, "stock is reserved on allocation"


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("failure", ["reject", "out_of_stock", "timeout", "http_500"])
async def test_a_failing_supplier_is_failed_over_to_the_next(supplier, broker, failure):
    best = await add_supplier(supplier, "cheap", offers=[("MUG", "3.00", 100, 24)])
    backup = await add_supplier(supplier, "backup", offers=[("MUG", "5.00", 100, 24)])
    steer = {
        "reject": {"reject_rate": 1.0},
        "out_of_stock": {"out_of_stock_skus": ["CHEAP-MUG"]},
        "timeout": {"latency_ms": 4000, "ship_after_s": 600},  # slow, and slow to ship
        "http_500": {"fail_http_rate": 1.0},
    }[failure]
    await control(supplier, "cheap", **steer)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])

    async def moved():
        items = await allocations(supplier, event.subject)
        return (
            items
            if any(
                i["supplier_id"] == backup and i["state"] in ("accepted", "dispatched")
                for i in items
            )
            else None
        )

    items = await eventually(moved, timeout=40)
    first = next(i for i in items if i["supplier_id"] == best)
    assert first["state"] in (
        "rejected",
        "out_of_stock",
        "unavailable",
        "cancel_pending",
        "cancelling",
        "cancelled",
    )
    assert len(await sim_orders(supplier, "backup")) == 1

    async def stock(supplier_id: str) -> int:
        url = f"/v1/suppliers/{supplier_id}/offers"
        return (await supplier.client.get(url, headers=ADMIN)).json()["items"][0]["stock"]

    # the failed supplier's reservation is given back, unless it said it has none
    assert await stock(best) == (0 if failure == "out_of_stock" else 100)
    assert await stock(backup) == 99
    if failure == "timeout":  # the slow supplier took the order in the end: it is called off
        await control(supplier, "cheap", latency_ms=0)

        async def called_off():
            orders = await sim_orders(supplier, "cheap")
            return orders if orders and all(o["state"] == "cancelled" for o in orders) else None

        assert len(await eventually(called_off, timeout=30)) == 1


async def test_a_supplier_answering_500_then_200_receives_exactly_one_order(
    supplier, broker, caplog
):
    await add_supplier(supplier, "flaky", offers=[("MUG", "3.00", 100, 24)])
    await control(supplier, "flaky", fail_http_rate=0.5, seed=3)
    events = [placed(("MUG", 1, "12.50")) for _ in range(3)]
    await publish_envelopes(broker.bootstrap, events)

    async def all_settled():
        found = [await allocations(supplier, e.subject) for e in events]
        settled = all(
            a and a[0]["state"] in ("accepted", "dispatched", "unavailable") for a in found
        )
        return found if settled else None

    found = await eventually(all_settled, timeout=30)
    assert "failed: http 500" in caplog.text, "the supplier did fail some calls"
    accepted = {
        a[0]["supplier_order_id"] for a in found if a[0]["state"] in ("accepted", "dispatched")
    }
    assert accepted, "retries got through"
    received = await sim_orders(supplier, "flaky")
    keys = [o["idempotency_key"] for o in received]
    assert len(keys) == len(set(keys)), "no supplier order was placed twice"
    assert set(keys) == accepted, "exactly one order at the supplier per accepted supplier order"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_no_eligible_supplier_means_routing_failed_with_the_reason(supplier, broker):
    await add_supplier(supplier, "dear", offers=[("MUG", "20.00", 100, 24), ("CUP", "1.00", 0, 24)])
    cases = {
        "negative_margin": placed(("MUG", 1, "12.50")),
        "out_of_stock": placed(("CUP", 1, "12.50")),
        "no_offer": placed(("NOPE", 1, "12.50")),
    }
    await publish_envelopes(broker.bootstrap, list(cases.values()))
    from tests.support.kafka import consume

    records = await consume(broker.bootstrap, "order-routing-failed", 3)
    reasons = {
        Envelope.from_bytes(r.value).subject: Envelope.from_bytes(r.value).data["reason"]
        for r in records
    }
    assert reasons == {e.subject: reason for reason, e in cases.items()}
    assert await sim_orders(supplier, "dear") == [], "nothing is bought at a loss"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_bad_callback_signature_changes_nothing(supplier, broker):
    sid = await add_supplier(supplier, "sig", offers=[("MUG", "3.00", 100, 24)])
    await control(supplier, "sig", never_ship=True)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])
    [alloc] = await states(supplier, event.subject, "accepted")
    body = json.dumps(
        {
            "type": "dispatched",
            "reference": alloc["supplier_order_id"],
            "carrier": "ups",
            "tracking_number": "FAKE1",
        }
    ).encode()
    stamp = str(int(time.time()))
    for signature in ("", "0" * 64, sign_callback("wrong", stamp, body)):
        response = await supplier.client.post(
            f"/v1/webhooks/suppliers/{sid}",
            content=body,
            headers={
                "X-Supplier-Signature": signature,
                "X-Supplier-Timestamp": stamp,
                "X-Supplier-Delivery-Id": str(uuid.uuid4()),
            },
        )
        assert response.status_code == 401
    [still] = await allocations(supplier, event.subject)
    assert still["state"] == "accepted"


async def test_cancelling_calls_off_the_supplier_order(supplier, broker):
    await add_supplier(supplier, "calm", offers=[("MUG", "3.00", 100, 24)])
    await control(supplier, "calm", never_ship=True)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])
    await states(supplier, event.subject, "accepted")
    await publish_envelopes(
        broker.bootstrap, [new_envelope(OrderCancelled(order_id=event.subject, reason="customer"))]
    )
    [cancelled] = await states(supplier, event.subject, "cancelled")
    offers = f"/v1/suppliers/{cancelled['supplier_id']}/offers"
    [offer] = (await supplier.client.get(offers, headers=ADMIN)).json()["items"]
    assert offer["stock"] == 100, "a cancelled allocation gives its stock back"

    async def cancelled_at_supplier():
        orders = await sim_orders(supplier, "calm")
        return orders if orders and orders[0]["state"] == "cancelled" else None

    await eventually(cancelled_at_supplier)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_cancellation_consumed_before_its_order_means_it_is_never_bought(supplier, broker):
    await add_supplier(supplier, "early", offers=[("MUG", "3.00", 100, 24)])
    event = placed(("MUG", 1, "12.50"))
    cancel = new_envelope(OrderCancelled(order_id=event.subject, reason="customer"))
    await publish_envelopes(broker.bootstrap, [cancel])

    async def remembered():
        async with supplier.runtime.uow() as uow:
            return await uow.routing_requests.was_cancelled(event.subject)

    await eventually(remembered, what="cancellation recorded")
    await publish_envelopes(broker.bootstrap, [event])

    async def received():
        async with supplier.runtime.uow() as uow:
            return event.subject in await uow.routing_requests.received_orders()

    await eventually(received, what="order recorded")
    assert await allocations(supplier, event.subject) == []
    assert await sim_orders(supplier, "early") == []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_when_every_supplier_fails_the_order_is_reported_unroutable(supplier, broker):
    await add_supplier(supplier, "no-1", offers=[("MUG", "3.00", 100, 24)])
    await add_supplier(supplier, "no-2", offers=[("MUG", "4.00", 100, 24)])
    await control(supplier, "no-1", reject_rate=1.0)
    await control(supplier, "no-2", reject_rate=1.0)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])
    from tests.support.kafka import consume

    [record] = await consume(broker.bootstrap, "order-routing-failed", 1, within=30)
    failed = Envelope.from_bytes(record.value)
    assert failed.subject == event.subject
    assert failed.data["reason"] == "all_suppliers_failed"
    assert failed.data["line_ids"] == [f"{event.subject}-1"]
    assert {a["state"] for a in await allocations(supplier, event.subject)} == {"rejected"}


async def test_concurrent_orders_never_take_more_stock_than_there_is(supplier, broker):
    scarce = await add_supplier(supplier, "scarce", offers=[("MUG", "3.00", 3, 24)])
    plenty = await add_supplier(supplier, "plenty", offers=[("MUG", "5.00", 100, 24)])
    events = [placed(("MUG", 1, "12.50")) for _ in range(10)]  # keyed over all partitions
    await publish_envelopes(broker.bootstrap, events)
    for e in events:
        await states(supplier, e.subject, "accepted")
    winners = [a["supplier_id"] for e in events for a in await allocations(supplier, e.subject)]
    assert winners.count(scarce) == 3 and winners.count(plenty) == 7
    assert len(await sim_orders(supplier, "scarce")) == 3, "never more than the supplier has"
    [offer] = (await supplier.client.get(f"/v1/suppliers/{scarce}/offers", headers=ADMIN)).json()[
        "items"
    ]
    assert offer["stock"] == 0
