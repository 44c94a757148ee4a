"""Event pipeline: UnitOfWork -> outbox -> relay -> Kafka -> consumer, against raw aiokafka.

    python -m deploy.testenv -- .venv/bin/python -m bench pipeline --events 20000

Per backend, on one embedded broker: the outbox write rate alone, the same while a relay
and a consumer run (commit -> broker ack, commit -> consume), and raw aiokafka produce
and send -> consume as the ceiling. One process, one event loop. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiokafka
import sqlalchemy
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness.cli import Scenario, add_backends
from bench.harness.clock import perf, stop_tasks, wait_until
from bench.harness.dbs import databases, server_version
from bench.harness.report import Output, machine, versions
from bench.harness.stats import percentile
from shared import tracing
from shared.bus import ALL_TOPICS, BusConfig, KafkaBus, OutgoingMessage, ensure_topics
from shared.consumer import ConsumerRunner, MessageProcessor, RetryingDelivery, on, subscriptions
from shared.db import create_engine, new_metadata, session_factory
from shared.events import Envelope, OrderPlaced, PlacedLine, new_envelope
from shared.infra import EmbeddedBroker
from shared.outbox import OutboxRelay
from shared.uow import UnitOfWork

PARTITIONS = 8
RAW_TOPIC = "bench-raw"


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
    def count(self) -> str:
        """The event count, starred when the timeout left it short."""
        return f"{self.events}" + ("" if self.events >= self.expected else "*")

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_ms"]
        data["events_per_s"] = self.rate
        data.update(p50_ms=self.pct(50), p99_ms=self.pct(99), max_ms=self.pct(100))
        return data


def table(out: Output, rows: list[Row]) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    out.table(
        f"{'backend':<11}{'path':<30}{'events':>8}{'secs':>9}{'events/s':>11}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}  note",
        (
            f"{r.backend:<11}{r.path:<30}{r.count:>8}"
            f"{r.seconds:>9.2f}{r.rate:>11.0f}{ms(r.pct(50)):>10}{ms(r.pct(99)):>10}"
            f"{ms(r.pct(100)):>10}  {r.note}"
            for r in rows
        ),
    )


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


def envelope_size() -> int:
    """Bytes of one OrderPlaced envelope as the outbox stores and the relay sends it."""
    envelope = new_envelope(order_placed("pipe", 0), traceparent=tracing.new_traceparent())
    return len(envelope.to_bytes())


async def fresh_engine(url: str) -> AsyncEngine:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
    return engine


class AckRecorder:
    """A transparent `Publisher` around the bus: notes when each outbox row was acknowledged
    (keys are order ids, unique per event here, so the key names the event)."""

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
    uow_factory: Callable[[], UnitOfWork], run: str, args: argparse.Namespace, rate: float = 0.0
) -> Produced:
    """Commit `--events` OrderPlaced events, `--batch` per transaction; paced to `rate`/s > 0."""
    out = Produced(started=perf())
    deadline = perf() + args.timeout
    events, batch, i = args.events, args.batch, 0
    while i < events and perf() < deadline:
        t0 = perf()
        async with uow_factory() as uow:
            emitted = [uow.emit(order_placed(run, j)) for j in range(i, min(i + batch, events))]
            await uow.commit()
            now = perf()
        out.txn_ms.append((now - t0) * 1000)
        out.first_commit = out.first_commit or now
        out.last_commit = now
        for e in emitted:
            out.committed[e.id] = now
            out.key_of[e.id] = e.key
        i += len(emitted)
        # Yield to the relay and consumer between transactions (and pace, if asked).
        await asyncio.sleep(max(0.0, out.started + i / rate - perf()) if rate > 0 else 0)
    return out


async def producer_alone(backend: str, url: str, args: argparse.Namespace) -> Row:
    """Outbox writes with nothing else running (no relay, no consumer)."""
    engine = await fresh_engine(url)
    sessions = session_factory(engine)
    try:
        p = await produce(lambda: UnitOfWork(sessions), "alone", args)
    finally:
        await engine.dispose()
    note = f"latency = one {args.batch}-event txn"
    return Row(
        backend,
        "outbox commit, alone",
        len(p.committed),
        args.events,
        p.last_commit - p.started,
        p.txn_ms,
        note,
    )


async def platform_path(
    backend: str, urls: dict[str, str], broker: EmbeddedBroker, args: argparse.Namespace
) -> list[Row]:
    prod_engine, cons_engine = (
        await fresh_engine(urls["producer"]),
        await fresh_engine(urls["consumer"]),
    )
    prod_sessions, cons_sessions = session_factory(prod_engine), session_factory(cons_engine)
    prod_bus = KafkaBus(BusConfig(bootstrap=broker.bootstrap, client_id="bench-producer"))
    cons_bus = KafkaBus(BusConfig(bootstrap=broker.bootstrap, client_id="bench-consumer"))
    await prod_bus.connect()
    await cons_bus.connect()
    recorder = AckRecorder(prod_bus)
    relay = OutboxRelay("bench", prod_engine, prod_sessions, recorder)
    received: dict[str, float] = {}

    async def handler(envelope: Envelope, data: OrderPlaced, uow: UnitOfWork) -> None:
        received.setdefault(envelope.id, perf())

    processor = MessageProcessor(
        "bench", subscriptions(on(OrderPlaced, handler)), lambda: UnitOfWork(cons_sessions)
    )
    tuning: dict[str, Any] = {}
    if args.linger is not None and "linger_ms" in inspect.signature(ConsumerRunner).parameters:
        tuning["linger_ms"] = args.linger
    runner = ConsumerRunner(cons_bus, RetryingDelivery(processor, cons_bus), **tuning)
    consumer_txns = consumer_statements = 0

    def counted(_conn: object) -> None:
        nonlocal consumer_txns
        consumer_txns += 1

    def statement(*_: object) -> None:
        nonlocal consumer_statements
        consumer_statements += 1

    event.listen(cons_engine.sync_engine, "commit", counted)
    event.listen(cons_engine.sync_engine, "before_cursor_execute", statement)
    relay_task = asyncio.create_task(relay.run(), name="bench-relay")
    consumer_task = asyncio.create_task(runner.run(), name="bench-consumer")
    try:
        t_join = perf()
        if not await wait_until(lambda: runner.assigned, perf() + 60):
            raise RuntimeError("consumer got no partitions within 60 s")
        join_s = perf() - t_join
        deadline = perf() + args.timeout
        txns_before, cpu_before = consumer_txns, time.process_time()
        statements_before = consumer_statements
        p = await produce(
            lambda: UnitOfWork(prod_sessions, on_commit=relay.wake), "pipe", args, args.rate
        )
        produced = len(p.committed)
        await wait_until(
            lambda: len(received) >= produced or relay_task.done() or consumer_task.done(), deadline
        )
        cpu_ms = (time.process_time() - cpu_before) * 1000
        n = max(len(received), 1)
        cost = (
            f"consumer {(consumer_txns - txns_before) / n:.3f} txn/event, "
            f"{(consumer_statements - statements_before) / n:.2f} statements/event, "
            f"process CPU {cpu_ms / n:.2f} ms/event; "
        )
        got = {eid: received[eid] for eid in p.committed if eid in received}
        acked = {eid: recorder.acked[k] for eid, k in p.key_of.items() if k in recorder.acked}
        last_recv = max(got.values(), default=p.first_commit)
        last_ack = max(acked.values(), default=p.first_commit)
        first_recv = min(got.values(), default=last_recv)
        drain = len(got) / (last_recv - first_recv) if last_recv > first_recv else 0.0
        mean_batch = sum(recorder.batches) / len(recorder.batches) if recorder.batches else 0
        partial = ""
        if len(received) < produced:
            why = next(
                (
                    f"{n} died: {t.exception()!r}"
                    for n, t in (("relay", relay_task), ("consumer", consumer_task))
                    if t.done() and not t.cancelled()
                ),
                f"timeout {args.timeout:.0f}s",
            )
            partial = f"INCOMPLETE ({why}); "
        return [
            Row(
                backend,
                "outbox commit, in pipeline",
                produced,
                args.events,
                p.last_commit - p.started,
                p.txn_ms,
                f"latency = one {args.batch}-event txn",
            ),
            Row(
                backend,
                "relay: commit -> broker ack",
                len(acked),
                produced,
                last_ack - p.first_commit,
                [(acked[e] - p.committed[e]) * 1000 for e in acked],
                f"{len(recorder.batches)} sends, mean {mean_batch:.0f} msgs",
            ),
            Row(
                backend,
                "pipeline: commit -> consume",
                len(got),
                args.events,
                last_recv - p.first_commit,
                [(got[e] - p.committed[e]) * 1000 for e in got],
                partial + cost + f"drain {drain:.0f}/s; join {join_s:.1f}s untimed",
            ),
        ]
    finally:
        await stop_tasks(relay_task, consumer_task)
        await prod_bus.close()
        await cons_bus.close()
        await prod_engine.dispose()
        await cons_engine.dispose()


async def raw_aiokafka(
    backend: str, bootstrap: str, size: int, events: int, timeout_s: float
) -> list[Row]:
    """The ceiling: `events` messages of `size` bytes produced, then consumed, by aiokafka."""
    received: dict[int, float] = {}
    latencies: list[float] = []
    consumer = AIOKafkaConsumer(
        RAW_TOPIC,
        bootstrap_servers=bootstrap,
        group_id="bench-raw",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
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
        deadline = perf() + timeout_s
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
        note = (
            "" if done else f"TIMEOUT after {timeout_s:.0f}s; "
        ) + f"{size} B values; join {join_s:.1f}s untimed"
        return [
            Row(backend, "raw aiokafka: produce", len(futures), events, acked_at - start, [], ""),
            Row(
                backend,
                "raw aiokafka: send -> consume",
                len(received),
                events,
                last - start,
                latencies,
                note,
            ),
        ]
    finally:
        await producer.stop()
        await consumer.stop()


async def ensure_raw_topics(bootstrap: str) -> None:
    config = BusConfig(bootstrap=bootstrap, client_id="bench-admin", partitions=PARTITIONS)
    await ensure_topics(config, (*ALL_TOPICS, RAW_TOPIC))


async def run_backend(backend: str, args: argparse.Namespace, size: int) -> list[Row]:
    broker = EmbeddedBroker(log_path=args.broker_log).start()
    try:
        await ensure_raw_topics(broker.bootstrap)
        async with databases(backend, ["alone", "producer", "consumer"]) as urls:
            rows = [await producer_alone(backend, urls["alone"], args)]
            rows += await platform_path(backend, urls, broker, args)
        return rows + await raw_aiokafka(backend, broker.bootstrap, size, args.events, args.timeout)
    finally:
        broker.stop()


def options(ap: argparse.ArgumentParser) -> None:
    add_backends(ap)
    ap.add_argument("--events", type=int, default=20000, help="events per path (default 20000)")
    ap.add_argument("--batch", type=int, default=100, help="events per producing transaction")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait per path")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="pace the pipeline producer to this many events/s (0: full speed)",
    )
    ap.add_argument(
        "--linger",
        type=float,
        default=None,
        help="the consumer's linger in ms (default: the ConsumerRunner's)",
    )


async def run(args: argparse.Namespace) -> int:
    out = Output(args.results)
    size = envelope_size()
    pg = await server_version() if "postgresql" in args.backends else "-"
    info = machine(**versions(aiokafka, sqlalchemy), postgresql=pg)
    out("dropship event pipeline benchmark", "  " + "  ".join(f"{k}={v}" for k, v in info.items()))
    out(
        f"  events={args.events} batch={args.batch} partitions={PARTITIONS} "
        f"envelope={size} B timeout={args.timeout:.0f}s backends={','.join(args.backends)} "
        f"rate={'full speed' if args.rate <= 0 else f'{args.rate:g}/s'}",
        "  one process, one event loop: producer, relay and consumer share a core",
        "",
    )
    rows: list[Row] = []
    for backend in args.backends:
        t0 = perf()
        backend_rows = await run_backend(backend, args, size)
        rows += backend_rows
        table(out, backend_rows)
        out(f"  ({backend} run took {perf() - t0:.1f}s incl. broker start and group joins)", "")
    out("* = fewer events than expected (timeout); latency percentiles are nearest-rank")
    if args.json:
        out.json(info, [r.summary() for r in rows])
    out.save()
    return 0


SCENARIO = Scenario("pipeline", __doc__ or "", options, run)
