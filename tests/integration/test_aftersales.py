"""Returns, refunds and complaints over real HTTP: real broker, PostgreSQL and SQLite.

The order ships through the supplier service's events (published to the broker as the
supplier service would); the RMA through the real supplier service is in
`test_aftersales_rma.py`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.order.app import create_app
from services.order.settings import OrderSettings
from shared.events import (
    ConfirmedLine,
    Envelope,
    ShipmentDispatched,
    SupplierConfirmed,
    new_envelope,
)
from shared.infra import free_port
from shared.testing import eventually
from tests.support.data import API_KEY, order_body
from tests.support.kafka import consume, publish_envelopes
from tests.support.services import served

NOW = datetime.now(UTC)


@pytest.fixture
async def order(database_url, settings_for):
    port = free_port()
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=port,
        complaint_response_urgent_h=2.0,
        supplier_url="http://127.0.0.1:9",  # no supplier service: authorize answers 503
        rma_retry_for_s=0.3,
    )
    async with served(create_app, settings, port) as svc:
        await svc.runtime.bus.wait_connected()
        yield svc


def two_lines() -> dict:
    body = order_body()
    body["lines"] = [
        {"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"},
        {"sku": "TEE-1", "quantity": 3, "unit_price": "4.00"},
    ]
    return body  # paid: 25.00 + 12.00 = 37.00


def supply(order_id: str, supplier: str, line_ids: list[str], tracking: str) -> list[Envelope]:
    confirmed = SupplierConfirmed(
        order_id=order_id,
        supplier_id=supplier,
        supplier_order_ref=f"SO-{tracking}",
        lines=[ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal("2")) for i in line_ids],
        currency="USD",
        ship_by=NOW + timedelta(days=2),
    )
    dispatched = ShipmentDispatched(
        order_id=order_id,
        supplier_id=supplier,
        carrier="ups",
        tracking_number=tracking,
        line_ids=line_ids,
        dispatched_at=NOW,
    )
    return [new_envelope(confirmed), new_envelope(dispatched)]


async def placed_and_shipped(svc, broker, *, split: bool = False) -> dict:
    created = await svc.client.post("/v1/orders", json=two_lines(), headers=API_KEY)
    assert created.status_code == 201, created.text
    o = created.json()
    a, b = (ln["line_id"] for ln in o["lines"])
    events = supply(o["id"], "sup-a", [a] if split else [a, b], "1ZA")
    if split:
        events += supply(o["id"], "sup-b", [b], "1ZB")
    dispatch = [e for e in events if e.type == "shipment-dispatched"]
    await publish_envelopes(broker.bootstrap, events + dispatch)  # dispatches delivered twice

    async def shipped():
        got = (await svc.client.get(f"/v1/orders/{o['id']}", headers=API_KEY)).json()
        return got if got["status"] == "shipped" else None

    return await eventually(shipped, what="order shipped")


async def timeline(svc, order_id: str) -> list[dict]:
    return (await svc.client.get(f"/v1/orders/{order_id}/timeline", headers=API_KEY)).json()[
        "items"
    ]


async def test_returns_are_checked_against_what_shipped_and_move_in_order(order, broker):
    created = await order.client.post("/v1/orders", json=two_lines(), headers=API_KEY)
    oid = created.json()["id"]
    early = await order.client.post(
        f"/v1/orders/{oid}/returns",
        json={"lines": [{"line_id": f"{oid}-1", "quantity": 1}], "reason": "changed_mind"},
        headers=API_KEY,
    )
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_shipped"
    assert "has not shipped" in early.json()["error"]["message"]

    o = await placed_and_shipped(order, broker, split=True)
    a, b = (ln["line_id"] for ln in o["lines"])
    url = f"/v1/orders/{o['id']}/returns"
    both = await order.client.post(
        url,
        json={"lines": [{"line_id": a, "quantity": 1}, {"line_id": b, "quantity": 1}],
              "reason": "damaged_in_transit"},
        headers=API_KEY,
    )  # fmt: skip
    assert both.status_code == 422
    assert "file one return per supplier" in both.json()["error"]["message"]
    too_many = await order.client.post(
        url,
        json={"lines": [{"line_id": a, "quantity": 3}], "reason": "damaged_in_transit"},
        headers=API_KEY,
    )
    assert too_many.status_code == 422
    [problem] = too_many.json()["error"]["details"]
    assert problem == {
        "field": "lines.0.quantity",
        "reason": "at most 2 returnable (2 shipped, 0 in earlier returns)",
    }
    listed = await order.client.get(f"/v1/returns?order_id={o['id']}", headers=API_KEY)
    assert listed.json()["items"] == [], "nothing changed"

    made = await order.client.post(
        url,
        json={"lines": [{"line_id": a, "quantity": 2}], "reason": "damaged_in_transit",
              "note": "box crushed"},
        headers=API_KEY,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    ret = made.json()
    assert ret["status"] == "requested" and ret["rma"] is None and ret["supplier_id"] == "sup-a"
    assert ret["lines"] == [{"line_id": a, "sku": "MUG-1", "quantity": 2}] and ret["note"]
    again = await order.client.post(
        url,
        json={"lines": [{"line_id": a, "quantity": 1}], "reason": "wrong_item"},
        headers=API_KEY,
    )
    assert again.status_code == 422, "all of line a is in the first return"

    received = await order.client.post(f"/v1/returns/{ret['id']}/receive", headers=API_KEY)
    assert received.status_code == 409
    assert received.json()["error"]["code"] == "invalid_transition"
    assert "is requested" in received.json()["error"]["message"]
    unreachable = await order.client.post(
        f"/v1/returns/{ret['id']}/authorize", json={}, headers=API_KEY
    )
    assert unreachable.status_code == 503 and unreachable.headers["Retry-After"]
    same = (await order.client.get(f"/v1/returns/{ret['id']}", headers=API_KEY)).json()
    assert same == ret, "nothing changed"

    rejected = await order.client.post(
        f"/v1/returns/{ret['id']}/reject", json={"note": "outside the window"}, headers=API_KEY
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    twice = await order.client.post(f"/v1/returns/{ret['id']}/reject", json={}, headers=API_KEY)
    assert twice.status_code == 409 and "is rejected" in twice.json()["error"]["message"]
    by_status = await order.client.get("/v1/returns?status=rejected&limit=1", headers=API_KEY)
    assert [r["id"] for r in by_status.json()["items"]] == [ret["id"]]

    records = await consume(broker.bootstrap, "return-requested", 1)
    assert json.loads(records[0].value)["data"]["return_id"] == ret["id"]
    [rej] = await consume(broker.bootstrap, "return-rejected", 1)
    assert json.loads(rej.value)["data"]["note"] == "outside the window"
    types = [e["type"] for e in await timeline(order, o["id"])]
    assert types[-2:] == ["return-requested", "return-rejected"]
    assert "box crushed" not in json.dumps(await timeline(order, o["id"]))


async def test_refunds_stay_within_what_was_paid_and_replay_under_their_key(order, broker):
    o = await placed_and_shipped(order, broker)
    a = o["lines"][0]["line_id"]
    url = f"/v1/orders/{o['id']}/refunds"
    key = {**API_KEY, "Idempotency-Key": "refund-1"}
    body = {"lines": [{"line_id": a, "quantity": 1}], "reason": "damaged_in_transit"}
    first = await order.client.post(url, json=body, headers=key)
    assert first.status_code == 201, first.text
    refund = first.json()
    assert refund["amount"] == "12.50" and refund["currency"] == "USD"
    assert refund["cost_bearer"] == "supplier" and refund["supplier_id"] == "sup-a"
    assert refund["channel"] == "storefront"
    replay = await order.client.post(url, json=body, headers=key)
    assert replay.status_code == 201 and replay.json() == refund
    assert replay.headers["Idempotent-Replayed"] == "true"
    other = await order.client.post(url, json={"amount": "1.00", "reason": "changed_mind"},
                                    headers=key)  # fmt: skip
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"

    over = await order.client.post(
        url, json={"amount": "24.51", "reason": "changed_mind"}, headers=API_KEY
    )
    assert over.status_code == 409 and over.json()["error"]["code"] == "refund_exceeds_paid"
    assert over.json()["error"]["details"]["remaining"] == "24.50"
    assert "24.50 USD that remains" in over.json()["error"]["message"]
    bad = await order.client.post(
        url, json={"amount": "1.001", "reason": "changed_mind"}, headers=API_KEY
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "amount"
    rest = await order.client.post(
        url, json={"amount": "24.50", "reason": "changed_mind"}, headers=API_KEY
    )
    assert rest.status_code == 201 and rest.json()["cost_bearer"] == "merchant"

    shown = (await order.client.get(f"/v1/orders/{o['id']}", headers=API_KEY)).json()
    assert shown["refunded_total"] == "37.00" and shown["total"] == "37.00"
    listed = (await order.client.get(url, headers=API_KEY)).json()["items"]
    assert [r["amount"] for r in listed] == ["12.50", "24.50"]
    issued = [
        json.loads(r.value)["data"] for r in await consume(broker.bootstrap, "refund-issued", 2)
    ]
    assert sorted(Decimal(d["amount"]) for d in issued) == [Decimal("12.50"), Decimal("24.50")]
    assert len({d["refund_id"] for d in issued}) == 2, "the replay issued nothing"
    types = [e["type"] for e in await timeline(order, o["id"])]
    assert types.count("refund-issued") == 2


async def test_a_cancelled_order_is_refunded_at_the_merchants_cost(order, broker):
    created = await order.client.post("/v1/orders", json=two_lines(), headers=API_KEY)
    oid = created.json()["id"]
    await order.client.post(f"/v1/orders/{oid}/cancel", headers=API_KEY)
    refund = await order.client.post(
        f"/v1/orders/{oid}/refunds",
        json={"amount": "37.00", "reason": "not_received"},
        headers=API_KEY,
    )
    assert refund.status_code == 201 and refund.json()["cost_bearer"] == "merchant"
    missing = await order.client.post(
        "/v1/orders/ord_nope/refunds", json={"amount": "1", "reason": "not_received"},
        headers=API_KEY,
    )  # fmt: skip
    assert missing.status_code == 404


async def test_complaints_keep_their_clocks_and_their_text_to_themselves(order, broker):
    o = await placed_and_shipped(order, broker)
    filed = await order.client.post(
        "/v1/complaints",
        json={"order_id": o["id"], "tier": "urgent", "summary": "客服不回复 / no answer"},
        headers=API_KEY,
    )
    assert filed.status_code == 201, filed.text
    c = filed.json()
    assert c["status"] == "open" and c["responded_at"] is None
    filed_at = datetime.fromisoformat(c["filed_at"])
    assert datetime.fromisoformat(c["respond_by"]) - filed_at == timedelta(hours=2)
    assert datetime.fromisoformat(c["resolve_by"]) - filed_at == timedelta(hours=48)
    url = f"/v1/complaints/{c['id']}"
    first = await order.client.post(
        url + "/respond", json={"by": "ops-li", "message": "looking into it"}, headers=API_KEY
    )
    assert first.status_code == 200 and first.json()["responded_by"] == "ops-li"
    await order.client.post(
        url + "/respond", json={"by": "ops-wang", "message": "found it"}, headers=API_KEY
    )
    open_ = await order.client.get("/v1/complaints?open=true", headers=API_KEY)
    assert [x["id"] for x in open_.json()["items"]] == [c["id"]]
    done = await order.client.post(
        url + "/resolve", json={"by": "ops-li", "resolution": "reshipped"}, headers=API_KEY
    )
    assert done.status_code == 200 and done.json()["status"] == "resolved"
    again = await order.client.post(
        url + "/resolve", json={"by": "ops-li", "resolution": "again"}, headers=API_KEY
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "complaint_resolved"
    assert (await order.client.get("/v1/complaints?open=true", headers=API_KEY)).json()[
        "items"
    ] == []
    shown = (await order.client.get(url, headers=API_KEY)).json()
    assert [r["message"] for r in shown["responses"]] == ["looking into it", "found it"]
    assert shown["resolution"] == "reshipped"

    [responded] = await consume(broker.bootstrap, "complaint-responded", 1)
    await consume(broker.bootstrap, "complaint-resolved", 1)
    [filed_event] = await consume(broker.bootstrap, "complaint-filed", 1)
    wire = filed_event.value.decode() + responded.value.decode()
    assert "no answer" not in wire and "looking into it" not in wire
    types = [e["type"] for e in await timeline(order, o["id"])]
    assert types[-4:] == [
        "complaint-filed",
        "complaint-responded",
        "complaint-response-recorded",
        "complaint-resolved",
    ]
    assert "found it" not in json.dumps(await timeline(order, o["id"]))
    unknown = await order.client.post(
        "/v1/complaints", json={"order_id": "ord_x", "tier": "normal", "summary": "x"},
        headers=API_KEY,
    )  # fmt: skip
    assert unknown.status_code == 404


async def test_concurrent_refunds_never_exceed_what_was_paid_and_a_key_issues_once(order, broker):
    o = await placed_and_shipped(order, broker)
    url = f"/v1/orders/{o['id']}/refunds"
    body = {"amount": "10.00", "reason": "changed_mind"}
    twins = await asyncio.gather(
        *(
            order.client.post(url, json=body, headers={**API_KEY, "Idempotency-Key": "same"})
            for _ in range(4)
        )
    )
    assert [t.status_code for t in twins] == [201] * 4
    assert len({t.json()["id"] for t in twins}) == 1, "one refund for one key"
    rivals = await asyncio.gather(
        *(order.client.post(url, json=body, headers=API_KEY) for _ in range(4))
    )
    codes = sorted(r.status_code for r in rivals)
    assert codes == [201, 201, 409, 409], "37.00 paid, 10.00 refunded: two more fit"
    listed = (await order.client.get(url, headers=API_KEY)).json()["items"]
    assert sum(Decimal(r["amount"]) for r in listed) == Decimal("30.00")
    shown = (await order.client.get(f"/v1/orders/{o['id']}", headers=API_KEY)).json()
    assert shown["refunded_total"] == "30.00"

    line = o["lines"][0]["line_id"]
    wanted = {"lines": [{"line_id": line, "quantity": 2}], "reason": "wrong_item"}
    both = await asyncio.gather(
        *(order.client.post(f"/v1/orders/{o['id']}/returns", json=wanted, headers=API_KEY)
          for _ in range(2))
    )  # fmt: skip
    assert sorted(r.status_code for r in both) == [201, 422], "the line is returned once"


async def test_erasing_the_customer_erases_their_words_from_returns_and_complaints(order, broker):
    o = await placed_and_shipped(order, broker)
    line = o["lines"][0]["line_id"]
    ret = await order.client.post(
        f"/v1/orders/{o['id']}/returns",
        json={"lines": [{"line_id": line, "quantity": 1}], "reason": "not_as_described",
              "note": "call me on +1 212 555 0100"},
        headers=API_KEY,
    )  # fmt: skip
    filed = await order.client.post(
        "/v1/complaints",
        json={"order_id": o["id"], "tier": "normal", "summary": "I am Ann Lee of 1 Main St"},
        headers=API_KEY,
    )
    cid = filed.json()["id"]
    await order.client.post(
        f"/v1/complaints/{cid}/respond", json={"by": "ops-li", "message": "Dear Ann"},
        headers=API_KEY,
    )  # fmt: skip
    erased = await order.client.post(
        "/v1/customers/redact", json={"email": "ann@example.com"}, headers=API_KEY
    )
    assert erased.status_code == 200 and erased.json()["redacted"] >= 1
    shown = (await order.client.get(f"/v1/complaints/{cid}", headers=API_KEY)).json()
    assert shown["summary"] == "[redacted]"
    assert shown["responses"][0] == {**shown["responses"][0], "by": "ops-li",
                                     "message": "[redacted]"}  # fmt: skip
    kept = (await order.client.get(f"/v1/returns/{ret.json()['id']}", headers=API_KEY)).json()
    assert kept["note"] is None and kept["status"] == "requested" and kept["lines"]
