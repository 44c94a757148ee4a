"""Event pipeline benchmark: UnitOfWork -> outbox -> relay -> Kafka -> consumer, vs raw aiokafka.

    python -m deploy.testenv -- .venv/bin/python bench/pipeline.py --events 20000

Prints figures, asserts nothing. See bench/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiokafka
import asyncpg
import sqlalchemy
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import tracing
from shared.bus import ALL_TOPICS, BusConfig, KafkaBus, OutgoingMessage, ensure_topics
from shared.consumer import ConsumerRunner, MessageProcessor, RetryingDelivery, on, subscriptions
from shared.db import create_engine, new_metadata, session_factory
from shared.events import Envelope, EventData, OrderPlaced, PlacedLine, new_envelope
from shared.infra import EmbeddedBroker
from shared.outbox import OutboxRelay
from shared.uow import UnitOfWork

PARTITIONS = 8
RAW_TOPIC = "bench-raw"
GROUP = "bench"
RAW_GROUP = "bench-raw"
perf = time.perf_counter


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: a path measured over `events` events."""

    backend: str
    path: str
    events: int
    expected: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_ms"]
        data["events_per_s"] = round(self.rate, 1)
        for name, q in (("p50_ms", 50), ("p99_ms", 99), ("max_ms", 100)):
            v = self.pct(q)
            data[name] = None if v is None else round(v, 2)
        data["seconds"] = round(self.seconds, 3)
        return data


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q=100 is the maximum)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'backend':<11}{'path':<30}{'events':>8}{'secs':>9}{'events/s':>11}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}  note"
    )
    print(header)
    print("-" * len(header))
    for r in rows:

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        events = f"{r.events}" + ("" if r.events >= r.expected else "*")
        print(
            f"{r.backend:<11}{r.path:<30}{events:>8}{r.seconds:>9.2f}{r.rate:>11.0f}"
            f"{fmt(r.pct(50)):>10}{fmt(r.pct(99)):>10}{fmt(r.pct(100)):>10}  {r.note}"
        )
    print()


# --------------------------------------------------------------------------- databases


