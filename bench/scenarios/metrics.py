"""Metrics service: event ingestion into the KPI facts, rebuild from the broker, KPI query.

    python -m deploy.testenv -- .venv/bin/python -m bench metrics          # sqlite + postgresql
    .venv/bin/python -m bench metrics --events 50000 --backends sqlite      # quick look
    python -m deploy.testenv -- .venv/bin/python -m bench metrics --events 1000000 \
        --backends postgresql --skip-ingest                                 # a real 1M rebuild

Per backend, on a fresh database:

1. ingest: `--events` pre-serialised events of a realistic mix (~4.6 events per order over
   30 days) through the live consumer's own path, `MessageProcessor.process_many` with the
   metrics batch handler, one transaction per `--batch` events of one topic, no broker.
2. rebuild: the same events published to an embedded tansu broker (8 partitions per
   topic), then `services.metrics.rebuild` replays every topic from offset 0 into a second
   empty database, as `make rebuild-metrics` does (1M events extrapolated linearly).
3. query: `GET /v1/kpis`' uncached work for the 30-day window, by day and by supplier.

`--concurrency` (default 1 on SQLite, 4 on PostgreSQL) runs that many transactions at
once, as the live consumer works partitions. "events per CPU-second" is the rate this
process's CPU time allows (SQLite's work runs in it; PostgreSQL's does not).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.harness.cli import Scenario, add_backends
from bench.harness.clock import perf
from bench.harness.dbs import databases
from bench.harness.report import Output
from services.metrics import domain, queries
from services.metrics.app import MIGRATIONS
from services.metrics.consumers import BATCH, CONSUMERS
from services.metrics.rebuild import rebuild
from services.metrics.settings import MetricsSettings
from services.metrics.store import MetricsUnitOfWork
from shared.bus import EVENT_TOPICS, BusConfig, ensure_topics
from shared.consumer import MessageProcessor
from shared.db import create_engine, migrate_async, session_factory
from shared.events import (
    ConfirmedLine,
    DelayReason,
    Envelope,
    NotificationSent,
    OrderCancelled,
    OrderPlaced,
    OrderRoutingFailed,
    PlacedLine,
    RoutingFailureReason,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    new_envelope,
)
from shared.infra import EmbeddedBroker
from shared.runtime import young_threshold

SUPPLIERS = [f"sup_{n}" for n in range(12)]
CHANNELS = ["storefront", "shopify", "woocommerce"]


def history(events: int, seed: int = 1) -> list[Envelope]:
    """About `events` envelopes of a plausible month, in a plausible publish order."""
    rnd = random.Random(seed)
    out: list[Envelope] = []
    end = datetime.now(UTC).replace(microsecond=0)
    n = 0
    while len(out) < events:
        n += 1
        oid = f"ord_{n:08d}"
        placed_at = end - timedelta(seconds=rnd.randrange(30 * 86400))
        lines = [
            PlacedLine(
                line_id=f"{oid}-{k}",
                sku=f"SKU-{rnd.randrange(1000)}",
                quantity=rnd.randint(1, 3),
                unit_price=Decimal(rnd.randrange(500, 20000)) / 100,
            )
            for k in range(rnd.randint(1, 3))
        ]
        placed = OrderPlaced(
            order_id=oid,
            channel=rnd.choice(CHANNELS),
            currency="USD",
            lines=lines,
            shipping_country="US",
            shipping_postal_code="10001",
            placed_at=placed_at,
        )
        out.append(new_envelope(placed, time=placed_at))
        if rnd.random() < 0.03:
            out.append(
                new_envelope(
                    OrderRoutingFailed(
                        order_id=oid,
                        line_ids=[ln.line_id for ln in lines],
                        reason=RoutingFailureReason.NO_OFFER,
                    ),
                    time=placed_at + timedelta(seconds=5),
                )
            )
            continue
        supplier = rnd.choice(SUPPLIERS)
        confirmed_at = placed_at + timedelta(seconds=rnd.randrange(30, 3600))
        ship_by = confirmed_at + timedelta(hours=48)
        out.append(
            new_envelope(
                SupplierConfirmed(
                    order_id=oid,
                    supplier_id=supplier,
                    supplier_order_ref=f"ref-{oid}",
                    lines=[
                        ConfirmedLine(
                            line_id=ln.line_id,
                            quantity=ln.quantity,
                            unit_cost=(ln.unit_price * Decimal("0.6")).quantize(Decimal("0.0001")),
                        )
                        for ln in lines
                    ],
                    currency="USD",
                    ship_by=ship_by,
                ),
                time=confirmed_at,
            )
        )
        if rnd.random() < 0.03:
            out.append(
                new_envelope(
                    OrderCancelled(order_id=oid, reason="customer_request"),
                    time=confirmed_at + timedelta(minutes=10),
                )
            )
            continue
        dispatched_at = confirmed_at + timedelta(hours=rnd.uniform(2, 60))
        if dispatched_at > ship_by or rnd.random() < 0.05:
            out.append(
                new_envelope(
                    ShipmentDelayed(
                        order_id=oid,
                        supplier_id=supplier,
                        reason=DelayReason.NO_TRACKING_BY_DEADLINE,
                        severity=Severity.URGENT,
                    ),
                    time=ship_by,
                )
            )
            out.append(
                new_envelope(
                    NotificationSent(
                        order_id=oid,
                        kind="delay",
                        channel="email",
                        recipient_kind="customer",
                        status="sent",
                    ),
                    time=ship_by + timedelta(seconds=3),
                )
            )
        tracking = f"TRK{n:010d}"
        out.append(
            new_envelope(
                ShipmentDispatched(
                    order_id=oid,
                    supplier_id=supplier,
                    carrier="ups",
                    tracking_number=tracking,
                    line_ids=[ln.line_id for ln in lines],
                ),
                time=dispatched_at,
            )
        )
        delivered_at = dispatched_at + timedelta(hours=rnd.uniform(24, 120))
        out.append(
            new_envelope(
                ShipmentDelivered(
                    order_id=oid, tracking_number=tracking, delivered_at=delivered_at
                ),
                time=delivered_at,
            )
        )
    return out[:events]


async def ingest(
    url: str, envelopes: list[Envelope], batch: int, concurrency: int = 1
) -> tuple[float, float]:
    """Wall and CPU seconds (this process) to apply every event through the consumer's path."""
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    processor = MessageProcessor(
        "metrics", CONSUMERS, lambda: MetricsUnitOfWork(sessions), batch_handler=BATCH
    )
    by_topic: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for e in envelopes:
        by_topic[e.type].append((e.type, e.to_bytes()))
    chunks = [msgs[i : i + batch] for msgs in by_topic.values() for i in range(0, len(msgs), batch)]
    random.Random(2).shuffle(chunks)  # topics interleave, as partitions do
    try:
        started, cpu = perf(), time.process_time()
        for start in range(0, len(chunks), concurrency):
            await asyncio.gather(
                *(processor.process_many(c) for c in chunks[start : start + concurrency])
            )
        return perf() - started, time.process_time() - cpu
    finally:
        await engine.dispose()


