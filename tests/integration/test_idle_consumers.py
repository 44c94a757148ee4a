"""Idle consumers stop fetching, yet an order placed after a quiet spell reaches the supplier
at once (the doorbell), and one published without a ring is still picked up (the peek)."""

from __future__ import annotations

import time

from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.testing import eventually
from tests.support.data import API_KEY, order_body, supplier_received
from tests.support.services import in_process

QUIET = {"kafka_idle_after_s": 0.5}


async def _asleep(runtime) -> bool:  # type: ignore[no-untyped-def]
    consumer = runtime.consumer
    return consumer is not None and consumer.assigned and consumer.idle.asleep


async def test_an_order_after_a_quiet_spell_is_picked_up_at_once(
    database_url, settings_for, backend
):
    # peeking only once a minute: only the doorbell can make the pick-up quick
    order_settings = settings_for(OrderSettings, await database_url("order"), **QUIET)
    supplier_settings = settings_for(
        SupplierSettings, await database_url("supplier"), kafka_idle_peek_s=60, **QUIET
    )
    async with (
        in_process(order_app, order_settings) as order,
        in_process(supplier_app, supplier_settings) as supplier,
    ):
        await eventually(lambda: _asleep(supplier.runtime), what="supplier consumer idle")
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
    order_settings = settings_for(
        OrderSettings, await database_url("order"), kafka_doorbell=False, **QUIET
    )
    supplier_settings = settings_for(
        SupplierSettings,
        await database_url("supplier"),
        kafka_doorbell=False,
        kafka_idle_peek_s=1.0,
        **QUIET,
    )
    async with (
        in_process(order_app, order_settings) as order,
        in_process(supplier_app, supplier_settings) as supplier,
    ):
        await eventually(lambda: _asleep(supplier.runtime), what="supplier consumer idle")
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
    spell = {"kafka_idle_after_s": 2.0}
    order_settings = settings_for(OrderSettings, await database_url("order"), **spell)
    supplier_settings = settings_for(
        SupplierSettings, await database_url("supplier"), kafka_idle_peek_s=60, **spell
    )
    async with (
        in_process(order_app, order_settings) as order,
        in_process(supplier_app, supplier_settings) as supplier,
    ):
        await eventually(lambda: _asleep(supplier.runtime), what="supplier consumer idle")
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
