"""Faults the platform must survive with nothing lost and nothing done twice."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from services.order.app import create_app as order_app
from services.order.pii import generate_key
from services.order.settings import OrderSettings
from services.order.tables import customer_order
from services.supplier.app import create_app as supplier_app
from services.supplier.consumers import on_order_placed
from services.supplier.settings import SupplierSettings
from shared import dlq
from shared.consumer import on
from shared.events import OrderPlaced, PlacedLine, new_envelope
from shared.infra import EmbeddedBroker, free_port
from shared.testing import eventually
from tests.support.data import API_KEY, inbox_count, order_body, supplier_received
from tests.support.kafka import consumed, publish_envelopes, publish_raw
from tests.support.services import in_process, service_process


def placed(order_id: str, quantity: int = 1) -> OrderPlaced:
    return (
        OrderPlaced.model_construct(
            order_id=order_id,
            channel="storefront",
            external_id=None,
            currency="USD",
            lines=[
                PlacedLine(
                    line_id=f"{order_id}-1", sku="MUG-1", quantity=1, unit_price=Decimal("9.99")
                )
            ],
            shipping_country="US",
            shipping_postal_code="10001",
            placed_at=datetime.now(UTC),
        )
        if quantity
        else OrderPlaced.model_construct(order_id=order_id)
    )


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_broker_arriving_late_still_delivers_the_order_once(
    database_url, settings_for, tmp_path
):
    port = free_port()
    late = EmbeddedBroker(port=port, log_path=tmp_path / "late-broker.log")
    overrides = {"kafka_bootstrap": late.bootstrap, "kafka_connect_backoff_max_s": 1.0}
    order_settings = settings_for(OrderSettings, await database_url("order"), **overrides)
    supplier_settings = settings_for(SupplierSettings, await database_url("supplier"), **overrides)
    async with (
        in_process(order_app, order_settings) as order,
        in_process(supplier_app, supplier_settings) as supplier,
    ):
        not_ready = await order.client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"] == {"database": True, "broker": False}

        response = await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
        assert response.status_code == 201
        order_id = response.json()["id"]

        await asyncio.sleep(10)  # the scenario: the broker shows up ten seconds later
        late.start()
        try:
            assert await eventually(lambda: supplier_received(supplier.runtime), timeout=60) == [
                order_id
            ]
            await eventually(lambda: _backlog_empty(order.runtime), what="outbox drained")
            assert (await order.client.get("/readyz")).status_code == 200
            assert await supplier_received(supplier.runtime) == [order_id]
            assert await inbox_count(supplier.runtime) == 1
        finally:
            late.stop()


async def _backlog_empty(runtime) -> bool:
    return await runtime.relay.backlog() == 0


async def test_duplicate_deliveries_have_one_effect(database_url, settings_for, broker):
    settings = settings_for(SupplierSettings, await database_url("supplier"))
    once, twice, ten = (new_envelope(placed(f"ord_dup{i}")) for i in range(3))
    async with in_process(supplier_app, settings) as supplier:
        await supplier.runtime.bus.wait_connected()
        before = consumed("supplier", "order-placed", "duplicate")
        await publish_envelopes(broker.bootstrap, [once, twice, twice, *[ten] * 10])
        await eventually(
            lambda: _async(consumed("supplier", "order-placed", "duplicate") - before >= 10),
            what="all copies consumed",
        )
        assert sorted(await supplier_received(supplier.runtime)) == [
            "ord_dup0",
            "ord_dup1",
            "ord_dup2",
        ]
        assert await inbox_count(supplier.runtime) == 3
        assert consumed("supplier", "order-placed", "duplicate") - before == 10


async def _async(value):
    return value


@pytest.mark.parametrize("failpoint", ["uow.after_commit", "relay.after_publish"])
async def test_process_killed_between_commit_and_publish(
    database_url, settings_for, broker, tmp_path, failpoint
):
    order_db = await database_url("order")
    env = {
        "DROPSHIP_ENVIRONMENT": "test",
        "DROPSHIP_ORDER_DATABASE_URL": order_db,
        "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "DROPSHIP_DATA_DIR": str(tmp_path),
        "DROPSHIP_LOG_JSON": "false",
        "DROPSHIP_PII_KEY": generate_key(),
    }
    order = service_process("order", env, tmp_path)
    order.start(extra_env={"DROPSHIP_FAULT_POINTS": failpoint})
    supplier_settings = settings_for(SupplierSettings, await database_url("supplier"))
    try:
        async with in_process(supplier_app, supplier_settings) as supplier:
            async with httpx.AsyncClient(base_url=order.url, timeout=10) as client:
                # with uow.after_commit the process dies before it can answer
                with contextlib.suppress(httpx.HTTPError):
                    await client.post("/v1/orders", json=order_body(), headers=API_KEY)
            assert order.wait_exit(30) == 137, order.log_tail()

            order_ids = await _committed_orders(order_db)
            assert len(order_ids) == 1, "the order was committed before the crash"

            order.start()  # restarted without the failpoint
            assert (
                await eventually(lambda: supplier_received(supplier.runtime), timeout=60)
                == order_ids
            )
            await eventually(lambda: _outbox_drained(order_db), what="outbox drained after restart")
            assert await supplier_received(supplier.runtime) == order_ids
            assert await inbox_count(supplier.runtime) == 1
    finally:
        order.stop()


async def _committed_orders(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [r.id for r in await conn.execute(select(customer_order.c.id))]
    finally:
        await engine.dispose()


async def _outbox_drained(url: str) -> bool:
    from shared.db import outbox_table

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(outbox_table.c.published_at))).all()
            return bool(rows) and all(r.published_at is not None for r in rows)
    finally:
        await engine.dispose()


async def test_poison_messages_are_dead_lettered_and_the_partition_keeps_flowing(
    database_url, settings_for, broker
):
    settings = settings_for(SupplierSettings, await database_url("supplier"))
    good = new_envelope(placed("ord_good"))
    bad_schema = good.model_copy(
        update={"id": "evt-bad-schema", "data": {**good.data, "currency": "dollars"}}
    )
    async with in_process(supplier_app, settings) as supplier:
        await supplier.runtime.bus.wait_connected()
        await publish_raw(
            broker.bootstrap,
            "order-placed",
            [b"{not json", bad_schema.to_bytes(), good.to_bytes()],
            key=good.key,
        )

        assert await eventually(lambda: supplier_received(supplier.runtime)) == ["ord_good"]
        letters = await eventually(
            lambda: dlq.list_dead_letters(broker.bootstrap, ["order-placed"]), what="dead letters"
        )
        assert [letter.value for letter in letters] == [b"{not json", bad_schema.to_bytes()]
        for letter in letters:
            headers = letter.dlq_headers
            assert headers["error_type"] == "InvalidEvent"
            assert headers["original_topic"] == "order-placed"
            assert headers["consumer_group"] == "supplier"
            assert headers["attempts"] == "1"  # never retried: it cannot succeed
            assert int(headers["original_offset"]) >= 0 and headers["original_partition"].isdigit()
        assert "currency" in letters[1].dlq_headers["error_message"]


async def test_exhausted_retries_dead_letter_and_replay_after_the_fix(
    database_url, settings_for, broker
):
    settings = settings_for(
        SupplierSettings,
        await database_url("supplier"),
        consumer_max_attempts=3,
        route_in_batches=False,  # the per-event handler below is the one swapped for a bug
    )
    broken = True

    async def flaky(envelope, data, uow):
        if broken:
            raise RuntimeError("supplier catalogue temporarily unreadable")
        await on_order_placed(envelope, data, uow)

    app = supplier_app(settings)
    runtime = app.state.runtime
    # a handler with a bug that the test "fixes"
    runtime.handlers["order-placed"] = on(OrderPlaced, flaky)
    event = new_envelope(placed("ord_flaky"))
    async with in_process(lambda _: app, settings) as supplier:
        await supplier.runtime.bus.wait_connected()
        await publish_envelopes(broker.bootstrap, [event])
        letters = await eventually(
            lambda: dlq.list_dead_letters(broker.bootstrap, ["order-placed"])
        )
        assert len(letters) == 1
        assert letters[0].dlq_headers["attempts"] == "3"
        assert letters[0].dlq_headers["error_type"] == "RuntimeError"
        assert await supplier_received(supplier.runtime) == []

        broken = False  # the fix is deployed
        assert await dlq.replay(broker.bootstrap, "order-placed") == 1
        assert await eventually(lambda: supplier_received(supplier.runtime)) == ["ord_flaky"]
        assert await dlq.replay(broker.bootstrap, "order-placed") == 0, (
            "a second replay resends nothing"
        )
