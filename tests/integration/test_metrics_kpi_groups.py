"""KPIs by channel and by supplier (and every report's total) from the kept rollup row
groups: byte for byte the report the database sums afresh, on SQLite and PostgreSQL,
however the rollups change under them.

A random history (tests/support/metrics_streams.py: late and out-of-order events, a
confirmation before its sale moving to the sale's channel, re-confirmations by another
supplier, repeated deliveries on later days, routing failures on several days) goes
through the consumer's own path in two halves; the kept groups are read between them (so
the second half's late events land on days and months already kept), then everything is
delivered again, then the rollups are reset and the topics replayed. After each step
every window's report by channel and by supplier, and the supplier ranking, must equal
the ones computed afresh, serialised as the route's response model serialises them.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from alembic import command
from pydantic import TypeAdapter
from sqlalchemy import func, insert, select

from services.metrics import domain, queries
from services.metrics import tables as t
from services.metrics.api import KpiReport
from services.metrics.app import MIGRATIONS
from services.metrics.consumers import BATCH, CONSUMERS
from services.metrics.handlers import apply_batch
from services.metrics.store import MetricsUnitOfWork
from shared.consumer import MessageProcessor
from shared.db import alembic_config, create_engine, migrate_async, session_factory
from shared.events import new_envelope
from tests.support.metrics_streams import EPOCH, SPAN_DAYS, random_history

REPORT = TypeAdapter(KpiReport)
START = EPOCH.date()
WINDOWS = [  # first days all over the span (repeats left out or not), whole months, a year
    *(
        queries.Window(START + timedelta(days=n), START + timedelta(days=n + 40))
        for n in range(-3, SPAN_DAYS + 5, 9)
    ),
    queries.Window(START.replace(day=1), START.replace(month=START.month + 2, day=31)),
    queries.Window(START - timedelta(days=300), START + timedelta(days=65)),
    queries.Window(START + timedelta(days=20), START + timedelta(days=20)),
]
GROUPINGS = (domain.GroupBy.CHANNEL, domain.GroupBy.SUPPLIER)


def _body(report: dict[str, object]) -> bytes:
    return REPORT.dump_json(REPORT.validate_python(report), by_alias=True)


async def _check(cache: queries.FactsCache, fresh: queries.FactsCache) -> list[bytes]:
    """Every window's kept bodies, each compared with the one computed afresh."""
    out = []
    for window in WINDOWS:
        for group in GROUPINGS:
            got = _body(await queries.report(cache, window, group))
            want = _body(await queries.report(fresh, window, group, afresh=True))
            assert got == want, (window, group)
            out.append(got)
        ranking = await queries.supplier_ranking(cache, window)
        report = await queries.report(fresh, window, domain.GroupBy.SUPPLIER, afresh=True)
        ranked = [item["supplier_id"] for item in ranking["items"]]
        assert ranked == [i["key"] for i in domain.ranking(report["items"])], window
    return out


async def test_kept_groups_give_the_reports_computed_afresh_byte_for_byte(database_url):
    url = await database_url("metrics")
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)

    def uows() -> MetricsUnitOfWork:
        return MetricsUnitOfWork(sessions)

    processor = MessageProcessor("metrics", CONSUMERS, uows, batch_handler=BATCH)
    cache, fresh = queries.FactsCache(uows, ttl_s=0), queries.FactsCache(uows, ttl_s=0)
    rnd = random.Random(11)
    events = random_history(rnd, 80)
    messages = [(e.type, e.to_bytes()) for e in events]
    rnd.shuffle(messages)
    try:
        empty = await _check(cache, fresh)
        half = len(messages) // 2
        for i in range(0, half, 25):
            await processor.process_many(messages[i : min(i + 25, half)])
        await _check(cache, fresh)
        for i in range(half, len(messages), 25):  # late events on days and months kept
            await processor.process_many(messages[i : i + 25])
        whole = await _check(cache, fresh)
        assert whole != empty
        async with engine.connect() as conn:  # repeats the windows leave out, in both views
            repeats = await conn.execute(
                select(t.kpi_rollup.c.dim, func.count())
                .where(t.kpi_rollup.c.since != "")
                .group_by(t.kpi_rollup.c.dim)
            )
            assert {"channel", "supplier"} <= {dim for dim, n in repeats.all() if n}

        # delivered again, and orders placed again under new envelope ids: no change
        await processor.process_many(messages[:60])
        placed = [e for e in events if e.type == "order-placed"]
        async with uows() as uow:
            await apply_batch(
                [(new_envelope(e.payload(), time=e.time), e.payload()) for e in placed], uow
            )
            await uow.commit()
        assert await _check(cache, fresh) == whole

        # a rebuild: the reset empties every kept group, the replay gives the same bodies
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


async def test_the_migration_gives_every_day_with_rollup_rows_a_revision(database_url):
    """Before it, only days with whole-shop rows had one; a day with rows only by supplier
    would have read as empty to the kept groups."""
    url = await database_url("metrics", empty=True)
    config = alembic_config(MIGRATIONS, url)
    await asyncio.to_thread(command.upgrade, config, "b6d1e4f2a903")
    engine = create_engine(url)
    row = {"period": "d", "label": "", "since": "", "value": 1, "amount": 0}
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(t.kpi_rollup),
                [
                    {**row, "dim": "all", "start": "2026-03-01", "key": "all", "metric": "due"},
                    {**row, "dim": "supplier", "start": "2026-03-02", "key": "s", "metric": "due"},
                ],
            )
            await conn.execute(insert(t.kpi_day_revision), [{"day": "2026-03-01", "revision": 4}])
        await migrate_async(MIGRATIONS, url)
        async with engine.connect() as conn:
            got = await conn.execute(select(t.kpi_day_revision).order_by("day"))
            assert [tuple(r) for r in got.all()] == [("2026-03-01", 4), ("2026-03-02", 1)]
    finally:
        await engine.dispose()
