"""Idle consumers stop fetching, yet an order placed after a quiet spell reaches the supplier
at once (the doorbell), and one published without a ring is still picked up (the peek)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.testing import eventually
from tests.support.data import API_KEY, order_body, supplier_received
from tests.support.services import InProcessService, in_process

QUIET = {"kafka_idle_after_s": 0.5}


async def _asleep(runtime) -> bool:  # type: ignore[no-untyped-def]
    consumer = runtime.consumer
    return consumer is not None and consumer.assigned and consumer.idle.asleep


@contextlib.asynccontextmanager
async def order_and_sleeping_supplier(
    database_url: Any, settings_for: Any, both: dict[str, Any], **supplier: Any
) -> AsyncIterator[tuple[InProcessService, InProcessService]]:
    """The order and supplier services in process (`both`: settings of each), once the
    supplier's consumer has gone to sleep."""
    order_settings = settings_for(OrderSettings, await database_url("order"), **both)
    supplier_settings = settings_for(
        SupplierSettings, await database_url("supplier"), **both, **supplier
    )
    async with (
        in_process(order_app, order_settings) as order,
        in_process(supplier_app, supplier_settings) as supplier_service,
    ):
        await eventually(lambda: _asleep(supplier_service.runtime), what="supplier consumer idle")
        yield order, supplier_service


async def test_an_order_after_a_quiet_spell_is_picked_up_at_once(
    database_url, settings_for, backend
):
    # peeking only once a minute: only the doorbell can make the pick-up quick
    async with order_and_sleeping_supplier(
        database_url, settings_for, QUIET, kafka_idle_peek_s=60
    ) as (order, supplier):
        placed_at = time.monotonic()
        response = await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
        assert response.status_code == 201, response.text
        received = await eventually(
            lambda: supplier_received(supplier.runtime),
            timeout=5,
            interval=0.02,
            what="order at the supplier within 5 s (the peek is 60 s)",
        )
        assert received == [response.json()["id"]]
        assert time.monotonic() - placed_at < 5


async def test_without_a_ring_the_peek_still_picks_the_order_up(
    database_url, settings_for, backend
):
    # nobody rings: the idle consumer must still fetch every `kafka_idle_peek_s`
    async with order_and_sleeping_supplier(
        database_url, settings_for, {**QUIET, "kafka_doorbell": False}, kafka_idle_peek_s=1.0
    ) as (order, supplier):
        response = await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
        assert response.status_code == 201, response.text
        received = await eventually(
            lambda: supplier_received(supplier.runtime), timeout=10, what="order at the supplier"
        )
        assert received == [response.json()["id"]]


async def test_orders_close_together_spare_rings_and_each_is_picked_up_at_once(
    database_url, settings_for, backend
):
    # a process rings at most every quarter of `kafka_idle_after_s` (here 0.5 s): orders
    # after the first go out without a ring of their own, to a consumer the ring woke
    async with order_and_sleeping_supplier(
        database_url, settings_for, {"kafka_idle_after_s": 2.0}, kafka_idle_peek_s=60
    ) as (order, supplier):
        rang = order.runtime.bus.rings
        placed: list[str] = []
        for _ in range(5):  # one at a time: each published in a batch of its own
            response = await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
            assert response.status_code == 201, response.text
            placed.append(response.json()["id"])
            await eventually(
                lambda: _all_of(placed, supplier.runtime),
                timeout=5,
                interval=0.02,
                what=f"order {len(placed)} at the supplier within 5 s (the peek is 60 s)",
            )
        assert order.runtime.bus.rings - rang < len(placed), "rings were spared"


async def _all_of(placed: list[str], runtime) -> bool:  # type: ignore[no-untyped-def]
    return set(placed) <= set(await supplier_received(runtime))
