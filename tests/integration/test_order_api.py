"""Order service storefront API as a merchant uses it, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from sqlalchemy import func, select, text

from services.order.app import create_app
from services.order.settings import OrderSettings
from services.order.tables import customer_order
from shared.db import outbox_table
from tests.support.data import API_KEY, order_body
from tests.support.round_trips import round_trips
from tests.support.services import in_process

SERVICE = {"Authorization": "Bearer dev-service-token"}


@pytest.fixture
async def order(database_url, settings_for):
    # the storefront API needs no consumer: leaving it off saves a group join per test
    settings = settings_for(OrderSettings, await database_url("order"), consumers_enabled=False)
    async with in_process(create_app, settings) as svc:
        yield svc


async def count_orders(svc) -> int:
    async with svc.runtime.uow() as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(customer_order)))


async def outbox_rows(svc) -> int:
    async with svc.runtime.uow() as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(outbox_table)))


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A valid body with one field changed (`path` dotted; value `...` deletes it)."""
    body = order_body()
    body["lines"].append({"sku": "TEA-2", "quantity": 1, "unit_price": "4.00"})
    target: Any = body
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if value is ...:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return body


BAD_INPUTS = [
    ("currency", "usd", "body.currency"),
    ("currency", "XYZ", "body.currency"),
    ("currency", ..., "body.currency"),
    ("channel", ..., "body.channel"),
    ("channel", "Web Shop!", "body.channel"),
    ("shipping_address.country", "XX", "body.shipping_address.country"),
    ("shipping_address.country", "usa", "body.shipping_address.country"),
    ("shipping_address.postal_code", "", "body.shipping_address.postal_code"),
    ("shipping_address.line1", "x" * 201, "body.shipping_address.line1"),
    ("shipping_address.city", "Spring\x00field", "body.shipping_address.city"),
    ("customer.email", "not-an-email", "body.customer.email"),
    ("customer.email", ..., "body.customer.email"),
    ("customer.name", "", "body.customer.name"),
    ("customer.phone", "call me maybe", "body.customer.phone"),
    ("customer.locale", "english please", "body.customer.locale"),
    ("customer.locale", "abc-abcdefgh-abcdefgh", "body.customer.locale"),
    ("lines", [], "body.lines"),
    ("lines.0.quantity", 0, "body.lines.0.quantity"),
    ("lines.0.quantity", 10_001, "body.lines.0.quantity"),
    ("lines.0.quantity", "2", "body.lines.0.quantity"),
    ("lines.0.quantity", 1.5, "body.lines.0.quantity"),
    ("lines.0.unit_price", "-1.00", "body.lines.0.unit_price"),
    ("lines.0.unit_price", "12.345", "body.lines.0.unit_price"),
    ("lines.0.unit_price", "NaN", "body.lines.0.unit_price"),
    ("lines.0.unit_price", "abc", "body.lines.0.unit_price"),
    ("lines.0.sku", "", "body.lines.0.sku"),
    ("lines.1.sku", "MUG-1", "body.lines.1.sku"),
    ("lines.0.surprise", "field", "body.lines.0.surprise"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"), BAD_INPUTS, ids=[f"{p}={v!r}"[:40] for p, v, _ in BAD_INPUTS]
)
async def test_bad_input_is_422_naming_the_field_and_creates_nothing(order, path, value, field):
    response = await order.client.post("/v1/orders", json=with_change(path, value), headers=API_KEY)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]], error
    assert all(d["reason"] for d in error["details"])
    assert await count_orders(order) == 0
    assert await outbox_rows(order) == 0


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_currency_precision_follows_the_currency(order):
    yen = with_change("currency", "JPY")
    yen["lines"] = [{"sku": "A", "quantity": 1, "unit_price": "1200"}]
    assert (await order.client.post("/v1/orders", json=yen, headers=API_KEY)).status_code == 201
    yen["lines"][0]["unit_price"] = "1200.5"
    rejected = await order.client.post("/v1/orders", json=yen, headers=API_KEY)
    assert rejected.status_code == 422
    assert rejected.json()["error"]["details"][0] == {
        "field": "body.lines.0.unit_price",
        "reason": "JPY amounts have at most 0 decimals",
    }


