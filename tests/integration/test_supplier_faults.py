"""Lost and refused supplier callbacks: the order is still confirmed, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import pytest
from sqlalchemy import func, select

from services.supplier.app import create_app
from services.supplier.settings import SupplierSettings
from shared.db import outbox_table
from shared.events import Envelope
from shared.infra import free_port
from shared.signing import sign_callback
from shared.testing import eventually
from tests.support.kafka import consume, publish_envelopes
from tests.support.services import served
from tests.support.supplier import add_supplier, allocations, control, placed, sim_orders, states


@contextlib.asynccontextmanager
async def supplier_service(database_url, settings_for, simulator, order_contacts, **overrides):
    port = free_port()
    overrides.setdefault("order_url", order_contacts.url)
    settings = settings_for(
        SupplierSettings,
        await database_url("supplier"),
        port=port,
        dispatcher_poll_s=0.2,
        supplier_webhook_wait_s=0.5,
        **overrides,
    )
    async with served(create_app, settings, port) as svc:
        await svc.runtime.bus.wait_connected()
        svc.simulator = simulator
        yield svc


@pytest.fixture
async def checking_supplier(database_url, settings_for, simulator, order_contacts):
    """The supplier service asking about undecided orders after 0.3 s (default 30 s)."""
    async with supplier_service(
        database_url,
        settings_for,
        simulator,
        order_contacts,
        supplier_check_after_s=0.3,
        supplier_reconcile_interval_s=0.1,
    ) as svc:
        yield svc


@pytest.fixture
async def patient_supplier(database_url, settings_for, simulator, order_contacts):
    """The supplier service asking about undecided orders only after an hour."""
    async with supplier_service(
        database_url, settings_for, simulator, order_contacts, supplier_check_after_s=3600
    ) as svc:
        yield svc


async def confirmations(svc, order_id: str) -> int:
    """supplier-confirmed events committed (to the outbox) for one order."""
    async with svc.runtime.uow() as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(outbox_table)
            .where(outbox_table.c.topic == "supplier-confirmed", outbox_table.c.key == order_id)
        )
    return int(count or 0)


async def test_an_order_whose_callbacks_are_lost_or_late_is_confirmed_exactly_once(
    checking_supplier, broker
):
    svc = checking_supplier
    await add_supplier(svc, "mute", offers=[("MUG", "3.00", 100, 24)])
    await add_supplier(svc, "late", offers=[("TEA", "1.00", 100, 24)])
    await control(svc, "mute", lose_callbacks=True, never_ship=True)
    await control(svc, "late", callback_delay_s=3.0, never_ship=True)
    lost, late = placed(("MUG", 1, "12.50")), placed(("TEA", 1, "4.00"))
    await publish_envelopes(broker.bootstrap, [lost, late])

    # no callback ever reaches us for `lost`: asking the supplier confirms it
    [alloc] = await states(svc, lost.subject, "accepted")
    [order] = await sim_orders(svc, "mute")
    assert [(e["type"], e["status"]) for e in order["events"]] == [("accepted", "lost")]
    assert alloc["supplier_order_ref"] == order["supplier_order_ref"]
    # `late` is confirmed by asking, then its callback arrives after all and changes nothing
    await states(svc, late.subject, "accepted")

    async def late_callback_taken():
        [o] = await sim_orders(svc, "late")
        return [e for e in o["events"] if e["status"] == "sent"]

    [delivered] = await eventually(late_callback_taken, what="the late callback delivered")
    assert delivered["type"] == "accepted" and delivered["http_status"] == 200
    assert await confirmations(svc, lost.subject) == 1
    assert await confirmations(svc, late.subject) == 1
    assert len(await sim_orders(svc, "mute")) == 1, "the supplier was asked, not sent it again"


async def _hold_every_connection(engine) -> list:
    """Check out connections until the service's pool has none left."""
    held = []
    while True:
        try:
            held.append(await asyncio.wait_for(engine.connect(), 1.0))
        except TimeoutError:
            return held


