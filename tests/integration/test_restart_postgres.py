"""PostgreSQL away for 30 s under a steady order stream: zero dead letters, nothing lost.

The test runs its own throwaway cluster (the suite's is shared) and stops it for real: every
connection of both services drops, and the outbox relays and consumers must wait it out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.bus import EVENT_TOPICS
from shared.dlq import list_dead_letters
from shared.infra import PostgresCluster
from shared.testing import eventually
from tests.support.data import API_KEY, order_body, supplier_received
from tests.support.services import in_process

OUTAGE_S = 30.0


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    own = PostgresCluster().start()
    try:
        yield own
    finally:
        own.stop()


async def _place_steadily(
    client: httpx.AsyncClient, stop: asyncio.Event, accepted: list[str], refused: list[int]
) -> None:
    """One order every 100 ms until told to stop; a refusal (database away) is not an order."""
    while not stop.is_set():
        try:
            response = await client.post("/v1/orders", json=order_body(), headers=API_KEY)
        except Exception:  # the in-process app raised: a 500 would have reached the client
            refused.append(500)
        else:
            if response.status_code == 201:
                accepted.append(response.json()["id"])
            else:
                refused.append(response.status_code)
        await asyncio.sleep(0.1)


@pytest.mark.integration
async def test_a_30s_postgres_outage_loses_nothing_and_dead_letters_nothing(
    cluster: PostgresCluster, settings_for: Any, broker: Any
) -> None:
    fast = {"consumer_max_attempts": 3, "consumer_retry_backoff_max_s": 1.0}
    order_settings = settings_for(
        OrderSettings, cluster.createdb("order_db"), db_pool_pre_ping=True, **fast
    )
    supplier_settings = settings_for(
        SupplierSettings, cluster.createdb("supplier_db"), db_pool_pre_ping=True, **fast
    )
    async with (
        in_process(order_app, order_settings) as order,
        in_process(supplier_app, supplier_settings) as supplier,
    ):
        accepted: list[str] = []
        refused: list[int] = []
        stop = asyncio.Event()
        stream = asyncio.create_task(_place_steadily(order.client, stop, accepted, refused))
        await eventually(_count_at_least(accepted, 10), what="stream flowing")

        cluster.pause()
        down_at = time.monotonic()
        await asyncio.sleep(OUTAGE_S)  # the outage itself, not synchronisation
        before = len(accepted)
        cluster.resume()
        await eventually(_count_at_least(accepted, before + 1), what="orders again", timeout=60)
        recovered_s = time.monotonic() - down_at - OUTAGE_S
        await asyncio.sleep(2)
        stop.set()
        await stream

        async def all_received() -> bool | None:
            got = set(await supplier_received(supplier.runtime))
            return True if set(accepted) <= got else None

        await eventually(all_received, what="every accepted order at the supplier", timeout=90)
        caught_up_s = time.monotonic() - down_at - OUTAGE_S
        print(  # for bench/RESULTS.md
            f"postgres outage {OUTAGE_S:.0f}s: {len(accepted)} accepted, {len(refused)} refused"
            f" (503), orders again after {recovered_s:.1f}s, all at the supplier after"
            f" {caught_up_s:.1f}s"
        )
        assert set(refused) <= {503}, f"refused with {sorted(set(refused))}, not only 503"
        letters = await list_dead_letters(broker.bootstrap, EVENT_TOPICS)
        assert letters == [], f"{len(letters)} dead letters after the outage"
        assert recovered_s < 30, f"took {recovered_s:.1f}s to accept orders again"


def _count_at_least(items: list[str], n: int) -> Any:
    async def probe() -> bool:
        return len(items) >= n

    return probe
