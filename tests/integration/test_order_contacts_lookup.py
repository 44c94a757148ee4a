"""`POST /v1/contacts:lookup`: many orders' customer contacts in one request and one query."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from services.order.app import create_app
from services.order.settings import OrderSettings
from tests.support.data import API_KEY, order_body
from tests.support.services import InProcessService, in_process

SERVICE = {"Authorization": "Bearer dev-service-token"}
LOOKUP = "/v1/contacts:lookup"


@pytest.fixture
async def order(database_url, settings_for):
    settings = settings_for(OrderSettings, await database_url("order"), consumers_enabled=False)
    async with in_process(create_app, settings) as svc:
        yield svc


@contextlib.contextmanager
def statements(svc: InProcessService) -> Iterator[list[str]]:
    """The SQL statements the service runs meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = svc.runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def place(svc: InProcessService, email: str, name: str, locale: str = "en") -> str:
    body = order_body()
    body["customer"].update(email=email, name=name, locale=locale)
    created = await svc.client.post("/v1/orders", json=body, headers=API_KEY)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_known_orders_answer_as_the_single_lookup_unknown_ones_are_listed(order):
    ids = [await place(order, f"c{i}@example.com", f"Customer {i}") for i in range(3)]
    zh = await place(order, "zh@example.cn", "王小明", "zh-CN")
    erased = await place(order, "gone@example.com", "Gone")
    redact = {"email": "gone@example.com"}
    assert (await order.client.post("/v1/customers/redact", json=redact, headers=API_KEY)).json()[
        "redacted"
    ] == 1
    asked = [*ids, "ord_nope", zh, erased, ids[0]]

    with statements(order) as seen:
        answer = await order.client.post(LOOKUP, json={"order_ids": asked}, headers=SERVICE)
    assert answer.status_code == 200, answer.text
    reads = [s for s in seen if "customer_order" in s]  # (the outbox relay runs meanwhile)
    assert len(reads) == 1, reads  # every asked order read in one query

    body = answer.json()
    assert body["unknown"] == ["ord_nope"]
    assert [item["order_id"] for item in body["items"]] == [*ids, zh, erased]
    for item in body["items"]:
        single = await order.client.get(f"/v1/orders/{item['order_id']}/contact", headers=SERVICE)
        expected = {k: v for k, v in single.json().items() if not k.startswith("ship_to")}
        assert item == expected
    by_id = {item["order_id"]: item for item in body["items"]}
    assert by_id[zh]["name"] == "王小明" and by_id[zh]["locale"] == "zh-CN"
    assert by_id[erased]["redacted"] is True and by_id[erased]["email"] is None


async def test_with_ship_to_each_order_answers_as_its_single_contact_lookup(order):
    ids = [await place(order, f"s{i}@example.com", f"Shipper {i}") for i in range(2)]
    erased = await place(order, "erased@example.com", "Erased")
    redact = {"email": "erased@example.com"}
    await order.client.post("/v1/customers/redact", json=redact, headers=API_KEY)
    asked = {"order_ids": [*ids, erased, "ord_nope"], "ship_to": True}

    with statements(order) as seen:
        answer = await order.client.post(LOOKUP, json=asked, headers=SERVICE)
    assert answer.status_code == 200, answer.text
    assert len([s for s in seen if "customer_order" in s]) == 1  # still one query
    body = answer.json()
    assert body["unknown"] == ["ord_nope"]
    for item in body["items"]:  # the address too, exactly as the supplier reads it alone
        single = await order.client.get(f"/v1/orders/{item['order_id']}/contact", headers=SERVICE)
        assert item == single.json()
    by_id = {item["order_id"]: item for item in body["items"]}
    address = order_body()["shipping_address"]
    assert by_id[ids[0]]["ship_to"] == {
        "name": "Shipper 0",
        "email": "s0@example.com",
        "phone": None,
        "line2": None,
        **address,
    }
    assert by_id[erased]["ship_to"] is None
    assert by_id[erased]["ship_to_unavailable"] == "customer_redacted"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_lookup_needs_the_service_token(order):
    oid = await place(order, "ann@example.com", "Ann")
    for headers in ({}, API_KEY, {"Authorization": "Bearer wrong"}):
        denied = await order.client.post(LOOKUP, json={"order_ids": [oid]}, headers=headers)
        assert denied.status_code == 401


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"order_ids": []}, "body.order_ids"),
        ({"order_ids": [f"ord_{i}" for i in range(101)]}, "body.order_ids"),
        ({"order_ids": ["ord_ok", "has space"]}, "body.order_ids.1"),
        ({"order_ids": ["ord_ok", "../etc"]}, "body.order_ids.1"),
        ({"order_ids": ["x" * 65]}, "body.order_ids.0"),
        ({"order_ids": [42]}, "body.order_ids.0"),
        ({"order_ids": "ord_1"}, "body.order_ids"),
        ({}, "body.order_ids"),
        ({"order_ids": ["ord_1"], "extra": 1}, "body.extra"),
        ({"order_ids": ["ord_1"], "ship_to": "please"}, "body.ship_to"),
    ],
)
async def test_bad_lookups_are_422_naming_the_field(order, body, field):
    answer = await order.client.post(LOOKUP, json=body, headers=SERVICE)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]], error


async def test_a_single_contact_lookup_reads_one_row_and_no_lines(order):
    order_id = await place(order, "one@example.com", "One Row")
    with statements(order) as seen:
        single = await order.client.get(f"/v1/orders/{order_id}/contact", headers=SERVICE)
    assert single.status_code == 200, single.text
    reads = [s for s in seen if "customer_order" in s or "order_line" in s]
    assert len(reads) == 1 and "order_line" not in reads[0], reads
    assert single.json()["ship_to"]["name"] == "One Row"
    missing = await order.client.get("/v1/orders/ord_nope/contact", headers=SERVICE)
    assert missing.status_code == 404