async def query(url: str) -> dict[str, float]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    today = datetime.now(UTC).date()
    window = queries.Window(today - timedelta(days=29), today)
    out = {}
    try:
        for group in (domain.GroupBy.DAY, domain.GroupBy.SUPPLIER):
            started = perf()
            cache = queries.FactsCache(lambda: MetricsUnitOfWork(sessions), ttl_s=0)
            await queries.report(cache, window, group)
            out[group.value] = perf() - started
    finally:
        await engine.dispose()
    return out


async def publish(bootstrap: str, envelopes: list[Envelope]) -> float:
    await ensure_topics(
        BusConfig(bootstrap=bootstrap, client_id="bench", partitions=8), EVENT_TOPICS
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
        request_timeout_ms=120_000,
    )
    await producer.start()
    started = perf()
    try:
        for start in range(0, len(envelopes), 10_000):  # bounded in flight: a busy broker copes
            chunk = envelopes[start : start + 10_000]
            await asyncio.gather(
                *[await producer.send(e.type, e.to_bytes(), key=e.key) for e in chunk]
            )
    finally:
        await producer.stop()
    return perf() - started


async def run_backend(
    out: Output, backend: str, envelopes: list[Envelope], args: argparse.Namespace
) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": backend, "events": len(envelopes)}
    async with databases(backend, ["ingest", "rebuild"]) as urls:
        workers = args.concurrency or (1 if backend == "sqlite" else 4)
        if not args.skip_ingest:
            seconds, cpu = await ingest(urls["ingest"], envelopes, args.batch, workers)
            result["ingest_s"] = round(seconds, 2)
            result["ingest_events_per_s"] = round(len(envelopes) / seconds)
            result["ingest_cpu_s"] = round(cpu, 2)
            out(
                f"{backend:10} ingest   {len(envelopes):>9} events  {seconds:8.2f} s  "
                f"{len(envelopes) / seconds:>9,.0f} events/s  x{workers}  ({cpu:.2f} s CPU here: "
                f"{len(envelopes) / cpu:,.0f} events per CPU-second)",
            )
            q = await query(urls["ingest"])
            result["query_s"] = {k: round(v, 3) for k, v in q.items()}
            out(
                f"{backend:10} query    30 days, by day {q['day']:.3f} s, by supplier "
                f"{q['supplier']:.3f} s",
            )
        if args.skip_rebuild:
            return result
        broker = EmbeddedBroker(log_path=args.broker_log).start()
        try:
            published = await publish(broker.bootstrap, envelopes)
            out(
                f"{backend:10} publish  {len(envelopes):>9} events  {published:8.2f} s  "
                f"(to tansu, not part of the rebuild)",
            )
            settings = MetricsSettings(
                environment="test",
                database_url=urls["rebuild"],
                kafka_bootstrap=broker.bootstrap,
                consumer_batch_size=args.batch,
                log_json=False,
            )
            stats = await rebuild(settings, concurrency=workers)
        finally:
            broker.stop()
        per_million = stats.seconds * 1_000_000 / max(stats.read, 1)
        result.update(
            rebuild_s=round(stats.seconds, 2),
            rebuild_events_per_s=round(stats.rate),
            rebuild_applied=stats.applied,
            rebuild_1m_s=round(per_million, 1),
        )
        out(
            f"{backend:10} rebuild  {stats.read:>9} events  {stats.seconds:8.2f} s  "
            f"{stats.rate:>9,.0f} events/s  -> 1M events: {per_million:,.0f} s"
            + ("" if stats.read >= 1_000_000 else " (extrapolated)"),
        )
    return result


