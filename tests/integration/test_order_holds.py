"""Holds and address checks through the order service: real broker, PostgreSQL and SQLite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.order.app import create_app
from services.order.marketplaces import sign
from services.order.settings import OrderSettings
from shared.events import (
    ConfirmedLine,
    OrderLinesWaiting,
    SupplierConfirmed,
    WaitingReason,
    new_envelope,
)
from shared.testing import eventually
from tests.support.data import API_KEY, order_body
from tests.support.kafka import consume, publish_envelopes
from tests.support.services import in_process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SERVICE = {"Authorization": "Bearer dev-service-token"}
NOW = datetime.now(UTC)
GOOD = {
    "line1": "1 Main St",
    "city": "Springfield",
    "region": "IL",
    "postal_code": "62704",
    "country": "US",
}


@pytest.fixture
async def order(database_url, settings_for):
    settings = settings_for(
        OrderSettings, await database_url("order"), high_value_limits={"USD": Decimal("500")}
    )
    async with in_process(create_app, settings) as svc:
        await svc.runtime.bus.wait_connected()
        yield svc


def no_state() -> dict:
    body = order_body()
    del body["shipping_address"]["region"]
    return body


async def create(svc, body: dict) -> dict:
    response = await svc.client.post("/v1/orders", json=body, headers=API_KEY)
    assert response.status_code == 201, response.text
    return response.json()


async def timeline(svc, order_id: str) -> list[dict]:
    response = await svc.client.get(f"/v1/orders/{order_id}/timeline", headers=API_KEY)
    return response.json()["items"]


async def test_a_bad_address_is_held_until_corrected_then_placed(order, broker):
    held = await create(order, no_state())
    oid = held["id"]
    assert held["status"] == "on_hold"
    [hold] = held["holds"]
    assert hold["reason"] == "address_invalid"
    assert hold["note"] == "shipping_address.region: required" and hold["since"]
    [record] = await consume(broker.bootstrap, "order-held", 1)
    event = json.loads(record.value)
    assert event["data"]["order_id"] == oid and event["data"]["reason"] == "address_invalid"

    listed = await order.client.get("/v1/orders?status=on_hold", headers=API_KEY)
    assert [o["id"] for o in listed.json()["items"]] == [oid]
    again = await order.client.post(f"/v1/orders/{oid}/release", headers=API_KEY)
    assert again.status_code == 409 and again.json()["error"]["code"] == "address_fix_required"

    bad = await order.client.put(
        f"/v1/orders/{oid}/shipping-address",
        json=GOOD | {"postal_code": "10001"},
        headers=API_KEY,
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"] == [
        {"field": "shipping_address.postal_code", "reason": "format"}
    ]
    assert [e["type"] for e in await timeline(order, oid)] == ["order-held"], "nothing changed"

    fixed = await order.client.put(
        f"/v1/orders/{oid}/shipping-address",
        json=GOOD | {"phone": "+1 217 555 0123"},
        headers=API_KEY,
    )
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["status"] == "placed" and fixed.json()["holds"] == []
    assert fixed.json()["shipping"]["postal_code"] == "62704"
    contact = await order.client.get(f"/v1/orders/{oid}/contact", headers=SERVICE)
    assert contact.json()["ship_to"] == {
        "name": "Ann Lee",
        "phone": "+1 217 555 0123",
        "email": "ann@example.com",
        "line1": "1 Main St",
        "line2": None,
        "city": "Springfield",
        "region": "IL",
        "postal_code": "62704",
        "country": "US",
    }
    [placed] = await consume(broker.bootstrap, "order-placed", 1)
    data = json.loads(placed.value)["data"]
    assert data["order_id"] == oid and data["shipping_postal_code"] == "62704"
    assert [e["type"] for e in await timeline(order, oid)] == [
        "order-held",
        "shipping-address-changed",
        "order-released",
        "order-placed",
    ]


async def test_high_value_and_manual_holds_are_released_by_hand(order, broker):
    big = await create(order, order_body(quantity=100, price="10.00"))
    assert [h["reason"] for h in big["holds"]] == ["high_value"]
    hold = await order.client.post(
        f"/v1/orders/{big['id']}/hold", json={"reason": "manual", "note": "call"}, headers=API_KEY
    )
    assert hold.status_code == 200 and [h["reason"] for h in hold.json()["holds"]] == [
        "high_value",
        "manual",
    ]
    released = await order.client.post(f"/v1/orders/{big['id']}/release", headers=API_KEY)
    assert released.status_code == 200 and released.json()["status"] == "placed"
    not_held = await order.client.post(f"/v1/orders/{big['id']}/release", headers=API_KEY)
    assert not_held.status_code == 409 and not_held.json()["error"]["code"] == "not_on_hold"
    types = [e["type"] for e in await timeline(order, big["id"])]
    assert types == ["order-held", "order-held", "order-released", "order-placed"]


async def test_hold_input_and_state_conflicts(order, broker):
    placed = await create(order, order_body())
    oid = placed["id"]
    wrong = await order.client.post(
        f"/v1/orders/{oid}/hold", json={"reason": "high_value"}, headers=API_KEY
    )
    assert wrong.status_code == 422 and "reason" in wrong.text
    missing = await order.client.post(
        "/v1/orders/ord_nope/hold", json={"reason": "manual"}, headers=API_KEY
    )
    assert missing.status_code == 404

    confirm = SupplierConfirmed(
        order_id=oid,
        supplier_id="sup_a",
        supplier_order_ref="A-1",
        lines=[
            ConfirmedLine(line_id=placed["lines"][0]["line_id"], quantity=2, unit_cost=Decimal("3"))
        ],
        currency="USD",
        ship_by=NOW + timedelta(days=2),
    )
    await publish_envelopes(broker.bootstrap, [new_envelope(confirm)])

    async def confirmed():
        got = await order.client.get(f"/v1/orders/{oid}", headers=API_KEY)
        return got.json()["status"] == "confirmed"

    await eventually(confirmed, what="order confirmed")
    late = await order.client.post(
        f"/v1/orders/{oid}/hold", json={"reason": "manual"}, headers=API_KEY
    )
    assert late.status_code == 409 and late.json()["error"]["code"] == "supplier_has_order"
    readdress = await order.client.put(
        f"/v1/orders/{oid}/shipping-address", json=GOOD, headers=API_KEY
    )
    assert readdress.status_code == 409

    held = await create(order, no_state())
    cancel = await order.client.post(f"/v1/orders/{held['id']}/cancel", headers=API_KEY)
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    closed = await order.client.post(
        f"/v1/orders/{held['id']}/hold", json={"reason": "manual"}, headers=API_KEY
    )
    assert closed.status_code == 409 and closed.json()["error"]["code"] == "order_closed"


async def test_a_held_order_confirmed_anyway_is_released_and_waiting_lines_show(order, broker):
    placed = await create(order, order_body())
    oid, line = placed["id"], placed["lines"][0]["line_id"]
    waiting = OrderLinesWaiting(
        order_id=oid, line_ids=[line], reason=WaitingReason.TIMEOUT, since=NOW
    )
    await publish_envelopes(broker.bootstrap, [new_envelope(waiting)])

    async def line_state():
        got = (await order.client.get(f"/v1/orders/{oid}", headers=API_KEY)).json()
        return got if got["lines"][0]["state"] == "waiting_supplier" else None

    current = await eventually(line_state, what="line waiting")
    assert current["status"] == "placed" and current["lines"][0]["waiting_reason"] == "timeout"

    hold = await order.client.post(
        f"/v1/orders/{oid}/hold", json={"reason": "manual", "note": "check"}, headers=API_KEY
    )
    assert hold.json()["status"] == "on_hold"
    confirm = SupplierConfirmed(
        order_id=oid,
        supplier_id="sup_a",
        supplier_order_ref="A-9",
        lines=[ConfirmedLine(line_id=line, quantity=2, unit_cost=Decimal("3"))],
        currency="USD",
        ship_by=NOW + timedelta(days=2),
    )
    await publish_envelopes(broker.bootstrap, [new_envelope(confirm)])

    async def confirmed():
        got = (await order.client.get(f"/v1/orders/{oid}", headers=API_KEY)).json()
        return got if got["status"] == "confirmed" else None

    current = await eventually(confirmed, what="hold lifted by the confirmation")
    assert current["holds"] == [] and current["lines"][0]["state"] == "confirmed"
    entries = await timeline(order, oid)
    assert [e["type"] for e in entries][-3:] == [
        "order-held",
        "supplier-confirmed",
        "order-released",
    ]
    assert entries[-2]["note"] == "the supplier already had it: the hold is lifted"
    [released] = await consume(broker.bootstrap, "order-released", 1)
    assert json.loads(released.value)["data"]["order_id"] == oid


async def test_a_marketplace_order_with_a_bad_postcode_is_held_not_refused(
    database_url, settings_for
):
    secret = "woo_hold_secret"
    settings = settings_for(OrderSettings, await database_url("order"), woocommerce_secret=secret)
    payload = json.loads((FIXTURES / "woocommerce" / "order_created.json").read_text())
    payload["shipping"]["postcode"] = "1043"  # German postcodes have five digits
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-WC-Webhook-Topic": "order.created",
        "X-WC-Webhook-Signature": sign(body, secret),
        "X-WC-Webhook-Delivery-ID": "778899",
        "X-WC-Webhook-Source": "https://shop.example.de/",
    }
    async with in_process(create_app, settings) as svc:
        accepted = await svc.client.post("/v1/webhooks/woocommerce", content=body, headers=headers)
        assert accepted.status_code in (200, 201), accepted.text
        listed = await svc.client.get("/v1/orders?status=on_hold", headers=API_KEY)
        [held] = listed.json()["items"]
        assert held["channel"] == "woocommerce"
        assert [(h["reason"], h["note"]) for h in held["holds"]] == [
            ("address_invalid", "shipping_address.postal_code: format")
        ]
