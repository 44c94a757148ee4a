"""Group commit at intake: orders accepted together are written together, each answered as
alone, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine

from services.order.app import create_app
from services.order.pii import generate_key
from services.order.settings import OrderSettings
from services.order.tables import customer_order, idempotency_key, order_timeline
from shared.db import TRANSACTIONS, outbox_table
from tests.support.data import API_KEY, order_body
from tests.support.services import in_process, service_process

LINGER_MS = 200.0  # long enough that requests sent together share a group on a busy machine


@pytest.fixture
async def order(database_url, settings_for):
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        consumers_enabled=False,
        order_intake_linger_ms=LINGER_MS,
    )
    async with in_process(create_app, settings) as svc:
        yield svc


def commits() -> float:
    return TRANSACTIONS.labels("commit")._value.get()


async def together(svc, *requests: tuple[dict[str, Any], dict[str, str]]) -> list[httpx.Response]:
    """POST every (body, headers) at once: they arrive within one linger."""
    return list(
        await asyncio.gather(
            *(svc.client.post("/v1/orders", json=b, headers={**API_KEY, **h}) for b, h in requests)
        )
    )


async def stored(svc) -> dict[str, int]:
    async with svc.runtime.uow() as uow:

        async def count(table: Any, *where: Any) -> int:
            query = select(func.count()).select_from(table).where(*where)
            return int(await uow.session.scalar(query))

        return {
            "orders": await count(customer_order),
            "outbox": await count(outbox_table),
            "placed": await count(outbox_table, outbox_table.c.topic == "order-placed"),
            "timeline": await count(order_timeline),
            "keys": await count(idempotency_key),
        }


async def placed_order_ids(svc) -> list[str]:
    async with svc.runtime.uow() as uow:
        payloads = await uow.session.scalars(
            select(outbox_table.c.payload).where(outbox_table.c.topic == "order-placed")
        )
        return sorted(json.loads(p)["data"]["order_id"] for p in payloads)


async def test_orders_sent_together_share_one_transaction_and_each_gets_its_order(order):
    before = commits()
    bodies = [
        (order_body(external_id=f"web-{i}"), {"Idempotency-Key": f"k-{i}"}) for i in range(12)
    ]
    responses = await together(order, *bodies)
    assert [r.status_code for r in responses] == [201] * 12
    assert [r.json()["external_id"] for r in responses] == [f"web-{i}" for i in range(12)]
    assert commits() - before < 12, "the orders were not grouped"
    assert await stored(order) == {
        "orders": 12, "outbox": 12, "placed": 12, "timeline": 12, "keys": 12
    }  # fmt: skip
    assert await placed_order_ids(order) == sorted(r.json()["id"] for r in responses)
    for r in responses:  # each one reads back as it was answered
        read = await order.client.get(f"/v1/orders/{r.json()['id']}", headers=API_KEY)
        assert read.json() == r.json()
    # and a retry later replays each one's own answer
    again = await together(order, *bodies)
    assert [r.json() for r in again] == [r.json() for r in responses]
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in again)
    assert (await stored(order))["orders"] == 12


async def test_one_key_twice_in_a_group_one_order_the_other_replayed_or_refused(order):
    key = {"Idempotency-Key": "double-click"}
    same = await together(order, (order_body(), key), (order_body(), key), (order_body(), {}))
    assert [r.status_code for r in same] == [201, 201, 201]
    assert same[0].json() == same[1].json()
    assert same[1].headers.get("Idempotent-Replayed") == "true"
    assert same[2].json()["id"] != same[0].json()["id"]

    key = {"Idempotency-Key": "other-body"}
    other = await together(order, (order_body(), key), (order_body(quantity=3), key))
    assert [r.status_code for r in other] == [201, 409]
    assert other[1].json()["error"]["code"] == "idempotency_key_reused"
    assert await stored(order) == {"orders": 3, "outbox": 3, "placed": 3, "timeline": 3, "keys": 2}


async def test_a_key_used_before_sends_its_group_one_by_one_and_leaves_nothing_half_written(
    order,
):
    first = await order.client.post(
        "/v1/orders", json=order_body(), headers={**API_KEY, "Idempotency-Key": "used"}
    )
    group = await together(
        order,
        (order_body(), {"Idempotency-Key": "new-1"}),
        (order_body(), {"Idempotency-Key": "used"}),  # the same body: its first answer again
        (order_body(quantity=5), {"Idempotency-Key": "new-2"}),
    )
    assert [r.status_code for r in group] == [201, 201, 201]
    assert group[1].json() == first.json()
    assert group[1].headers.get("Idempotent-Replayed") == "true"
    assert group[2].json()["lines"][0]["quantity"] == 5
    # the group's first write, rolled back, left no order, line, entry, event or key behind
    assert await stored(order) == {"orders": 3, "outbox": 3, "placed": 3, "timeline": 3, "keys": 3}
    assert await placed_order_ids(order) == sorted(
        r.json()["id"] for r in (first, group[0], group[2])
    )


async def writes_of(
    svc, *requests: tuple[dict[str, Any], dict[str, str]]
) -> tuple[list[httpx.Response], list[int]]:
    """The answers to `requests` sent together and, per statement sent meanwhile that
    inserts into any of intake's five tables, how many of them it wrote (the relay's
    marks, `WITH ... UPDATE outbox_event`, insert nothing)."""
    writes: list[str] = []
    tables = ("idempotency_key", "customer_order", "order_line", "order_timeline", "outbox_event")

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if any(f"INTO {t} " in statement for t in tables):
            writes.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        responses = await together(svc, *requests)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    return responses, [sum(f"INTO {t} " in sql for t in tables) for sql in writes]


async def test_a_group_or_a_lone_order_is_one_write_statement_on_postgresql(order):
    """PostgreSQL: the keys, orders, lines, timeline and outbox rows of a group, or of an
    order alone, are one statement (one round trip); SQLite keeps one statement per table."""
    postgres = order.runtime.engine.dialect.name == "postgresql"
    responses, written = await writes_of(
        order, *[(order_body(), {"Idempotency-Key": f"w-{i}"}) for i in range(6)]
    )
    assert [r.status_code for r in responses] == [201] * 6
    if postgres:
        assert written == [5] * len(written)
        assert len(written) < 6, "the orders were not grouped"
    else:
        assert written == [1] * len(written)
    lone, written = await writes_of(order, (order_body(), {"Idempotency-Key": "lone"}))
    assert lone[0].status_code == 201
    assert written == ([5] if postgres else [1] * 5)
    responses += lone
    assert await stored(order) == {"orders": 7, "outbox": 7, "placed": 7, "timeline": 7, "keys": 7}
    for r in responses:  # each one reads back as it was answered
        read = await order.client.get(f"/v1/orders/{r.json()['id']}", headers=API_KEY)
        assert read.json() == r.json()


async def test_one_external_id_twice_in_a_group_one_order_the_other_409(order):
    twins = await together(
        order,
        (order_body(external_id="web-7"), {}),
        (order_body(external_id="web-7"), {}),
        (order_body(external_id="web-8"), {}),
    )
    assert [r.status_code for r in twins] == [201, 409, 201]
    assert twins[1].json()["error"]["code"] == "duplicate_external_id"
    assert twins[1].json()["error"]["details"] == {"order_id": twins[0].json()["id"]}
    assert (await stored(order))["orders"] == (await stored(order))["placed"] == 2


async def test_a_conflict_in_a_group_fails_only_its_own_order(order):
    first = await order.client.post(
        "/v1/orders",
        json=order_body(external_id="web-1"),
        headers={**API_KEY, "Idempotency-Key": "a"},
    )
    assert first.status_code == 201
    group = await together(
        order,
        (order_body(external_id="web-2"), {}),
        (order_body(external_id="web-1"), {}),  # taken before: 409
        (order_body(external_id="web-3"), {"Idempotency-Key": "a"}),  # key used: other body
        (order_body(external_id="web-1"), {"Idempotency-Key": "a"}),  # key used: replay
        (order_body(external_id="web-4"), {"Idempotency-Key": "b"}),
    )
    assert [r.status_code for r in group] == [201, 409, 409, 201, 201]
    assert group[1].json()["error"]["details"] == {"order_id": first.json()["id"]}
    assert group[2].json()["error"]["code"] == "idempotency_key_reused"
    assert group[3].json() == first.json()
    assert await stored(order) == {"orders": 3, "outbox": 3, "placed": 3, "timeline": 3, "keys": 2}
    assert await placed_order_ids(order) == sorted(
        r.json()["id"] for r in (first, group[0], group[4])
    )


async def test_holds_are_decided_per_order_as_alone(database_url, settings_for):
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        consumers_enabled=False,
        order_intake_linger_ms=LINGER_MS,
        high_value_limits={"USD": "100"},
    )
    async with in_process(create_app, settings) as svc:
        rs = await together(svc, (order_body(), {}), (order_body(quantity=500), {}))
        assert [r.status_code for r in rs] == [201, 201]
        assert rs[0].json()["status"] != "on_hold"
        assert rs[1].json()["status"] == "on_hold"
        async with svc.runtime.uow() as uow:
            topics = sorted(await uow.session.scalars(select(outbox_table.c.topic)))
        assert topics == ["order-held", "order-placed"]


@pytest.mark.parametrize(
    ("failpoint", "committed"),
    [("intake.group_before_commit", False), ("uow.after_commit", True)],
)
async def test_killed_mid_group_no_answered_order_lost_no_order_twice(
    database_url, broker, tmp_path, failpoint, committed
):
    url = await database_url("order")
    env = {
        "DROPSHIP_ENVIRONMENT": "test",
        "DROPSHIP_ORDER_DATABASE_URL": url,
        "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "DROPSHIP_DATA_DIR": str(tmp_path),
        "DROPSHIP_LOG_JSON": "false",
        "DROPSHIP_PII_KEY": generate_key(),
        "DROPSHIP_ORDER_INTAKE_LINGER_MS": str(LINGER_MS),
    }
    process = service_process("order", env, tmp_path)
    process.start(extra_env={"DROPSHIP_FAULT_POINTS": failpoint})
    keys = [f"crash-{i}" for i in range(5)]
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=10) as client:

            async def post(key: str) -> int | None:
                with contextlib.suppress(httpx.HTTPError):
                    headers = {**API_KEY, "Idempotency-Key": key}
                    return (
                        await client.post("/v1/orders", json=order_body(), headers=headers)
                    ).status_code
                return None

            first = await asyncio.gather(*(post(k) for k in keys))
            assert first == [None] * 5, "answered before the commit"
            assert process.wait_exit(30) == 137, process.log_tail()
            assert await _count(url, customer_order) == (5 if committed else 0)

            process.start()  # the clients retry with their keys
            again = await asyncio.gather(*(post(k) for k in keys))
            assert again == [201] * 5
            assert await _count(url, customer_order) == 5
            assert await _count(url, outbox_table) == 5, "one order-placed per order"
    finally:
        process.stop()


async def _count(url: str, table: Any) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(table)))
    finally:
        await engine.dispose()


async def test_odd_requests_are_answered_as_fastapi_answers_them(order):
    raw = json.dumps(order_body()).encode()
    cases = [
        (b'{"channel": ', {"content-type": "application/json"}, 422, "body.12"),
        (raw, {}, 422, "body"),  # no content type: not read as JSON
        (raw, {"content-type": "text/plain"}, 422, "body"),
        (raw, {"content-type": "application/json", "Idempotency-Key": ""}, 422, None),
        (b"null", {"content-type": "application/json"}, 422, "body"),
    ]
    for content, headers, status, field in cases:
        r = await order.client.post("/v1/orders", content=content, headers={**API_KEY, **headers})
        assert r.status_code == status, (content[:20], headers, r.text)
        fields = [d["field"] for d in r.json()["error"]["details"]]
        assert field is None or field in fields, fields
        if field is None:
            assert any("idempotency" in f.lower() for f in fields), fields
    no_key = await order.client.post(
        "/v1/orders", content=raw, headers={"content-type": "application/json"}
    )
    assert no_key.status_code == 401
    charset = {**API_KEY, "content-type": "application/json; charset=utf-8"}
    ok = await order.client.post("/v1/orders", content=raw, headers=charset)
    assert ok.status_code == 201
    assert (await stored(order))["orders"] == 1


async def test_twin_groups_in_two_processes_one_order_per_external_id(database_url, settings_for):
    """Two processes' groups race for one external id: the unique index (or the check)
    decides, the loser's group falls back to one by one; nothing else is refused."""
    url = await database_url("order")
    settings = settings_for(
        OrderSettings, url, consumers_enabled=False, order_intake_linger_ms=LINGER_MS
    )  # one PII key: two processes of one service
    async with in_process(create_app, settings) as a, in_process(create_app, settings) as b:
        for round_ in range(3):
            twin = order_body(external_id=f"race-{round_}")
            got_a, got_b = await asyncio.gather(
                together(a, (twin, {}), (order_body(), {})),
                together(b, (order_body(), {}), (twin, {})),
            )
            assert sorted([got_a[0].status_code, got_b[1].status_code]) == [201, 409]
            assert got_a[1].status_code == got_b[0].status_code == 201
        counts = await stored(a)
        assert counts["orders"] == counts["placed"] == counts["outbox"] == 9


