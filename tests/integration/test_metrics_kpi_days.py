"""The by-day KPI report kept per day: byte for byte the report computed afresh, on
SQLite and PostgreSQL, however the days' rollups change under it.

A random history (tests/support/metrics_streams.py: late and out-of-order events,
repeated deliveries on later days, routing failures on several days) goes through the
consumer's own path in two halves; the kept days are read between them (so the second
half's late events land on days already kept), then everything is delivered again,
then the rollups are reset and the topics replayed. After each step every window's
body from `queries.day_report` (what `GET /v1/kpis?group_by=day` sends) must equal
the `KpiReport` that the rollups computed afresh give, serialised as the route's
response model serialises it.
"""

from __future__ import annotations

import random
from datetime import timedelta

from pydantic import TypeAdapter
from sqlalchemy import func, select

from services.metrics import domain, queries
from services.metrics import tables as t
from services.metrics.api import KpiReport, render_item
from services.metrics.app import MIGRATIONS
from services.metrics.consumers import BATCH, CONSUMERS
from services.metrics.handlers import apply_batch
from services.metrics.store import MetricsUnitOfWork
from shared.consumer import MessageProcessor
from shared.db import create_engine, migrate_async, session_factory
from shared.events import new_envelope
from tests.support.metrics_streams import EPOCH, SPAN_DAYS, random_history

REPORT = TypeAdapter(KpiReport)
START = EPOCH.date()
WINDOWS = [  # first days all over the span (repeats left out or not), a year, one day
    *(
        queries.Window(START + timedelta(days=n), START + timedelta(days=n + 40))
        for n in range(-3, SPAN_DAYS + 5, 6)
    ),
    queries.Window(START - timedelta(days=300), START + timedelta(days=65)),
    queries.Window(START + timedelta(days=20), START + timedelta(days=20)),
]


async def _check(cache: queries.FactsCache, fresh: queries.FactsCache) -> list[bytes]:
    """Every window's kept body, each compared with the one computed afresh."""
    out = []
    for window in WINDOWS:
        got = await queries.day_report(cache, window, render_item)
        report = await queries.report(fresh, window, domain.GroupBy.DAY, afresh=True)
        assert got == REPORT.dump_json(REPORT.validate_python(report), by_alias=True), window
        out.append(got)
    return out


async def test_kept_days_give_the_report_computed_afresh_byte_for_byte(database_url):
    url = await database_url("metrics")
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)

    def uows() -> MetricsUnitOfWork:
        return MetricsUnitOfWork(sessions)

    processor = MessageProcessor("metrics", CONSUMERS, uows, batch_handler=BATCH)
    cache, fresh = queries.FactsCache(uows, ttl_s=0), queries.FactsCache(uows, ttl_s=0)
    rnd = random.Random(7)
    events = random_history(rnd, 80)
    messages = [(e.type, e.to_bytes()) for e in events]
    rnd.shuffle(messages)
    try:
        empty = await _check(cache, fresh)
        half = len(messages) // 2
        for i in range(0, half, 25):
            await processor.process_many(messages[i : min(i + 25, half)])
        await _check(cache, fresh)
        for i in range(half, len(messages), 25):  # late events on days kept already
            await processor.process_many(messages[i : i + 25])
        whole = await _check(cache, fresh)
        assert whole != empty
        async with engine.connect() as conn:  # the history has repeats the windows leave out
            repeats = await conn.execute(
                select(func.count()).where(
                    t.kpi_rollup.c.dim == "all",
                    t.kpi_rollup.c.since != "",
                    t.kpi_rollup.c.metric != "failed_orders",
                )
            )
            assert repeats.scalar_one() > 0

        # delivered again, and orders placed again under new envelope ids: no change
        await processor.process_many(messages[:60])
        placed = [e for e in events if e.type == "order-placed"]
        async with uows() as uow:
            await apply_batch(
                [(new_envelope(e.payload(), time=e.time), e.payload()) for e in placed], uow
            )
            await uow.commit()
        assert await _check(cache, fresh) == whole

        # a rebuild: the reset empties every kept day, the replay gives the same bodies
        async with uows() as uow:
            await uow.facts.clear()
            await uow.rollups.clear()
            await uow.applied.forget("metrics")
            await uow.commit()
        assert await _check(cache, fresh) == empty
        for i in range(0, len(messages), 40):
            await processor.process_many(messages[i : i + 40])
        assert await _check(cache, fresh) == whole
    finally:
        await engine.dispose()
