"""The embedded broker keeps nothing across a restart: the outbox publishes again what it lost.

Events published but not yet consumed when the broker went away (as `make up` does on every
restart) reach their consumers after it comes back empty; consumers dedupe by inbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.infra import EmbeddedBroker
from shared.testing import eventually
from tests.support.data import API_KEY, order_body, supplier_received
from tests.support.services import in_process


@pytest.mark.integration
async def test_events_published_before_a_broker_restart_are_consumed_after_it(
    database_url: Any, settings_for: Any, tmp_path: Path
) -> None:
    order_db = await database_url("order")
    supplier_db = await database_url("supplier")
    first = EmbeddedBroker(log_path=tmp_path / "first.log").start()
    try:
        settings = settings_for(OrderSettings, order_db, kafka_bootstrap=first.bootstrap)
        async with in_process(order_app, settings) as order:
            placed = []
            for _ in range(5):
                response = await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
                assert response.status_code == 201, response.text
                placed.append(response.json()["id"])

            async def all_published() -> bool:
                return await order.runtime.relay.backlog() == 0

            await eventually(all_published, what="the outbox relayed")
    finally:
        first.stop()  # nobody consumed them: the supplier service was not running

    second = EmbeddedBroker(log_path=tmp_path / "second.log").start()
    try:
        order_settings = settings_for(OrderSettings, order_db, kafka_bootstrap=second.bootstrap)
        supplier_settings = settings_for(
            SupplierSettings, supplier_db, kafka_bootstrap=second.bootstrap
        )
        async with (
            in_process(order_app, order_settings),
            in_process(supplier_app, supplier_settings) as supplier,
        ):

            async def all_received() -> list[str] | None:
                got = await supplier_received(supplier.runtime)
                return got if set(placed) <= set(got) else None

            received = await eventually(all_received, what="every order at the supplier")
            assert sorted(received) == sorted(placed), "each order arrived exactly once"
    finally:
        second.stop()
