"""A supplier slower than the call timeout (or behind an open breaker) makes lines wait,
then confirms them once it answers again, each with one supplier order at the supplier."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from shared.events import Envelope
from shared.testing import eventually
from tests.support.kafka import publish_envelopes
from tests.support.supplier import (
    ADMIN,
    add_supplier,
    allocations,
    control,
    placed,
    reached,
    sim_orders,
    states,
)

SLOW_MS = 1500  # the simulator answers this late: three times the (lowered) call timeout
GIVES_UP_FAST = {"supplier_timeout_s": 0.5, "supplier_backoff_s": 0.02, "supplier_max_attempts": 2}


@pytest.fixture
async def impatient(supplier_with):
    """The supplier service giving up on a call after half a second (two attempts), with
    quick waiting retries and a breaker that cools down in a second."""
    async with supplier_with(
        **GIVES_UP_FAST,
        breaker_cooldown_s=1.0,
        supplier_retry_waiting_s=0.3,
        supplier_retry_waiting_max_s=1.0,
    ) as svc:
        yield svc


async def _subjects(bootstrap: str, topic: str) -> list[tuple[str, dict]]:
    """(subject, data) of everything on `topic` so far (an empty topic: none)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list = []
        for _ in range(3):  # a few polls: partitions are assigned on the first
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        envelopes = [Envelope.from_bytes(r.value) for r in records]
        return [(e.subject, e.data) for e in envelopes]
    finally:
        await consumer.stop()


async def _waiting(bootstrap: str, order_ids: set[str]) -> dict[str, str]:
    """Every order of `order_ids` has had `order-lines-waiting`: its reason, by order."""

    async def probe():
        got = {s: d["reason"] for s, d in await _subjects(bootstrap, "order-lines-waiting")}
        return got if order_ids <= set(got) else None

    return await eventually(probe, timeout=30, what="order-lines-waiting for every order")


async def _waited_or_taken(svc, bootstrap: str, order_ids: set[str]) -> dict[str, str]:
    """Every order of `order_ids` has had `order-lines-waiting` or was taken by its supplier
    first; at least one waited. The calls time out at our end only: the supplier still
    takes each order and says so a moment later, and on a busy machine that callback can
    be applied before the failed call is recorded, so that line never waits (the product
    is right not to make it wait: the supplier has it)."""

    async def probe():
        waited = {s: d["reason"] for s, d in await _subjects(bootstrap, "order-lines-waiting")}
        rest = order_ids - set(waited)
        taken = [
            o
            for o in rest
            if any(reached(a["state"], "accepted") for a in await allocations(svc, o))
        ]
        return waited if waited and len(taken) == len(rest) else None

    return await eventually(probe, timeout=30, what="order-lines-waiting or accepted, each order")


async def _one_live_supplier_order_each(svc, key: str, order_ids: set[str]) -> None:
    """The supplier holds exactly one order per customer order, none called off."""
    at_supplier = [o for o in await sim_orders(svc, key) if o["order_id"] in order_ids]
    by_order: dict[str, list[str]] = {}
    for o in at_supplier:
        by_order.setdefault(o["order_id"], []).append(o["state"])
    assert {k: len(v) for k, v in by_order.items()} == dict.fromkeys(order_ids, 1)
    assert not any("cancelled" in v for v in by_order.values()), by_order


async def _no_routing_failed(bootstrap: str, order_ids: set[str]) -> None:
    failed = [s for s, _ in await _subjects(bootstrap, "order-routing-failed")]
    assert not set(failed) & order_ids


async def test_a_slow_supplier_makes_the_line_wait_then_confirms_it_once(impatient, broker):
    await add_supplier(impatient, "sluggish", offers=[("MUG", "4.00", 100, 24)])
    await control(impatient, "sluggish", latency_ms=SLOW_MS)
    order = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [order])

    reasons = await _waiting(broker.bootstrap, {order.subject})
    assert reasons[order.subject] in ("timeout", "breaker_open")
    # the timed-out call reached the supplier: it holds the order we never heard back about
    await eventually(
        lambda: _holds(impatient, "sluggish", order.subject), timeout=30, what="order at supplier"
    )
    await control(impatient, "sluggish", latency_ms=0)

    await states(impatient, order.subject, "accepted")
    await _one_live_supplier_order_each(impatient, "sluggish", {order.subject})
    await _no_routing_failed(broker.bootstrap, {order.subject})
    live = [a for a in await allocations(impatient, order.subject) if a["state"] != "unavailable"]
    assert len(live) == 1, live


