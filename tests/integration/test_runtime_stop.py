"""A service's stop: the relay stops first, marking what it sent while the rest still runs.

The relay marks published rows a moment later (`DROPSHIP_OUTBOX_MARK_DELAY_MS`), and on a
stop it marks them before it lets go. If the rest of the service were cancelled at the same
time, a transaction cut mid-way could hold SQLite's write lock until the engine is disposed:
the marks would wait for it in vain and the next start would send those events again (CI
saw an SLA event go out twice across a restart).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from services.supplier.app import MIGRATIONS
from services.supplier.settings import SupplierSettings
from shared.db import create_engine, outbox_table
from shared.events import OrderCancelled
from shared.runtime import ServiceRuntime
from shared.testing import eventually
from shared.uow import UnitOfWork

pytestmark = pytest.mark.integration


async def _unmarked(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(func.count()).where(outbox_table.c.published_at.is_(None))
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def test_the_relay_marks_what_it_sent_before_the_rest_of_the_service_stops(
    database_url, settings_for
):
    url = await database_url("supplier")
    settings = settings_for(
        SupplierSettings, url, outbox_mark_delay_ms=10_000, consumers_enabled=False
    )
    relay_leading_when_others_stopped: list[bool] = []

    async def other_work(runtime: ServiceRuntime[Any]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            relay_leading_when_others_stopped.append(runtime.relay.leading)
            raise

    runtime: ServiceRuntime[Any] = ServiceRuntime(
        settings, MIGRATIONS, UnitOfWork, background={"other": other_work}
    )
    await runtime.start()
    try:
        await runtime.bus.wait_connected()
        relay = runtime.relay

        async def sent() -> bool:
            return relay.leading and relay.published_total == 1

        async with runtime.uow() as uow:
            uow.emit(OrderCancelled(order_id="ord_stop", reason="stop"))
            await uow.commit()
        await eventually(sent, what="the event sent")
        assert await _unmarked(url) == 1, "sent, its mark 10 s away"
    finally:
        await runtime.stop()
    assert relay_leading_when_others_stopped == [False], "the relay had stopped first"
    assert await _unmarked(url) == 0, "marked on the stop: the next start sends nothing again"


async def test_a_task_that_will_not_stop_is_reported_with_where_it_waits(
    database_url, settings_for, caplog
):
    url = await database_url("supplier")
    settings = settings_for(SupplierSettings, url, consumers_enabled=False, relay_enabled=False)
    running, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def cleaning_up_slowly() -> None:
        await release.wait()

    async def slow_to_stop(runtime: ServiceRuntime[Any]) -> None:
        try:
            running.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await cleaning_up_slowly()
            done.set()
            raise

    runtime: ServiceRuntime[Any] = ServiceRuntime(
        settings, MIGRATIONS, UnitOfWork, background={"slow": slow_to_stop}
    )
    await runtime.start()
    try:
        await asyncio.wait_for(running.wait(), 10)
        await runtime.stop(grace_s=0.2)
        [stuck] = [r for r in caplog.records if "did not stop in time" in r.getMessage()]
        assert "supplier:slow" in stuck.getMessage()
        assert "cleaning_up_slowly" in stuck.getMessage(), "the report says where it waits"
    finally:
        release.set()
        await asyncio.wait_for(done.wait(), 10)