@contextlib.asynccontextmanager
async def databases(backend: str, names: Sequence[str]) -> AsyncIterator[dict[str, str]]:
    """Fresh empty database URLs, one per name, dropped/removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
            yield {n: f"sqlite+aiosqlite:///{Path(tmp) / (n + '.db')}" for n in names}
        return
    server = os.environ.get("DROPSHIP_TEST_PG_URL", "")
    if not server:
        raise SystemExit("postgresql backend needs DROPSHIP_TEST_PG_URL (run under deploy.testenv)")
    dsn = server.replace("postgresql+asyncpg://", "postgresql://")
    base = server.rsplit("/", 1)[0]
    created = {n: f"bench_{uuid.uuid4().hex[:10]}_{n}" for n in names}
    conn = await asyncpg.connect(dsn)
    try:
        for db in created.values():
            await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()
    try:
        yield {n: f"{base}/{db}" for n, db in created.items()}
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            for db in created.values():
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()


async def fresh_engine(url: str) -> AsyncEngine:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
    return engine


async def server_version() -> str:
    server = os.environ.get("DROPSHIP_TEST_PG_URL", "")
    if not server:
        return "-"
    conn = await asyncpg.connect(server.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


# --------------------------------------------------------------------------- producing


def order_placed(run: str, i: int) -> OrderPlaced:
    return OrderPlaced(
        order_id=f"ord-{run}-{i:07d}",
        channel="storefront",
        external_id=f"ext-{i}",
        currency="USD",
        lines=[
            PlacedLine(line_id="l1", sku=f"SKU-{i % 97}", quantity=1, unit_price=Decimal("9.99"))
        ],
        shipping_country="US",
        shipping_postal_code="10001",
        placed_at=datetime.now(UTC),
    )


class AckRecorder:
    """A transparent `Publisher` around the bus: notes when each outbox row was acknowledged.

    Keys are order ids, unique per event in this benchmark, so the key identifies the event.
    """

    def __init__(self, bus: KafkaBus) -> None:
        self.bus = bus
        self.acked: dict[bytes, float] = {}
        self.batches: list[int] = []

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        await self.bus.send_batch(messages)
        now = perf()
        self.batches.append(len(messages))
        for m in messages:
            self.acked.setdefault(m.key, now)


@dataclass
class Produced:
    committed: dict[str, float] = field(default_factory=dict)  # event id -> commit time
    key_of: dict[str, bytes] = field(default_factory=dict)  # event id -> message key
    txn_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    first_commit: float = 0.0
    last_commit: float = 0.0


async def produce(
    uow_factory: Any, run: str, events: int, batch: int, deadline: float, rate: float = 0.0
) -> Produced:
    """Commit `events` OrderPlaced events, `batch` per transaction.

    As fast as possible, or paced to `rate` events/s when it is above zero.
    """
    out = Produced(started=perf())
    i = 0
    while i < events and perf() < deadline:
        t0 = perf()
        async with uow_factory() as uow:
            emitted: list[Envelope] = []
            for j in range(i, min(i + batch, events)):
                emitted.append(uow.emit(order_placed(run, j)))
            await uow.commit()
            now = perf()
        out.txn_ms.append((now - t0) * 1000)
        if not out.first_commit:
            out.first_commit = now
        out.last_commit = now
        for e in emitted:
            out.committed[e.id] = now
            out.key_of[e.id] = e.key
        i += len(emitted)
        # Yield to the relay and consumer between transactions (and pace, if asked).
        await asyncio.sleep(max(0.0, out.started + i / rate - perf()) if rate > 0 else 0)
    return out


# --------------------------------------------------------------------------- the platform path


async def wait_until(predicate: Any, deadline: float, interval: float = 0.02) -> bool:
    while not predicate():
        if perf() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def stop_tasks(*tasks: asyncio.Task[Any]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


def stopped(relay: asyncio.Task[Any], consumer: asyncio.Task[Any], args: Any) -> str:
    """Why the pipeline stopped short: a crashed task, or the timeout."""
    for name, task in (("relay", relay), ("consumer", consumer)):
        if task.done() and not task.cancelled():
            return f"{name} died: {task.exception()!r}"
    return f"timeout {args.timeout:.0f}s"


async def bench_producer_alone(backend: str, url: str, args: argparse.Namespace) -> Row:
    """Outbox writes with nothing else running (no relay, no consumer)."""
    engine = await fresh_engine(url)
    sessions = session_factory(engine)
    try:
        deadline = perf() + args.timeout
        p = await produce(lambda: UnitOfWork(sessions), "alone", args.events, args.batch, deadline)
    finally:
        await engine.dispose()
    return Row(
        backend,
        "outbox commit, alone",
        len(p.committed),
        args.events,
        p.last_commit - p.started,
        p.txn_ms,
        f"latency = one {args.batch}-event txn",
    )


async def bench_pipeline(
    backend: str, urls: dict[str, str], broker: EmbeddedBroker, args: argparse.Namespace
) -> list[Row]:
    prod_engine = await fresh_engine(urls["producer"])
    cons_engine = await fresh_engine(urls["consumer"])
    prod_sessions = session_factory(prod_engine)
    cons_sessions = session_factory(cons_engine)

    prod_bus = KafkaBus(BusConfig(bootstrap=broker.bootstrap, client_id="bench-producer"))
    cons_bus = KafkaBus(BusConfig(bootstrap=broker.bootstrap, client_id="bench-consumer"))
    await prod_bus.connect()
    await cons_bus.connect()

    recorder = AckRecorder(prod_bus)
    relay = OutboxRelay("bench", prod_engine, prod_sessions, recorder)
    received: dict[str, float] = {}

    async def handler(envelope: Envelope, data: EventData, uow: UnitOfWork) -> None:
        received.setdefault(envelope.id, perf())

    processor = MessageProcessor(
        GROUP, subscriptions(on(OrderPlaced, handler)), lambda: UnitOfWork(cons_sessions)
    )
    runner = ConsumerRunner(cons_bus, RetryingDelivery(processor, cons_bus))
    relay_task = asyncio.create_task(relay.run(), name="bench-relay")
    consumer_task = asyncio.create_task(runner.run(), name="bench-consumer")
    rows: list[Row] = []
    try:
        t_join = perf()
        if not await wait_until(lambda: runner.assigned, perf() + 60):
            raise RuntimeError("consumer got no partitions within 60 s")
        join_s = perf() - t_join

        deadline = perf() + args.timeout
        p = await produce(
            lambda: UnitOfWork(prod_sessions, on_commit=relay.wake),
            "pipe",
            args.events,
            args.batch,
            deadline,
            args.rate,
        )
        produced = len(p.committed)
        await wait_until(
            lambda: len(received) >= produced or relay_task.done() or consumer_task.done(),
            deadline,
        )
        done = len(received) >= produced

        got = {eid: received[eid] for eid in p.committed if eid in received}
        last_recv = max(got.values(), default=p.first_commit)
        acked = {eid: recorder.acked[k] for eid, k in p.key_of.items() if k in recorder.acked}
        last_ack = max(acked.values(), default=p.first_commit)
        partial = "" if done else f"INCOMPLETE ({stopped(relay_task, consumer_task, args)}); "
        first_recv = min(got.values(), default=last_recv)
        drain = len(got) / (last_recv - first_recv) if last_recv > first_recv else 0.0
        mean_batch = sum(recorder.batches) / len(recorder.batches) if recorder.batches else 0
        rows.append(
            Row(
                backend,
                "outbox commit, in pipeline",
                produced,
                args.events,
                p.last_commit - p.started,
                p.txn_ms,
                f"latency = one {args.batch}-event txn",
            )
        )
        rows.append(
            Row(
                backend,
                "relay: commit -> broker ack",
                len(acked),
                produced,
                last_ack - p.first_commit,
                [(acked[e] - p.committed[e]) * 1000 for e in acked],
                f"{len(recorder.batches)} sends, mean {mean_batch:.0f} msgs",
            )
        )
        rows.append(
            Row(
                backend,
                "pipeline: commit -> consume",
                len(got),
                args.events,
                last_recv - p.first_commit,
                [(got[e] - p.committed[e]) * 1000 for e in got],
                partial + f"consumer drain {drain:.0f}/s; join {join_s:.1f}s untimed",
            )
        )
    finally:
        await stop_tasks(relay_task, consumer_task)
        await prod_bus.close()
        await cons_bus.close()
        await prod_engine.dispose()
        await cons_engine.dispose()
    return rows


# --------------------------------------------------------------------------- raw aiokafka


async def bench_raw(
    backend: str, broker: EmbeddedBroker, size: int, args: argparse.Namespace
) -> list[Row]:
    events = args.events
    received: dict[int, float] = {}
    latencies: list[float] = []

    consumer = AIOKafkaConsumer(
        RAW_TOPIC,
        bootstrap_servers=broker.bootstrap,
        group_id=RAW_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=2)
    t_join = perf()
    await consumer.start()  # joins the group (~3 s on tansu)
    await producer.start()

    async def consume() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            now = perf()
            for messages in batches.values():
                for m in messages:
                    sent, idx, _ = m.value.split(b" ", 2)
                    if int(idx) not in received:
                        received[int(idx)] = now
                        latencies.append((now - float(sent)) * 1000)
            if batches:
                await consumer.commit({tp: ms[-1].offset + 1 for tp, ms in batches.items()})

    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
            if perf() - t_join > 60:
                raise RuntimeError("raw consumer got no partitions within 60 s")
        join_s = perf() - t_join
        consume_task = asyncio.create_task(consume(), name="bench-raw-consumer")
        deadline = perf() + args.timeout
        try:
            start = perf()
            futures = []
            for i in range(events):
                head = f"{perf():.9f} {i} ".encode()
                value = head + b"x" * max(0, size - len(head))
                futures.append(
                    await producer.send(RAW_TOPIC, value, key=f"ord-raw-{i:07d}".encode())
                )
                if perf() > deadline:
                    break
            await asyncio.gather(*futures)
            acked_at = perf()
            done = await wait_until(lambda: len(received) >= len(futures), deadline)
        finally:
            await stop_tasks(consume_task)
        last = max(received.values(), default=start)
        rows = [
            Row(backend, "raw aiokafka: produce", len(futures), events, acked_at - start, [], ""),
            Row(
                backend,
                "raw aiokafka: send -> consume",
                len(received),
                events,
                last - start,
                latencies,
                ("" if done else f"TIMEOUT after {args.timeout:.0f}s; ")
                + f"{size} B values; join {join_s:.1f}s untimed",
            ),
        ]
    finally:
        await producer.stop()
        await consumer.stop()
    return rows


# --------------------------------------------------------------------------- driver


async def run_backend(backend: str, args: argparse.Namespace, size: int) -> list[Row]:
    broker = EmbeddedBroker(log_path=args.broker_log).start()
    try:
        config = BusConfig(
            bootstrap=broker.bootstrap, client_id="bench-admin", partitions=PARTITIONS
        )
        await ensure_topics(config, (*ALL_TOPICS, RAW_TOPIC))
        rows: list[Row] = []
        async with databases(backend, ["alone", "producer", "consumer"]) as urls:
            rows.append(await bench_producer_alone(backend, urls["alone"], args))
            rows += await bench_pipeline(backend, urls, broker, args)
        rows += await bench_raw(backend, broker, size, args)
        return rows
    finally:
        broker.stop()


def envelope_size() -> int:
    """Bytes of one OrderPlaced envelope as the outbox stores and the relay sends it."""
    envelope = new_envelope(order_placed("pipe", 0), traceparent=tracing.new_traceparent())
    return len(envelope.to_bytes())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_backends = "sqlite,postgresql" if os.environ.get("DROPSHIP_TEST_PG_URL") else "sqlite"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20000, help="events per path (default 20000)")
    ap.add_argument(
        "--backends",
        default=default_backends,
        help=f"comma-separated: sqlite,postgresql (default here: {default_backends})",
    )
    ap.add_argument("--batch", type=int, default=100, help="events per producing transaction")
    ap.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for consumption per path"
    )
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="pace the pipeline producer to this many events/s (default 0: full speed)",
    )
    ap.add_argument("--json", action="store_true", help="also print one JSON line of results")
    ap.add_argument("--broker-log", type=Path, default=None, help="append tansu output here")
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in args.backends:
        if b not in ("sqlite", "postgresql"):
            ap.error(f"unknown backend {b!r}")
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    size = envelope_size()
    machine = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiokafka": aiokafka.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "postgresql": await server_version() if "postgresql" in args.backends else "-",
    }
    print("dropship event pipeline benchmark")
    print("  " + "  ".join(f"{k}={v}" for k, v in machine.items()))
    print(
        f"  events={args.events} batch={args.batch} partitions={PARTITIONS} "
        f"envelope={size} B timeout={args.timeout:.0f}s backends={','.join(args.backends)} "
        f"rate={'full speed' if args.rate <= 0 else f'{args.rate:g}/s'}"
    )
    print("  one process, one event loop: producer, relay and consumer share a core\n")
    rows: list[Row] = []
    for backend in args.backends:
        t0 = perf()
        backend_rows = await run_backend(backend, args, size)
        rows += backend_rows
        print_table(backend_rows)
        print(f"  ({backend} run took {perf() - t0:.1f}s incl. broker start and group joins)\n")
    print("* = fewer events than expected (timeout); latency percentiles are nearest-rank")
    if args.json:
        print(json.dumps({"machine": machine, "results": [r.summary() for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