async def test_chinese_customer_and_address_are_accepted_and_kept(order):
    body = order_body(currency="CNY")
    body["customer"] = {
        "name": "王小明",
        "email": "xiaoming@example.cn",
        "phone": "+86 138 0013 8000",
        "locale": "zh-CN",
    }
    body["shipping_address"] = {
        "line1": "天河区天河路 385 号",
        "line2": "太古汇 2 座 18 楼",
        "city": "广州市",
        "region": "广东省",
        "postal_code": "510620",
        "country": "CN",
    }
    created = await order.client.post("/v1/orders", json=body, headers=API_KEY)
    assert created.status_code == 201, created.text
    assert created.json()["shipping"] == {
        "city": "广州市",
        "region": "广东省",
        "postal_code": "510620",
        "country": "CN",
    }
    contact = await order.client.get(f"/v1/orders/{created.json()['id']}/contact", headers=SERVICE)
    assert contact.json() == {
        "order_id": created.json()["id"],
        "name": "王小明",
        "email": "xiaoming@example.cn",
        "phone": "+86 138 0013 8000",
        "locale": "zh-CN",
        "redacted": False,
        "ship_to": {
            "name": "王小明",
            "phone": "+86 138 0013 8000",
            "email": "xiaoming@example.cn",
            "line1": "天河区天河路 385 号",
            "line2": "太古汇 2 座 18 楼",
            "city": "广州市",
            "region": "广东省",
            "postal_code": "510620",
            "country": "CN",
        },
        "ship_to_unavailable": None,
    }


async def test_customer_pii_is_encrypted_at_rest_and_never_in_events_or_logs(order, caplog):
    caplog.set_level(logging.DEBUG)
    body = order_body()
    body["customer"] = {
        "name": "Secret Person",
        "email": "secret.person@example.com",
        "phone": "+1 555 0100",
    }
    body["shipping_address"]["line1"] = "742 Evergreen Terrace"
    created = await order.client.post("/v1/orders", json=body, headers=API_KEY)
    assert created.status_code == 201
    secrets = ["Secret Person", "secret.person@example.com", "555 0100", "742 Evergreen"]
    async with order.runtime.uow() as uow:
        row = (await uow.session.execute(text("SELECT * FROM customer_order"))).mappings().one()
        payloads = (await uow.session.execute(select(outbox_table.c.payload))).scalars().all()
    stored = " ".join(str(v) for v in row.values())
    events = b" ".join(payloads).decode()
    for secret in secrets:
        assert secret not in stored, f"{secret!r} stored in clear"
        assert secret not in events, f"{secret!r} in an event"
        assert secret not in caplog.text, f"{secret!r} logged"
        assert secret not in created.text, f"{secret!r} echoed in the order JSON"
    assert row["email"].startswith("v1.")