async def test_a_callback_gets_503_while_the_database_pool_is_exhausted_and_counts_once_later(
    patient_supplier, broker
):
    svc = patient_supplier
    sid = await add_supplier(svc, "busy", offers=[("MUG", "3.00", 100, 24)])
    await control(svc, "busy", lose_callbacks=True, never_ship=True)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])
    [alloc] = await states(svc, event.subject, "received")
    body = json.dumps(
        {
            "type": "accepted",
            "reference": alloc["supplier_order_id"],
            "supplier_order_ref": alloc["supplier_order_ref"] or "SIM-X",
        }
    ).encode()
    stamp = str(int(time.time()))
    headers = {
        "X-Supplier-Signature": sign_callback("sim-secret-busy", stamp, body),
        "X-Supplier-Timestamp": stamp,
        "X-Supplier-Delivery-Id": str(uuid.uuid4()),
    }
    held = await _hold_every_connection(svc.runtime.engine)
    try:
        refused = await svc.client.post(
            f"/v1/webhooks/suppliers/{sid}", content=body, headers=headers
        )
    finally:
        for conn in held:
            await conn.close()
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"].isdigit()
    assert refused.json()["error"]["code"] == "unavailable"

    retried = await svc.client.post(f"/v1/webhooks/suppliers/{sid}", content=body, headers=headers)
    assert retried.json() == {"status": "accepted"}
    again = await svc.client.post(f"/v1/webhooks/suppliers/{sid}", content=body, headers=headers)
    assert again.json() == {"status": "duplicate"}
    [after] = await allocations(svc, event.subject)
    assert after["state"] == "accepted"
    assert await confirmations(svc, event.subject) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_more_orders_than_the_dispatcher_runs_at_once_are_all_placed(
    database_url, settings_for, simulator, order_contacts, broker
):
    async with supplier_service(
        database_url, settings_for, simulator, order_contacts, dispatcher_concurrency=1
    ) as svc:
        await add_supplier(svc, "queue", offers=[("MUG", "3.00", 100, 24)])
        await control(svc, "queue", latency_ms=100, never_ship=True)
        events = [placed(("MUG", 1, "12.50")) for _ in range(6)]
        await publish_envelopes(broker.bootstrap, events)
        for e in events:
            await states(svc, e.subject, "accepted")
        assert len(await sim_orders(svc, "queue")) == 6


async def status_changes(svc) -> int:
    """supplier-status-changed events committed (to the outbox)."""
    async with svc.runtime.uow() as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(outbox_table)
            .where(outbox_table.c.topic == "supplier-status-changed")
        )
    return int(count or 0)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_supplier_whose_breaker_opens_is_announced_unavailable_then_available(
    database_url, settings_for, simulator, order_contacts, broker
):
    async with supplier_service(
        database_url,
        settings_for,
        simulator,
        order_contacts,
        breaker_cooldown_s=1.0,
        supplier_timeout_s=1.0,
        supplier_backoff_s=0.05,
        supplier_max_attempts=3,
    ) as svc:
        flaky = await add_supplier(svc, "flaky", offers=[("MUG", "3.00", 1000, 24)])
        steady = await add_supplier(svc, "steady", offers=[("MUG", "5.00", 1000, 24)])
        await control(svc, "flaky", fail_http_rate=1.0, never_ship=True)
        await control(svc, "steady", never_ship=True)
        failing = [placed(("MUG", 1, "12.50")) for _ in range(3)]
        await publish_envelopes(broker.bootstrap, failing)
        for e in failing:
            items = await states(svc, e.subject, "accepted")
            assert any(i["supplier_id"] == steady for i in items), "failed over meanwhile"

        [down] = await consume(broker.bootstrap, "supplier-status-changed", 1)
        assert down.key == flaky.encode()
        event = Envelope.from_bytes(down.value)
        assert (event.source, event.subject) == ("supplier", flaky)
        assert (event.data["status"], event.data["reason"]) == ("unavailable", "breaker_open")

        # the supplier recovers: after the cool-down, the next order is a probe that succeeds
        await control(svc, "flaky", fail_http_rate=0.0)

        async def probing():
            return svc.app.state.breaker.state(flaky) == "half_open"

        await eventually(probing, what="the breaker's cool-down")
        recovered = placed(("MUG", 1, "12.50"))
        await publish_envelopes(broker.bootstrap, [recovered])
        [alloc] = await states(svc, recovered.subject, "accepted")
        assert alloc["supplier_id"] == flaky
        records = await consume(broker.bootstrap, "supplier-status-changed", 2)
        changes = [Envelope.from_bytes(r.value).data for r in records]
        assert [(c["supplier_id"], c["status"], c["reason"]) for c in changes] == [
            (flaky, "unavailable", "breaker_open"),
            (flaky, "available", "breaker_closed"),
        ]
        assert await status_changes(svc) == 2, "once per move, through the outbox"