async def test_orders_arriving_during_a_write_each_get_their_own_order(database_url, settings_for):
    """With the default cap (one group in flight per process on SQLite, none on PostgreSQL),
    orders sent in waves while groups are written are each placed once, answered as read."""
    url = await database_url("order")
    settings = settings_for(OrderSettings, url, consumers_enabled=False)
    async with in_process(create_app, settings) as svc:
        writers = svc.app.state.intake_writer.writers
        assert writers == (1 if url.startswith("sqlite") else None)

        async def wave(n: int) -> list[httpx.Response]:
            bodies = [(order_body(external_id=f"w{n}-{i}"), {"Idempotency-Key": f"w{n}-{i}"})
                      for i in range(8)]  # fmt: skip
            return await together(svc, *bodies)

        waves = await asyncio.gather(*(wave(n) for n in range(4)))
        responses = [r for w in waves for r in w]
        assert [r.status_code for r in responses] == [201] * 32
        assert len({r.json()["id"] for r in responses}) == 32
        assert await stored(svc) == {
            "orders": 32, "outbox": 32, "placed": 32, "timeline": 32, "keys": 32
        }  # fmt: skip
        for r in responses[::7]:
            read = await svc.client.get(f"/v1/orders/{r.json()['id']}", headers=API_KEY)
            assert read.json() == r.json()
