"""KPI rollups on SQLite and PostgreSQL: equal to the KPIs computed from the facts.

Random histories (tests/support/metrics_streams.py) go through the consumer's own path
(`MessageProcessor` with the metrics batch handler; on PostgreSQL several transactions at
once, as partitions run); `GET /v1/kpis`' rollup answers must then equal what the
from-facts computation (`domain.kpis` over `FactRepository.load`) gives for the same
window, exactly for counts and money, within the stated error for percentiles. Delivered
again (or an order placed again under a new envelope id), nothing changes; the migration's backfill
rebuilds the same rollups from the facts.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from sqlalchemy import delete

from services.metrics import domain, queries, rollup
from services.metrics import tables as t
from services.metrics.app import MIGRATIONS
from services.metrics.consumers import BATCH, CONSUMERS
from services.metrics.handlers import apply_batch
from services.metrics.rollup_backfill import backfill
from services.metrics.store import MetricsUnitOfWork
from shared.consumer import MessageProcessor
from shared.db import create_engine, migrate_async, session_factory
from shared.events import new_envelope
from tests.support.metrics_streams import EPOCH, SPAN_DAYS, random_history

START = EPOCH.date()
WINDOWS = [
    queries.Window(START - timedelta(days=3), START + timedelta(days=SPAN_DAYS + 12)),
    queries.Window(date(2026, 2, 10), date(2026, 3, 31)),  # a ragged start, a whole month
    queries.Window(date(2026, 3, 1), date(2026, 3, 1)),
    queries.Window(date(2026, 2, 20), date(2026, 4, 7)),
]
PERCENTILES = ("confirmation_latency_s", "cycle_time_s")


def _from_facts(facts: domain.Facts, window: queries.Window, group: domain.GroupBy) -> Any:
    keys = domain.days_between(window.first, window.last) if group is domain.GroupBy.DAY else ()
    items = domain.kpis(facts, group, window.start, window.end, keys=keys)
    (total,) = domain.kpis(facts, None, window.start, window.end, keys=[domain.TOTAL])
    return items, total


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name in PERCENTILES:
        g, w = got[name], want[name]
        assert g["count"] == w["count"], (got["key"], name)
        for q in ("p50", "p95"):
            if w[q] is None:
                assert g[q] is None
            else:
                assert abs(g[q] - w[q]) <= rollup.PERCENTILE_ERROR * abs(w[q]) + 0.001
    strip = {k: v for k, v in got.items() if k not in PERCENTILES}
    assert strip == {k: v for k, v in want.items() if k not in PERCENTILES}


async def _reports(cache: queries.FactsCache) -> list[Any]:
    out = []
    for window in WINDOWS:
        for group in domain.GroupBy:
            out.append(await queries.report(cache, window, group))
    return out


async def _check_against_facts(sessions: Any, cache: queries.FactsCache) -> None:
    for window in WINDOWS:
        async with MetricsUnitOfWork(sessions) as uow:
            facts = await uow.facts.load(window.start, window.end)
        for group in domain.GroupBy:
            report = await queries.report(cache, window, group)
            items, total = _from_facts(facts, window, group)
            assert [i["key"] for i in report["items"]] == [i["key"] for i in items], group
            for got, want in zip(report["items"], items, strict=True):
                _assert_same(got, want)
            _assert_same(report["total"], total)


async def test_rollups_equal_the_kpis_computed_from_the_facts(database_url, backend):
    url = await database_url("metrics")
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    processor = MessageProcessor(
        "metrics", CONSUMERS, lambda: MetricsUnitOfWork(sessions), batch_handler=BATCH
    )
    cache = queries.FactsCache(lambda: MetricsUnitOfWork(sessions), ttl_s=0)
    at_once = 1 if backend == "sqlite" else 4
    try:
        for seed in (1, 2):
            events = random_history(random.Random(seed), 60)
            by_topic: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
            for e in events:
                by_topic[e.type].append((e.type, e.to_bytes()))
            rnd = random.Random(seed)
            chunks = [
                msgs[i : i + size]
                for msgs in by_topic.values()
                for size in [rnd.randint(1, 40)]
                for i in range(0, len(msgs), size)
            ]
            rnd.shuffle(chunks)
            for start in range(0, len(chunks), at_once):
                await asyncio.gather(
                    *(processor.process_many(c) for c in chunks[start : start + at_once])
                )
            await _check_against_facts(sessions, cache)
            first = await _reports(cache)

            # the same events again (the inbox drops them), and orders placed again under
            # new envelope ids (the inbox lets them through; the sale is keyed by the
            # order, so it is there already): no change
            await processor.process_many([(e.type, e.to_bytes()) for e in events[:50]])
            placed = [e for e in events if e.type == "order-placed"]
            async with MetricsUnitOfWork(sessions) as uow:
                await apply_batch(
                    [(new_envelope(e.payload(), time=e.time), e.payload()) for e in placed],
                    uow,
                )
                await uow.commit()
            assert await _reports(cache) == first

            # the migration's backfill computes the same rollups from the facts
            async with engine.begin() as conn:
                await conn.execute(delete(t.kpi_rollup))
                await conn.run_sync(backfill)
            assert await _reports(cache) == first
            async with MetricsUnitOfWork(sessions) as uow:
                await uow.facts.clear()
                await uow.rollups.clear()
                await uow.commit()
    finally:
        await engine.dispose()
