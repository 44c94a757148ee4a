"""KPI reads over a long history: `GET /v1/kpis` for 30 and 365 days, and ingestion on top.

    python -m deploy.testenv -- .venv/bin/python -m bench kpis                 # 1M orders, pg
    python -m deploy.testenv -- .venv/bin/python -m bench kpis --orders 100000 --backends sqlite

Per backend, on a fresh database:

1. history: `--orders` orders over the last `--days` days (default 1,000,000 over 400),
   written straight to the fact tables (set-based, as the consumer writes them) with their
   rollups computed by the consumer's own `rollup.contribution` in the same transaction,
   20,000 orders per transaction. Not timed as ingestion: it stands for years of traffic.
2. query: the work of `GET /v1/kpis` without its cache (`kpi_cache_s` 0): the rollup
   query, the items, the response model and its JSON (by day: the kept days' items, the
   days not kept yet read and rendered by the first request, by channel and supplier the
   kept row groups; `--fresh` also times each report computed afresh by the database and
   checks both bodies are the same), `--reps` times
   per window (30 and 365 days ending today) and grouping (day, supplier, channel);
   p50 / p99 / max wall time, and the CPU time of this process (all of it on SQLite,
   none of PostgreSQL's), which a busy machine inflates less than the wall time; on
   PostgreSQL also the server's CPU per request (its backends' CPU over the line's
   requests, mean).
   `--before` also times the from-facts computation this replaced (30 days, 3 times).
   `--live N`: 365 days by day again, N events applied before each request.
   The heap built until the reads start (modules, the generated history) is frozen out of
   the collector's full scans, as a service freezes what its startup built
   (`DROPSHIP_GC_FREEZE`); `--scan-heap` leaves it in (each full collection then stalls a
   read by ~100-170 ms).
3. ingest (unless `--live`): `--events` new events (bench.scenarios.metrics' mix) through the live
   consumer's path (`MessageProcessor.process_many`, the metrics batch handler, `--batch`
   events per transaction, `--concurrency` at once) on top of that history.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from bench.harness.cli import Scenario, add_backends
from bench.harness.clock import perf
from bench.harness.dbs import databases, db_root
from bench.harness.procs import proc_stats
from bench.harness.report import Output
from bench.scenarios.metrics import CHANNELS, SUPPLIERS, history, ingest
from services.metrics import domain, queries
from services.metrics import tables as t
from services.metrics.api import KpiReport, render_item
from services.metrics.app import MIGRATIONS
from services.metrics.bulk import insert_rows
from services.metrics.consumers import BATCH, CONSUMERS
from services.metrics.rollup_backfill import rollup_rows_of
from services.metrics.rows import Rows
from services.metrics.store import MetricsUnitOfWork
from shared.consumer import MessageProcessor
from shared.db import create_engine, migrate_async, session_factory
from shared.runtime import frozen_heap

CHUNK = 20_000
REPORT = TypeAdapter(KpiReport)


def _order(rnd: random.Random, n: int, end: datetime, days: int, rows: Rows) -> None:
    """One order's fact rows, the mix of bench.scenarios.metrics over `days` days."""
    oid = f"h{n:09d}"
    placed_at = end - timedelta(seconds=rnd.randrange(days * 86400))
    channel = rnd.choice(CHANNELS)
    lines = [
        (f"{oid}-{k}", rnd.randint(1, 3), rnd.randrange(500, 20000) * 10_000)
        for k in range(rnd.randint(1, 3))
    ]
    for line_id, qty, price in lines:
        rows[t.sale_line].append(
            {"order_id": oid, "line_id": line_id, "quantity": qty, "unit_price_micros": price}
        )
    rows[t.sale].append(
        {"order_id": oid, "event_id": f"{oid}-p", "channel": channel, "currency": "USD",
         "total_micros": sum(q * p for _, q, p in lines), "units": sum(q for _, q, _ in lines),
         "placed_at": placed_at}
    )  # fmt: skip
    if rnd.random() < 0.03:
        rows[t.routing_failure].append(
            {"event_id": f"{oid}-f", "order_id": oid, "reason": "no_offer",
             "lines": len(lines), "failed_at": placed_at + timedelta(seconds=5)}
        )  # fmt: skip
        return
    supplier = rnd.choice(SUPPLIERS)
    confirmed_at = placed_at + timedelta(seconds=rnd.randrange(30, 3600))
    ship_by = confirmed_at + timedelta(hours=48)
    rows[t.confirmation].append(
        {"event_id": f"{oid}-c", "order_id": oid, "supplier_id": supplier, "currency": "USD",
         "confirmed_at": confirmed_at, "ship_by": ship_by}
    )  # fmt: skip
    for line_id, qty, price in lines:
        rows[t.confirmation_line].append(
            {"event_id": f"{oid}-c", "line_id": line_id, "order_id": oid, "quantity": qty,
             "unit_cost_micros": price * 6 // 10}
        )  # fmt: skip
    if rnd.random() < 0.03:
        rows[t.cancellation].append(
            {"event_id": f"{oid}-x", "order_id": oid, "reason": "customer_request",
             "cancelled_at": confirmed_at + timedelta(minutes=10)}
        )  # fmt: skip
        return
    dispatched_at = confirmed_at + timedelta(hours=rnd.uniform(2, 60))
    if dispatched_at > ship_by or rnd.random() < 0.05:
        rows[t.delay].append(
            {"event_id": f"{oid}-d", "order_id": oid, "supplier_id": supplier,
             "reason": "no_tracking_by_deadline", "severity": "urgent", "delayed_at": ship_by}
        )  # fmt: skip
        rows[t.notice].append(
            {"event_id": f"{oid}-n", "order_id": oid, "kind": "delay", "channel": "email",
             "recipient_kind": "customer", "status": "sent",
             "sent_at": ship_by + timedelta(seconds=3)}
        )  # fmt: skip
    tracking = f"T{oid}"
    rows[t.dispatch].append(
        {"event_id": f"{oid}-s", "order_id": oid, "supplier_id": supplier,
         "tracking_number": tracking, "dispatched_at": dispatched_at}
    )  # fmt: skip
    rows[t.delivery].append(
        {"event_id": f"{oid}-v", "order_id": oid, "tracking_number": tracking,
         "delivered_at": dispatched_at + timedelta(hours=rnd.uniform(24, 120))}
    )  # fmt: skip


def _by_order(rows: Rows) -> list[dict[str, list[dict[str, Any]]]]:
    orders: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for table, batch in rows.items():
        for row in batch:
            orders[row["order_id"]][table.name].append(row)
    return list(orders.values())


async def load_history(url: str, orders: int, days: int, out: Output) -> None:
    """Facts and rollups of `orders` orders, written straight in (see the docstring)."""
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    rnd = random.Random(7)
    end = datetime.now(UTC).replace(microsecond=0)
    started = perf()
    try:
        for first in range(0, orders, CHUNK):
            rows: Rows = defaultdict(list)
            for n in range(first, min(first + CHUNK, orders)):
                _order(rnd, n, end, days, rows)
            rollups = rollup_rows_of(_by_order(rows))
            async with MetricsUnitOfWork(sessions) as uow:
                for table, batch in rows.items():
                    await insert_rows(uow.session, table, batch)
                await uow.rollups.add(rollups)
                await uow.commit()
            if (first // CHUNK) % 10 == 9:
                out(f"  ... {first + CHUNK:,} orders in {perf() - started:.0f} s")
    finally:
        await engine.dispose()


def _db_cpu_s(root: int | None) -> float:
    """CPU seconds the PostgreSQL server's backends have used (0 on SQLite: in-process)."""
    if root is None:
        return 0.0
    ticks = sum(s.ticks for s in proc_stats().values() if s.ppid == root)
    return ticks / os.sysconf("SC_CLK_TCK")


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


async def _once(cache: queries.FactsCache, window: queries.Window, group: domain.GroupBy,
                fresh: bool) -> bytes:  # fmt: skip
    """The route's work for one request: its body (by day: the kept days, unless `fresh`)."""
    if group is domain.GroupBy.DAY and not fresh:
        return await queries.day_report(cache, window, render_item)
    report = await queries.report(cache, window, group, afresh=fresh)
    return REPORT.dump_json(REPORT.validate_python(report), by_alias=True)


async def query(
    url: str, reps: int, out: Output, backend: str, *, fresh: bool = False
) -> dict[str, Any]:
    """p50/p99/max milliseconds of the uncached `GET /v1/kpis` work, per window and grouping.

    The first request of a window reads (and by day renders) every day or month not kept
    yet (shown apart as `first`); `fresh` also times each grouping's report computed
    afresh by the database (the path before the days and row groups were kept) and checks
    that both give the same body."""
    engine = create_engine(url)
    sessions = session_factory(engine)
    cache = queries.FactsCache(lambda: MetricsUnitOfWork(sessions), ttl_s=0)
    today = datetime.now(UTC).date()
    result: dict[str, Any] = {}
    root = db_root(backend)
    lines = [(group, afresh) for group in domain.GroupBy for afresh in (False, True)[: 1 + fresh]]
    try:
        for days in (30, 365):
            window = queries.Window(today - timedelta(days=days - 1), today)
            for group, afresh in lines:
                first = ""
                if not afresh:
                    started = perf()
                    kept = await _once(cache, window, group, False)
                    first = f"  first {(perf() - started) * 1000:.0f} ms"
                    if fresh:
                        assert kept == await _once(cache, window, group, True), window
                times, cpu = [], []
                db_started = _db_cpu_s(root)
                for _ in range(reps):
                    started, cpu_started = perf(), time.process_time()
                    body = await _once(cache, window, group, afresh)
                    times.append((perf() - started) * 1000)
                    cpu.append((time.process_time() - cpu_started) * 1000)
                db_ms = (_db_cpu_s(root) - db_started) * 1000 / reps
                p50, p99 = _pct(times, 50), _pct(times, 99)
                line = {"p50_ms": p50, "p99_ms": p99, "db_cpu_ms": db_ms, "cpu_ms": _pct(cpu, 50)}
                name = f"{group.value}{' afresh' if afresh else ''}"
                result[f"{days}d_{name.replace(' ', '_')}"] = line
                db = f"  database CPU {db_ms:5.1f} ms/request" if root else ""
                out(
                    f"{backend:10} GET /v1/kpis {days:>3} days by {name:13} "
                    f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {max(times):7.1f} ms  "
                    f"CPU here p50 {_pct(cpu, 50):6.1f} ms{db}  ({len(body):,} bytes, "
                    f"{reps} runs){first}"
                )
    finally:
        await engine.dispose()
    return result


async def live(url: str, reps: int, events: int, batch: int, out: Output, backend: str) -> Any:
    """365 days by day, supplier and channel while events arrive: `batch` events of `events`
    (bench.scenarios.metrics' month, in publish order) applied through the consumer's path
    before each round of the three requests (not timed), so each request reads again the
    days (or months) the batch changed; the last bodies are checked against the afresh ones."""
    engine = create_engine(url)
    sessions = session_factory(engine)

    def uows() -> MetricsUnitOfWork:
        return MetricsUnitOfWork(sessions)

    processor = MessageProcessor("metrics", CONSUMERS, uows, batch_handler=BATCH)
    messages = [(e.type, e.to_bytes()) for e in history(events)]
    cache = queries.FactsCache(uows, ttl_s=0)
    today = datetime.now(UTC).date()
    window = queries.Window(today - timedelta(days=364), today)
    root = db_root(backend)
    groups = list(domain.GroupBy)
    result: dict[str, Any] = {}
    try:
        for group in groups:
            await _once(cache, window, group, False)
        times: dict[domain.GroupBy, list[float]] = {g: [] for g in groups}
        cpu: dict[domain.GroupBy, list[float]] = {g: [] for g in groups}
        db_s: dict[domain.GroupBy, float] = dict.fromkeys(groups, 0.0)
        stale: list[float] = []
        bodies: dict[domain.GroupBy, bytes] = {}
        for n in range(reps):
            chunk = messages[n * batch : (n + 1) * batch]
            await processor.process_many(chunk)
            async with uows() as uow:
                revisions = await uow.rollups.day_revisions(window.first, window.last)
            stale.append(sum(1 for d, r in revisions.items() if cache.days.kept(d) != r))
            for group in groups:
                db_started, started, cpu_started = _db_cpu_s(root), perf(), time.process_time()
                bodies[group] = await _once(cache, window, group, False)
                times[group].append((perf() - started) * 1000)
                cpu[group].append((time.process_time() - cpu_started) * 1000)
                db_s[group] += _db_cpu_s(root) - db_started
        for group in groups:
            assert bodies[group] == await _once(cache, window, group, True), group
            p50, p99, db_ms = (
                _pct(times[group], 50),
                _pct(times[group], 99),
                db_s[group] * 1000 / reps,
            )
            db = f"  database CPU {db_ms:5.1f} ms/request" if root else ""
            out(
                f"{backend:10} GET /v1/kpis 365 days by {group.value:8}, {batch} events applied "
                f"before each: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
                f"max {max(times[group]):7.1f} ms"
                f"  CPU here p50 {_pct(cpu[group], 50):6.1f} ms{db}  ({_pct(stale, 50):.0f} days "
                f"changed p50, {max(stale):.0f} max; {reps} runs)"
            )
            result[group.value] = {
                "p50_ms": p50, "p99_ms": p99, "db_cpu_ms": db_ms, "cpu_ms": _pct(cpu[group], 50)
            }  # fmt: skip
        return result
    finally:
        await engine.dispose()


async def before(url: str, out: Output, backend: str) -> None:
    """The from-facts computation the rollups replaced (30 days, by day), for comparison."""
    engine = create_engine(url)
    sessions = session_factory(engine)
    today = datetime.now(UTC).date()
    window = queries.Window(today - timedelta(days=29), today)
    try:
        times = []
        for _ in range(3):
            started = perf()
            async with MetricsUnitOfWork(sessions) as uow:
                facts = await uow.facts.load(window.start, window.end)
            keys = domain.days_between(window.first, window.last)
            domain.kpis(facts, domain.GroupBy.DAY, window.start, window.end, keys=keys)
            domain.kpis(facts, None, window.start, window.end, keys=[domain.TOTAL])
            times.append(perf() - started)
        spread = f"{min(times):.2f}-{max(times):.2f} s"
        out(f"{backend:10} before: from the facts, 30 days by day: {spread}")
    finally:
        await engine.dispose()


async def run_backend(out: Output, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": backend, "orders": args.orders}
    async with databases(backend, ["kpis"]) as urls:
        url = urls["kpis"]
        started = perf()
        await load_history(url, args.orders, args.days, out)
        seconds = perf() - started
        out(f"{backend:10} history  {args.orders:,} orders, {args.days} days, in {seconds:.0f} s")
        # as the service freezes what its startup built (DROPSHIP_GC_FREEZE), before any read
        with frozen_heap(not args.scan_heap):
            await measure(url, out, backend, args, result)
    return result


async def measure(
    url: str, out: Output, backend: str, args: argparse.Namespace, result: dict[str, Any]
) -> None:
    result["query"] = await query(url, args.reps, out, backend, fresh=args.fresh)
    if args.before:
        await before(url, out, backend)
    if args.live:
        live_args = (args.reps, args.live, args.batch, out, backend)
        result["live"] = await live(url, *live_args)
    elif args.events:
        envelopes = history(args.events)
        workers = args.concurrency or (1 if backend == "sqlite" else 4)
        seconds, cpu = await ingest(url, envelopes, args.batch, workers)
        rate = len(envelopes) / seconds
        result["ingest_events_per_s"] = round(rate)
        out(
            f"{backend:10} ingest   {len(envelopes):,} events on top  {seconds:.2f} s  "
            f"{rate:,.0f} events/s  x{workers}  ({cpu:.2f} s CPU here)"
        )
        result["query_after_ingest"] = await query(url, max(5, args.reps // 5), out, backend)


def options(ap: argparse.ArgumentParser) -> None:
    add_backends(ap, both_under_testenv=False)
    ap.add_argument("--orders", type=int, default=1_000_000, help="orders of history")
    ap.add_argument("--days", type=int, default=400, help="days the history spans")
    ap.add_argument("--reps", type=int, default=50, help="requests per window and grouping")
    ap.add_argument("--events", type=int, default=50_000, help="events ingested on top (0: none)")
    ap.add_argument("--batch", type=int, default=500, help="events per transaction")
    ap.add_argument("--concurrency", type=int, help="transactions at once (1 sqlite, 4 pg)")
    ap.add_argument("--before", action="store_true", help="also time the from-facts path")
    ap.add_argument(
        "--live", type=int, default=0, help="events applied between by-day reads (not --events)"
    )
    ap.add_argument("--fresh", action="store_true", help="also time the reports computed afresh")
    ap.add_argument(
        "--scan-heap",
        action="store_true",
        help="leave the process's heap in the collector's full scans (DROPSHIP_GC_FREEZE=false)",
    )


async def run(args: argparse.Namespace) -> int:
    out = Output(args.results)
    out(
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cpus, "
        f"{date.today()}, process CPU so far {time.process_time():.1f} s"
    )
    results = [await run_backend(out, b, args) for b in args.backends]
    out(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        out.json({"cpus": os.cpu_count()}, results)
    out.save()
    return 0


SCENARIO = Scenario("kpis", __doc__ or "", options, run)
