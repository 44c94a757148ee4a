"""The order service's reads for the ops console: by external id, by customer e-mail (blind
index), waiting and delayed orders, open delays and failed write-backs, on PostgreSQL and SQLite
with the real broker."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest

from services.order.app import create_app
from services.order.settings import OrderSettings
from services.order.shops.handlers import queue
from shared.events import (
    DelayReason,
    OrderLinesWaiting,
    Severity,
    ShipmentDelayed,
    WaitingReason,
    new_envelope,
)
from shared.testing import eventually
from tests.support.data import API_KEY, order_body
from tests.support.kafka import publish_envelopes
from tests.support.services import in_process

pytestmark = pytest.mark.integration


@pytest.fixture
async def order(database_url, settings_for):
    settings = settings_for(OrderSettings, await database_url("order"))
    async with in_process(create_app, settings) as svc:
        await svc.runtime.bus.wait_connected()
        yield svc


@pytest.fixture
async def order_not_writing_back(database_url, settings_for):
    """The order service with its write-back worker off: a task retried stays queued
    (the worker would try it at once, against a shop that does not exist)."""
    settings = settings_for(OrderSettings, await database_url("order"), writeback_enabled=False)
    async with in_process(create_app, settings) as svc:
        await svc.runtime.bus.wait_connected()
        yield svc


async def place(svc, **extra) -> dict:
    placed = await svc.client.post("/v1/orders", json=order_body(**extra), headers=API_KEY)
    assert placed.status_code == 201, placed.text
    return placed.json()


async def listed(svc, **params) -> list[str]:
    got = await svc.client.get("/v1/orders", params=params, headers=API_KEY)
    assert got.status_code == 200, got.text
    return [o["id"] for o in got.json()["items"]]


async def test_orders_are_found_by_external_id_and_by_customer_email(order, caplog):
    ext = f"EXT-{uuid.uuid4().hex[:8]}"
    email = f"Mei.{uuid.uuid4().hex[:6]}@Example.com"
    customer = {"name": "Mei Chen", "email": email, "locale": "zh"}
    first = await place(order, external_id=ext, customer=customer)
    second = await place(order, customer=customer)
    other = await place(order)
    assert await listed(order, external_id=ext) == [first["id"]]
    assert await listed(order, external_id="EXT-none") == []

    caplog.set_level(logging.DEBUG)
    found = await order.client.post(
        "/v1/orders/search", json={"email": f"  {email.lower()} "}, headers=API_KEY
    )
    assert found.status_code == 200, found.text
    ids = [o["id"] for o in found.json()["items"]]
    assert ids == [second["id"], first["id"]] and other["id"] not in ids
    assert email.lower() not in caplog.text.lower(), "the e-mail is never logged"
    assert "email" not in found.text  # the page shows no PII
    bad = await order.client.post("/v1/orders/search", json={"email": "nope"}, headers=API_KEY)
    assert bad.status_code == 422 and "email" in bad.text
    none = await order.client.post(
        "/v1/orders/search", json={"email": "nobody@example.com"}, headers=API_KEY
    )
    assert none.json()["items"] == []
    refused = await order.client.post("/v1/orders/search", json={"email": email})
    assert refused.status_code == 401


async def test_waiting_and_lost_orders_are_listed_for_the_inbox(order, broker):
    waiting, lost, calm = [await place(order) for _ in range(3)]
    now = datetime.now(UTC)
    await publish_envelopes(
        broker.bootstrap,
        [
            new_envelope(
                OrderLinesWaiting(
                    order_id=waiting["id"],
                    line_ids=[waiting["lines"][0]["line_id"]],
                    reason=WaitingReason.TIMEOUT,
                    since=now,
                )
            ),
            new_envelope(
                ShipmentDelayed(
                    order_id=lost["id"],
                    supplier_id="sup_lost",
                    reason=DelayReason.LOST_IN_TRANSIT,
                    severity=Severity.URGENT,
                )
            ),
        ],
    )

    async def applied() -> bool:
        return waiting["id"] in await listed(order, waiting="true") and lost["id"] in (
            await listed(order, delayed="true")
        )

    await eventually(applied, what="waiting line and delay applied")
    assert calm["id"] not in await listed(order, waiting="true")
    assert waiting["id"] not in await listed(order, delayed="true")
    delays = await order.client.get(
        "/v1/delays", params={"reason": "lost_in_transit"}, headers=API_KEY
    )
    assert delays.status_code == 200, delays.text
    [item] = [d for d in delays.json()["items"] if d["order_id"] == lost["id"]]
    assert item["supplier_id"] == "sup_lost" and item["reason"] == "lost_in_transit"
    assert item["severity"] == "urgent" and item["time"].endswith("Z")
    other = await order.client.get(
        "/v1/delays", params={"reason": "carrier_exception"}, headers=API_KEY
    )
    assert lost["id"] not in [d["order_id"] for d in other.json()["items"]]


async def test_a_failed_write_back_is_listed_and_can_be_tried_again_once(
    order_not_writing_back,
):
    order = order_not_writing_back
    placed = await place(order)
    async with order.runtime.uow() as uow:
        key = f"fulfil:{uuid.uuid4().hex}"
        await queue(uow).put(
            key, "fulfil", placed["id"], "shop_x", "4827", {"tracking_number": "T1"}
        )
        await uow.commit()
    async with order.runtime.uow() as uow:
        [task_id] = [r["id"] for r in await queue(uow).of_order(placed["id"])]
        await queue(uow).give_up(task_id, "401 Unauthorized: token revoked")
        await uow.commit()
    failed = await order.client.get("/v1/writebacks", params={"status": "failed"}, headers=API_KEY)
    assert failed.status_code == 200, failed.text
    [item] = [w for w in failed.json()["items"] if w["order_id"] == placed["id"]]
    assert item["id"] == task_id and item["operation"] == "fulfil"
    assert item["last_error"] == "401 Unauthorized: token revoked"
    retried = await order.client.post(f"/v1/writebacks/{task_id}/retry", headers=API_KEY)
    assert retried.status_code == 202, retried.text
    again = await order.client.post(f"/v1/writebacks/{task_id}/retry", headers=API_KEY)
    assert again.status_code == 409 and again.json()["error"]["code"] == "writeback_not_failed"
    missing = await order.client.post("/v1/writebacks/999999/retry", headers=API_KEY)
    assert missing.status_code == 404
    listed_now = await order.client.get("/v1/writebacks", headers=API_KEY)
    assert placed["id"] not in [w["order_id"] for w in listed_now.json()["items"]]
