"""Supplier and tracking callbacks under attack (review findings 8 and 10): the signature
is checked before anything costly, unknown supplier ids cannot grow memory, and a captured
callback replayed later is refused."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from services.supplier.app import create_app
from services.supplier.settings import SupplierSettings
from shared.infra import free_port
from shared.signing import sign_callback
from tests.support.kafka import publish_envelopes
from tests.support.services import served
from tests.support.supplier import add_supplier, control, placed, states

pytestmark = pytest.mark.integration


@pytest.fixture
async def svc(database_url, settings_for, simulator, order_contacts):
    port = free_port()
    settings = settings_for(
        SupplierSettings,
        await database_url("supplier"),
        port=port,
        order_url=order_contacts.url,
        dispatcher_poll_s=0.2,
        supplier_webhook_concurrency=1,
        supplier_webhook_wait_s=1.0,
        supplier_cache_max_entries=16,
    )
    async with served(create_app, settings, port) as service:
        await service.runtime.bus.wait_connected()
        service.simulator = simulator
        yield service


def _headers(secret: str, body: bytes, *, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    return {
        "X-Supplier-Timestamp": timestamp,
        "X-Supplier-Signature": sign_callback(secret, timestamp, body),
        "X-Supplier-Delivery-Id": str(uuid.uuid4()),
    }


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_unsigned_callback_is_refused_at_once_even_when_every_slot_is_taken(svc):
    sid = await add_supplier(svc, "slots", offers=[("MUG", "3.00", 10, 24)])
    body = json.dumps({"type": "accepted", "reference": "so_x", "supplier_order_ref": "S"})
    slots: asyncio.Semaphore = svc.app.state.webhook_slots
    await slots.acquire()  # every callback slot is busy with a (slow) genuine callback
    try:
        started = time.monotonic()
        forged = await svc.client.post(
            f"/v1/webhooks/suppliers/{sid}",
            content=body,
            headers={"X-Supplier-Signature": "0" * 64, "X-Supplier-Delivery-Id": "d-1"},
        )
        waited = time.monotonic() - started
    finally:
        slots.release()
    assert forged.status_code == 401, forged.text
    assert waited < 0.5, "a forged callback must not queue for a slot"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_callbacks_for_made_up_supplier_ids_do_not_grow_the_directory(svc):
    body = b'{"type": "accepted", "reference": "so_x", "supplier_order_ref": "S"}'
    for n in range(60):
        refused = await svc.client.post(
            f"/v1/webhooks/suppliers/sup_madeup{n}",
            content=body,
            headers={"X-Supplier-Signature": "0" * 64, "X-Supplier-Delivery-Id": f"d-{n}"},
        )
        assert refused.status_code == 401
    assert len(svc.app.state.directory._entries) <= 16


async def _received_order(svc, key: str) -> tuple[str, dict]:
    sid = await add_supplier(svc, key, offers=[("MUG", "3.00", 10, 24)])
    await control(svc, key, lose_callbacks=True, never_ship=True)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(svc.runtime.settings.kafka_bootstrap, [event])
    [alloc] = await states(svc, event.subject, "received")
    return sid, alloc


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_callback_signed_with_its_timestamp_is_taken_and_a_stale_one_refused(svc):
    sid, alloc = await _received_order(svc, "stamps")
    body = json.dumps(
        {
            "type": "accepted",
            "reference": alloc["supplier_order_id"],
            "supplier_order_ref": alloc["supplier_order_ref"] or "S",
        }
    ).encode()
    url = f"/v1/webhooks/suppliers/{sid}"
    stale = await svc.client.post(
        url, content=body, headers=_headers("sim-secret-stamps", body, at=time.time() - 600)
    )
    assert stale.status_code == 401, stale.text
    assert "replay window" in stale.json()["error"]["message"]
    future = await svc.client.post(
        url, content=body, headers=_headers("sim-secret-stamps", body, at=time.time() + 600)
    )
    assert future.status_code == 401, future.text

    # the timestamp is signed: moving a captured one forward breaks the signature
    headers = _headers("sim-secret-stamps", body, at=time.time() - 600)
    headers["X-Supplier-Timestamp"] = str(int(time.time()))
    moved = await svc.client.post(url, content=body, headers=headers)
    assert moved.status_code == 401, moved.text

    fresh = await svc.client.post(url, content=body, headers=_headers("sim-secret-stamps", body))
    assert fresh.json() == {"status": "accepted"}, fresh.text


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_tracking_update_needs_a_fresh_signed_timestamp(svc):
    secret = svc.runtime.settings.tracking_secret.get_secret_value()
    body = json.dumps(
        {
            "carrier": "ups",
            "tracking_number": "1ZUNKNOWN",
            "status": "in_transit",
            "occurred_at": "2026-11-23T10:00:00Z",
        }
    ).encode()

    def headers(at: float) -> dict[str, str]:
        stamp = str(int(at))
        return {
            "X-Tracking-Timestamp": stamp,
            "X-Tracking-Signature": sign_callback(secret, stamp, body),
            "X-Tracking-Delivery-Id": str(uuid.uuid4()),
        }

    stale = await svc.client.post(
        "/v1/webhooks/tracking", content=body, headers=headers(time.time() - 3600)
    )
    assert stale.status_code == 401, stale.text
    assert "replay window" in stale.json()["error"]["message"]
    fresh = await svc.client.post(
        "/v1/webhooks/tracking", content=body, headers=headers(time.time())
    )
    assert fresh.status_code == 200, fresh.text


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_forged_callback_takes_no_database_lock(svc):
    """While a writer holds SQLite's write lock, a forged callback naming a supplier id
    nobody cached is still refused at once: reading the secret takes no lock."""
    async with svc.runtime.engine.connect() as writer:
        await writer.begin()  # BEGIN IMMEDIATE: the write lock, held
        started = time.monotonic()
        forged = await asyncio.wait_for(
            svc.client.post(
                "/v1/webhooks/suppliers/sup_never_seen",
                content=b"{}",
                headers={"X-Supplier-Signature": "0" * 64, "X-Supplier-Delivery-Id": "d-x"},
            ),
            10,
        )
        waited = time.monotonic() - started
        await writer.rollback()
    assert forged.status_code == 401, forged.text
    assert waited < 2.0
