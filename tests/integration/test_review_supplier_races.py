"""Supplier service reliability (review finding 11 a, b; finding 8's cancel-before-create):
the SLA scan reaches every order, and a cancellation wins every race with routing."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from services.supplier.app import create_app
from services.supplier.domain import AllocatedLine, State, SupplierOrder
from services.supplier.handlers import callbacks, dispatch, events
from services.supplier.handlers.callbacks import SupplierCallback
from services.supplier.settings import SupplierSettings
from services.supplier.store.requests import RoutingRequests
from shared.events import OrderCancelled, OrderPlaced, new_envelope
from shared.infra import free_port
from shared.testing import eventually
from tests.support.kafka import publish_envelopes
from tests.support.services import served
from tests.support.supplier import (
    ADMIN,
    add_supplier,
    allocations,
    control,
    placed,
    sim_orders,
    states,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def quiet(database_url, settings_for, order_contacts):
    """The supplier service with its consumers and clocks left to the test."""
    port = free_port()
    settings = settings_for(
        SupplierSettings,
        await database_url("supplier"),
        port=port,
        order_url=order_contacts.url,
        consumers_enabled=False,
        sla_scan_interval_s=3600,
    )
    async with served(create_app, settings, port) as svc:
        yield svc


async def _supplier(svc) -> str:
    body = {
        "name": "Late",
        "supplier_key": f"late-{uuid.uuid4().hex[:6]}",
        "api_base_url": "https://late.supplier.example",
        "credentials": {"api_key": "late-api-key", "webhook_secret": "late-webhook-secret"},
    }
    created = await svc.client.post("/v1/suppliers", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _accepted(supplier_id: str, accepted_at: datetime, sla_hours: float) -> SupplierOrder:
    order_id = f"ord_{uuid.uuid4().hex[:12]}"
    line = AllocatedLine(
        f"{order_id}-1", "MUG", "SUP-MUG", 1, Decimal("3.00"), Decimal("12.50"), "USD"
    )
    so = SupplierOrder.place(
        f"so_{uuid.uuid4().hex}",
        order_id,
        supplier_id,
        [line],
        now=accepted_at,
        lease_until=accepted_at,
    )
    so.accept("REF", sla_hours, accepted_at)
    so.events.clear()
    return so


async def test_overdue_orders_do_not_starve_the_sla_clock_of_later_ones(quiet):
    svc = quiet
    sid = await _supplier(svc)
    start = datetime.now(UTC)
    # 500 orders already past their deadline (their `major` is due only at twice the
    # window), all with an earlier ship-by than the one order whose `at_risk` comes due
    overdue = [_accepted(sid, start - timedelta(minutes=65), 1.0) for _ in range(500)]
    later = _accepted(sid, start, 1.0)
    async with svc.runtime.uow() as uow:
        await uow.supplier_orders.add_all([*overdue, later])
        await uow.commit()
    assert await dispatch.scan_sla(svc.runtime.uow(), start) == 1000  # at_risk + deadline each

    # 50 minutes later `later` is at risk (75% of its hour), the overdue ones owe nothing
    fired = await dispatch.scan_sla(svc.runtime.uow(), start + timedelta(minutes=50))
    async with svc.runtime.uow() as uow:
        seen = await uow.supplier_orders.get(later.id)
    assert seen is not None and seen.state is State.ACCEPTED
    assert seen.at_risk_sent, "the later order's at_risk never fired: the scan starved it"
    assert fired == 1


LIVE = {"to_send", "sending", "received", "accepted", "backordered", "dispatched"}


async def _retrying(work):
    """Run `work` again after a deadlock or lock timeout, as its sender or consumer would."""
    for _ in range(5):
        try:
            return await work()
        except (OperationalError, DBAPIError):
            await asyncio.sleep(0.1)
    return await work()


async def test_a_cancellation_racing_a_failover_leaves_no_live_supplier_order(
    supplier, broker, monkeypatch
):
    svc = supplier
    first = await add_supplier(svc, "first", offers=[("MUG", "3.00", 10, 24)])
    await add_supplier(svc, "second", offers=[("MUG", "5.00", 10, 24)])
    for key in ("first", "second"):
        await control(svc, key, lose_callbacks=True, never_ship=True)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])
    [alloc] = await states(svc, event.subject, "received")
    assert alloc["supplier_id"] == first

    # the failover pauses just after reading the order, until the cancellation has run as
    # far as it can (to its end, or to a lock the failover holds)
    in_failover: contextvars.ContextVar[bool] = contextvars.ContextVar("f", default=False)
    read, go = asyncio.Event(), asyncio.Event()
    original = RoutingRequests.get

    async def paused_get(self, order_id, **kw):
        found = await original(self, order_id, **kw)
        if in_failover.get() and not go.is_set():
            read.set()
            await go.wait()
        return found

    monkeypatch.setattr(RoutingRequests, "get", paused_get)

    async def failover():
        in_failover.set(True)
        rejected = SupplierCallback("rejected", alloc["supplier_order_id"], reason="no stock")
        return await _retrying(
            lambda: callbacks.supplier_callback(svc.runtime.uow(), first, "d-race", rejected)
        )

    async def cancel():
        cancelled = OrderCancelled(order_id=event.subject, reason="customer changed mind")

        async def once():
            async with svc.runtime.uow() as uow:
                await events.on_order_cancelled(new_envelope(cancelled), cancelled, uow)
                await uow.commit()

        await _retrying(once)

    failing = asyncio.create_task(failover())
    await asyncio.wait_for(read.wait(), 10)
    cancelling = asyncio.create_task(cancel())
    await asyncio.wait({cancelling}, timeout=1.5)
    go.set()
    await asyncio.gather(failing, cancelling)

    after = await allocations(svc, event.subject)
    assert not [a for a in after if a["state"] in LIVE], after


async def test_a_cancellation_consumed_before_its_order_still_wins(supplier, broker):
    svc = supplier
    await add_supplier(svc, "early", offers=[("MUG", "3.00", 10, 24)])
    event = placed(("MUG", 1, "12.50"))
    cancelled = new_envelope(OrderCancelled(order_id=event.subject, reason="changed mind"))
    await publish_envelopes(broker.bootstrap, [cancelled])

    async def tombstone():
        async with svc.runtime.uow() as uow:
            return await uow.routing_requests.was_cancelled(event.subject)

    await eventually(tombstone, what="the cancellation remembered")
    await publish_envelopes(broker.bootstrap, [event])

    async def kept():
        async with svc.runtime.uow() as uow:
            return await uow.routing_requests.get(event.subject)

    await eventually(kept, what="the later order-placed consumed")
    assert await allocations(svc, event.subject) == []
    assert await sim_orders(svc, "early") == []


async def test_a_cancellation_consumed_while_its_order_is_routed_still_wins(supplier, monkeypatch):
    svc = supplier
    await add_supplier(svc, "racing", offers=[("MUG", "3.00", 10, 24)])
    await control(svc, "racing", lose_callbacks=True, never_ship=True)
    event = placed(("MUG", 1, "12.50"))
    cancelled = OrderCancelled(order_id=event.subject, reason="changed mind")

    # order-placed pauses just after finding no cancellation, until order-cancelled (on
    # its own topic, another consumer) has run as far as it can
    in_placing: contextvars.ContextVar[bool] = contextvars.ContextVar("p", default=False)
    checked, go = asyncio.Event(), asyncio.Event()
    original = RoutingRequests.was_cancelled

    async def paused(self, order_id):
        found = await original(self, order_id)
        if in_placing.get() and not go.is_set():
            checked.set()
            await go.wait()
        return found

    monkeypatch.setattr(RoutingRequests, "was_cancelled", paused)

    async def place():
        in_placing.set(True)

        async def once():
            async with svc.runtime.uow() as uow:
                await events.on_order_placed(event, OrderPlaced.model_validate(event.data), uow)
                await uow.commit()

        await _retrying(once)

    async def cancel():
        async def once():
            async with svc.runtime.uow() as uow:
                await events.on_order_cancelled(new_envelope(cancelled), cancelled, uow)
                await uow.commit()

        await _retrying(once)

    placing = asyncio.create_task(place())
    await asyncio.wait_for(checked.wait(), 10)
    cancelling = asyncio.create_task(cancel())
    await asyncio.wait({cancelling}, timeout=1.5)
    go.set()
    await asyncio.gather(placing, cancelling)

    after = await allocations(svc, event.subject)
    assert not [a for a in after if a["state"] in LIVE], after