def options(ap: argparse.ArgumentParser) -> None:
    add_backends(ap)
    ap.add_argument("--events", type=int, default=100_000, help="events (default 100000)")
    ap.add_argument(
        "--batch",
        type=int,
        default=MetricsSettings.model_fields["consumer_batch_size"].default,
        help="events per transaction (default: the consumer's own batch size setting)",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        help="transactions at once, as the live consumer runs partitions (1 sqlite, 4 pg)",
    )
    ap.add_argument("--skip-rebuild", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true", help="only publish and rebuild")
    ap.add_argument(
        "--gc-young-threshold",
        type=int,
        default=MetricsSettings.model_fields["gc_young_threshold"].default,
        help="the collector's young threshold while ingesting, as a serving process sets it "
        "(DROPSHIP_GC_YOUNG_THRESHOLD; 0: the interpreter's 700)",
    )
    ap.add_argument(
        "--scan-history",
        action="store_true",
        help="leave the generated events in the garbage collector's scans (as before: slower)",
    )


async def run(args: argparse.Namespace) -> int:
    out = Output(args.results)
    started = perf()
    envelopes = history(args.events)
    if not args.scan_history:
        # the bench's own envelopes (tens of thousands of pydantic models) are not part of a
        # consumer's heap: kept out of the collector's scans, which they would slow down
        gc.freeze()
    out(
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cpus "
        "(well above 0: other work competes, the rates are lower than the machine can do)"
    )
    out(
        f"{len(envelopes)} events generated in {perf() - started:.1f} s "
        f"({len({e.subject for e in envelopes})} orders, batch {args.batch}, gc young threshold "
        f"{args.gc_young_threshold or gc.get_threshold()[0]}, "
        f"{os.cpu_count()} cpus, {date.today()})"
    )
    with young_threshold(args.gc_young_threshold):  # as a serving process runs
        results = [await run_backend(out, b, envelopes, args) for b in args.backends]
    out(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        out.json({"cpus": os.cpu_count()}, results)
    out.save()
    return 0


SCENARIO = Scenario("metrics", __doc__ or "", options, run)