async def test_idempotency_key_replays_the_first_response_and_refuses_another_body(order):
    headers = {**API_KEY, "Idempotency-Key": "checkout-7f3a"}
    first = await order.client.post("/v1/orders", json=order_body(), headers=headers)
    again = await order.client.post("/v1/orders", json=order_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await count_orders(order) == 1 and await outbox_rows(order) == 1

    other = await order.client.post("/v1/orders", json=order_body(quantity=3), headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await count_orders(order) == 1

    other_merchant_key = {"X-API-Key": "second-key", "Idempotency-Key": "checkout-7f3a"}
    order.runtime.settings.api_keys = "dev-api-key,second-key"
    separate = await order.client.post("/v1/orders", json=order_body(), headers=other_merchant_key)
    assert separate.status_code == 201 and separate.json()["id"] != first.json()["id"], (
        "keys are per API key"
    )


async def test_concurrent_retries_with_one_idempotency_key_create_one_order(order):
    headers = {**API_KEY, "Idempotency-Key": "double-click"}
    responses = await asyncio.gather(
        *(order.client.post("/v1/orders", json=order_body(), headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_orders(order) == 1 and await outbox_rows(order) == 1


async def test_external_id_is_unique_per_channel(order):
    first = await order.client.post(
        "/v1/orders", json=order_body(external_id="web-1001"), headers=API_KEY
    )
    dup = await order.client.post(
        "/v1/orders", json=order_body(external_id="web-1001"), headers=API_KEY
    )
    assert first.status_code == 201 and dup.status_code == 409
    assert dup.json()["error"]["details"] == {"order_id": first.json()["id"]}
    pos = await order.client.post(
        "/v1/orders", json=order_body(external_id="web-1001", channel="pos"), headers=API_KEY
    )
    assert pos.status_code == 201


async def test_list_filters_and_stable_cursor_pagination(order):
    ids = []
    for i in range(7):
        channel = "storefront" if i % 2 == 0 else "pos"
        r = await order.client.post("/v1/orders", json=order_body(channel=channel), headers=API_KEY)
        ids.append(r.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await order.client.get("/v1/orders", params=params, headers=API_KEY)).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # an order placed mid-pagination must not shift the pages
        await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
    assert seen == list(reversed(ids)), "newest first, each exactly once"
    pos = (await order.client.get("/v1/orders", params={"channel": "pos"}, headers=API_KEY)).json()
    assert {o["id"] for o in pos["items"]} == {ids[1], ids[3], ids[5]}
    placed = (
        await order.client.get(
            "/v1/orders", params={"status": "placed", "limit": 200}, headers=API_KEY
        )
    ).json()
    assert len(placed["items"]) == 7 + 2  # two placed while paging
    created = (await order.client.get(f"/v1/orders/{ids[0]}", headers=API_KEY)).json()["created_at"]
    later = (
        await order.client.get("/v1/orders", params={"created_to": created}, headers=API_KEY)
    ).json()
    assert later["items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "query.limit"),
        ({"limit": 201}, "query.limit"),
        ({"status": "lost"}, "query.status"),
        ({"cursor": "garbage!"}, "query.cursor"),
        ({"created_from": "yesterday"}, "query.created_from"),
        ({"created_from": "0001-01-01T00:00:00+01:00"}, "query.created_from"),
        (
            {"created_from": "2026-01-02T00:00:00Z", "created_to": "2026-01-01T00:00:00Z"},
            "query.created_from",
        ),
    ],
)
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_list_rejects_bad_parameters(order, params, field):
    response = await order.client.get("/v1/orders", params=params, headers=API_KEY)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_cancel_emits_one_event_and_repeating_is_harmless(order):
    created = (await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)).json()
    cancel = await order.client.post(
        f"/v1/orders/{created['id']}/cancel",
        json={"reason": "customer changed mind"},
        headers=API_KEY,
    )
    assert cancel.status_code == 200
    assert cancel.json()["status"] == "cancelled"
    assert cancel.json()["cancel_reason"] == "customer changed mind"
    again = await order.client.post(f"/v1/orders/{created['id']}/cancel", headers=API_KEY)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert await outbox_rows(order) == 2, "order-placed + exactly one order-cancelled"
    timeline = (
        await order.client.get(f"/v1/orders/{created['id']}/timeline", headers=API_KEY)
    ).json()
    assert [e["type"] for e in timeline["items"]] == ["order-placed", "order-cancelled"]
    assert timeline["items"][1]["data"] == {
        "order_id": created["id"],
        "reason": "customer changed mind",
    }
    assert timeline["items"][0]["source"] == "order"
    missing = await order.client.post("/v1/orders/ord_nope/cancel", headers=API_KEY)
    assert missing.status_code == 404


async def test_contact_needs_the_service_token_and_redaction_erases_pii(order):
    body = order_body()
    first = (await order.client.post("/v1/orders", json=body, headers=API_KEY)).json()
    second = (
        await order.client.post("/v1/orders", json=copy.deepcopy(body), headers=API_KEY)
    ).json()
    other = order_body()
    other["customer"]["email"] = "someone.else@example.com"
    kept = (await order.client.post("/v1/orders", json=other, headers=API_KEY)).json()

    assert (await order.client.get(f"/v1/orders/{first['id']}/contact")).status_code == 401
    assert (
        await order.client.get(f"/v1/orders/{first['id']}/contact", headers=API_KEY)
    ).status_code == 401
    bad_token = {"Authorization": "Bearer wrong"}
    assert (
        await order.client.get(f"/v1/orders/{first['id']}/contact", headers=bad_token)
    ).status_code == 401

    redacted = await order.client.post(
        "/v1/customers/redact", json={"email": " ANN@example.com "}, headers=API_KEY
    )
    assert redacted.status_code == 200 and redacted.json() == {"redacted": 2}
    for oid in (first["id"], second["id"]):
        contact = (await order.client.get(f"/v1/orders/{oid}/contact", headers=SERVICE)).json()
        assert contact["redacted"] is True and contact["email"] is None and contact["name"] is None
    still = (await order.client.get(f"/v1/orders/{kept['id']}/contact", headers=SERVICE)).json()
    assert still["email"] == "someone.else@example.com" and still["redacted"] is False
    assert (await order.client.get(f"/v1/orders/{first['id']}", headers=API_KEY)).status_code == 200
    assert (
        await order.client.post("/v1/customers/redact", json={"email": "nope"}, headers=API_KEY)
    ).status_code == 422


async def test_pii_key_rotation_re_encrypts_every_order(database_url, settings_for):
    from services.order.handlers import rotate_pii
    from services.order.pii import generate_key

    url = await database_url("order")
    old, new = generate_key(), generate_key()
    async with in_process(
        create_app, settings_for(OrderSettings, url, pii_key=old, consumers_enabled=False)
    ) as before:
        ids = [
            (await before.client.post("/v1/orders", json=order_body(), headers=API_KEY)).json()[
                "id"
            ]
            for _ in range(3)
        ]
    ring = f"k2026:{new},{old}"
    async with in_process(
        create_app, settings_for(OrderSettings, url, pii_key=ring, consumers_enabled=False)
    ) as during:
        assert await rotate_pii(during.runtime.uow(), batch=2) == 3
        assert await rotate_pii(during.runtime.uow()) == 0, "nothing left under the old key"
        async with during.runtime.uow() as uow:
            emails = (
                await uow.session.execute(text("SELECT email, ship_line1 FROM customer_order"))
            ).all()
        assert all(e.startswith("v1.k2026.") and s.startswith("v1.k2026.") for e, s in emails)
    async with in_process(
        create_app,
        settings_for(OrderSettings, url, pii_key=f"k2026:{new}", consumers_enabled=False),
    ) as after:
        contact = (await after.client.get(f"/v1/orders/{ids[0]}/contact", headers=SERVICE)).json()
        assert contact["email"] == "ann@example.com", "readable with the new key alone"
        redacted = await after.client.post(
            "/v1/customers/redact", json={"email": "ann@example.com"}, headers=API_KEY
        )
        assert redacted.json() == {"redacted": 3}, "the blind index moved to the new key too"


async def test_reads_answer_while_a_writer_holds_the_database(order, backend):
    """An order and its contacts are read in one statement: on PostgreSQL without BEGIN
    or COMMIT, on SQLite without its write lock, so a long write cannot hold them up."""
    created = (await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)).json()
    oid = created["id"]

    async def read_all() -> list[int]:
        answers = [
            await order.client.get(f"/v1/orders/{oid}", headers=API_KEY),
            await order.client.get(f"/v1/orders/{oid}/contact", headers=SERVICE),
            await order.client.post(
                "/v1/contacts:lookup", json={"order_ids": [oid]}, headers=SERVICE
            ),
        ]
        return [a.status_code for a in answers]

    async with order.runtime.uow() as writer:  # holds the order's row (SQLite: the database)
        await writer.session.execute(
            customer_order.update().where(customer_order.c.id == oid).values(status="placed")
        )
        with round_trips(order.runtime.engine) as sent:
            assert await asyncio.wait_for(read_all(), timeout=10) == [200, 200, 200]
        if backend == "postgresql":
            assert (sent.statements, sent.transactions) == (3, 0)  # no BEGIN, no COMMIT
        await writer.rollback()