async def test_an_open_breaker_makes_lines_wait_until_the_supplier_answers(impatient, broker):
    await add_supplier(impatient, "stalled", offers=[("LAMP", "9.00", 100, 24)])
    await control(impatient, "stalled", latency_ms=SLOW_MS)
    orders = [placed(("LAMP", 1, "30.00")) for _ in range(6)]
    ids = {o.subject for o in orders}
    await publish_envelopes(broker.bootstrap, orders)

    reasons = await _waited_or_taken(impatient, broker.bootstrap, ids)
    assert set(reasons.values()) <= {"timeout", "breaker_open"}, reasons

    async def opened():
        changes = await _subjects(broker.bootstrap, "supplier-status-changed")
        return any(d["status"] == "unavailable" for _, d in changes) or None

    await eventually(opened, timeout=30, what="the breaker opening")
    await control(impatient, "stalled", latency_ms=0)

    await asyncio.gather(*(states(impatient, o.subject, "accepted") for o in orders))
    await _one_live_supplier_order_each(impatient, "stalled", ids)
    await _no_routing_failed(broker.bootstrap, ids)


async def test_a_slow_supplier_with_a_healthy_alternative_fails_over(impatient, broker):
    await add_supplier(impatient, "dawdler", offers=[("BOWL", "3.00", 100, 24)])
    backup = await add_supplier(impatient, "standby", offers=[("BOWL", "6.00", 100, 24)])
    await control(impatient, "dawdler", latency_ms=SLOW_MS)
    order = placed(("BOWL", 1, "15.00"))
    await publish_envelopes(broker.bootstrap, [order])

    await states(impatient, order.subject, "accepted")
    accepted = [
        a for a in await allocations(impatient, order.subject) if a["state"] != "unavailable"
    ]
    assert [a["supplier_id"] for a in accepted if a["state"] != "cancel_pending"] == [backup]
    waited = [s for s, _ in await _subjects(broker.bootstrap, "order-lines-waiting")]
    assert order.subject not in waited
    await _no_routing_failed(broker.bootstrap, {order.subject})


async def _holds(svc, key: str, order_id: str) -> bool | None:
    return any(o["order_id"] == order_id for o in await sim_orders(svc, key)) or None


@pytest.fixture
async def left_waiting(supplier_with):
    """Calls given up after half a second, and lines left waiting for minutes: only a
    human routes them again within a test."""
    async with supplier_with(
        **GIVES_UP_FAST,
        supplier_retry_waiting_s=120.0,
        supplier_retry_waiting_max_s=120.0,
    ) as svc:
        yield svc


@pytest.mark.parametrize("chosen", [True, False], ids=["to-that-supplier", "by-ranking"])
async def test_a_human_routing_a_waiting_line_back_places_the_same_order_again(
    left_waiting, broker, chosen
):
    key = f"mulls{int(chosen)}"
    sid = await add_supplier(left_waiting, key, offers=[("JUG", "4.00", 100, 24)])
    # slow to answer, and slow to decide: its acceptance comes after the human acted
    await control(left_waiting, key, latency_ms=SLOW_MS, decision_delay_s=8.0)
    order = placed(("JUG", 1, "12.50"))
    line_id = f"{order.subject}-1"
    await publish_envelopes(broker.bootstrap, [order])
    await _waiting(broker.bootstrap, {order.subject})
    await eventually(
        lambda: _holds(left_waiting, key, order.subject), timeout=30, what="order at supplier"
    )
    [unanswered] = await allocations(left_waiting, order.subject)
    assert unanswered["state"] == "unavailable"
    await control(left_waiting, key, latency_ms=0)

    routed = await left_waiting.client.post(
        f"/v1/orders/{order.subject}/lines/{line_id}/route",
        json={"supplier_id": sid} if chosen else {},
        headers=ADMIN,
    )
    assert routed.status_code == 202, routed.text
    assert routed.json()["supplier_order_id"] == unanswered["supplier_order_id"], "same key"
    await states(left_waiting, order.subject, "accepted")
    await _one_live_supplier_order_each(left_waiting, key, {order.subject})
    assert len(await allocations(left_waiting, order.subject)) == 1, "no second supplier order"
