"""Outbox relay cost: database statements and CPU per published event, at a paced rate.

    python -m deploy.testenv -- .venv/bin/python -m bench relay --events 2000 --rate 100

Per backend, one process: units of work commit one event each (as requests do), paced to
`--rate`/s, with an `OutboxRelay` publishing to an in-memory publisher (no broker, so the
figures are the relay's own). The same commits run first with no relay, so the relay's CPU
per event is the difference. Statements are counted per asyncio task on the engine (the
relay's task versus the committing task). `--linger-ms 0,2,5` adds runs that publish to an
embedded tansu broker with that producer linger: this process's and tansu's CPU per event,
events per send and commit -> acknowledgement latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness.cli import Scenario, add_backends, floats
from bench.harness.clock import paced, perf, stop_tasks, wait_until
from bench.harness.dbs import databases
from bench.harness.procs import Usage, snapshot
from bench.harness.report import Output
from bench.harness.stats import percentile
from bench.scenarios.pipeline import fresh_engine, order_placed
from shared.bus import BusConfig, KafkaBus, OutgoingMessage, Publisher
from shared.db import session_factory
from shared.infra import EmbeddedBroker
from shared.outbox import OutboxRelay
from shared.uow import UnitOfWork

RELAY_TASK = "bench-relay"


class Sink:
    """A publisher that counts, and passes on to `bus` if given (else: no broker)."""

    def __init__(self, bus: Publisher | None = None) -> None:
        self.bus = bus
        self.sent = 0
        self.batches = 0
        self.acked: dict[bytes, float] = {}

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.bus is not None:
            await self.bus.send_batch(messages)
            now = perf()
            for m in messages:
                self.acked.setdefault(m.key, now)
        self.sent += len(messages)
        self.batches += 1


def count_by_task(engine: AsyncEngine) -> Counter[str]:
    """Statements executed on `engine`, keyed by the name of the asyncio task running them."""
    counts: Counter[str] = Counter()

    def seen(*_: Any) -> None:
        task = asyncio.current_task()
        counts[task.get_name() if task else "-"] += 1

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    return counts


async def commit_paced(
    uow: Callable[[], UnitOfWork], events: int, rate: float
) -> dict[bytes, float]:
    """Commit one event per transaction; returns each event's key -> commit time."""
    committed: dict[bytes, float] = {}
    async for i, _ in paced(events, rate):
        async with uow() as u:
            key = u.emit(order_placed("relay", i)).key
            await u.commit()
        committed[key] = perf()
    return committed


async def phase(
    url: str, args: argparse.Namespace, *, relay: bool, bus: Publisher | None = None
) -> dict[str, float]:
    engine = await fresh_engine(url)
    sessions = session_factory(engine)
    counts = count_by_task(engine)
    sink = Sink(bus)
    extra = {"linger": args.relay_linger_ms / 1000} if args.relay_linger_ms else {}
    outbox = OutboxRelay("bench", engine, sessions, sink, **extra)
    tasks = [asyncio.create_task(outbox.run(), name=RELAY_TASK)] if relay else []
    try:
        if relay and not await wait_until(lambda: outbox.leading, perf() + 30):
            raise RuntimeError("the relay did not lead within 30 s")
        counts.clear()
        cpu0, t0 = time.process_time(), perf()
        committed = await commit_paced(
            lambda: UnitOfWork(
                sessions, on_commit=outbox.wake, notify_others=lambda: not outbox.leading
            ),
            args.events,
            args.rate,
        )
        if relay and not await wait_until(lambda: sink.sent >= args.events, perf() + 60):
            raise RuntimeError(f"published {sink.sent} of {args.events} within 60 s")
        cpu, seconds = time.process_time() - cpu0, perf() - t0
    finally:
        await stop_tasks(*tasks)
        await engine.dispose()
    relay_statements = counts[RELAY_TASK]
    return {
        "cpu_ms": cpu * 1000 / args.events,
        "seconds": seconds,
        "relay_statements": relay_statements / args.events,
        "commit_statements": (sum(counts.values()) - relay_statements) / args.events,
        "events_per_send": sink.sent / sink.batches if sink.batches else 0.0,
        "handed": getattr(outbox, "handed_published", 0) / args.events,  # 0 before lever 5
        "ack_p50_ms": percentile(
            [(sink.acked[k] - t) * 1000 for k, t in committed.items() if k in sink.acked], 50
        )
        or 0.0,
    }


def options(ap: argparse.ArgumentParser) -> None:
    add_backends(ap)
    ap.add_argument("--events", type=int, default=2000, help="events per phase (default 2000)")
    ap.add_argument("--rate", type=float, default=100.0, help="commits per second (default 100)")
    ap.add_argument(
        "--relay-linger-ms", type=float, default=0.0, help="the relay's `linger`, in ms"
    )
    ap.add_argument(
        "--linger-ms",
        type=floats,
        default=[],
        help="also publish to an embedded broker with each of these producer lingers",
    )


async def run(args: argparse.Namespace) -> int:
    out = Output(args.results)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    out(
        "dropship outbox relay cost",
        f"  events={args.events} rate={args.rate:g}/s, one event per transaction, relay "
        f"linger {args.relay_linger_ms:g} ms; load average at start {load}",
        "",
    )
    lines = []
    for backend in args.backends:
        async with databases(backend, ["alone", "relay"]) as urls:
            alone = await phase(urls["alone"], args, relay=False)
            with_relay = await phase(urls["relay"], args, relay=True)
        lines.append(
            f"{backend:<11}{alone['commit_statements']:>12.2f}{with_relay['relay_statements']:>12.2f}"
            f"{alone['cpu_ms']:>14.2f}{with_relay['cpu_ms']:>14.2f}"
            f"{with_relay['cpu_ms'] - alone['cpu_ms']:>14.2f}{with_relay['events_per_send']:>12.2f}"
            f"{with_relay['handed']:>9.0%}"
        )
    out.table(
        f"{'backend':<11}{'commit st/ev':>12}{'relay st/ev':>12}{'cpu ms/ev':>14}"
        f"{'+relay ms/ev':>14}{'relay ms/ev':>14}{'ev/send':>12}{'handed':>9}",
        lines,
    )
    if args.linger_ms:
        out.table(
            f"{'backend':<11}{'linger ms':>10}{'cpu ms/ev':>11}{'tansu ms/ev':>13}"
            f"{'ev/send':>9}{'ack p50 ms':>12}",
            [line async for line in linger_lines(args)],
        )
    out(f"  load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    out.save()
    return 0


async def linger_lines(args: argparse.Namespace) -> AsyncIterator[str]:
    broker = EmbeddedBroker().start()
    try:
        assert broker.process is not None
        tansu = broker.process.pid
        for backend in args.backends:
            for linger in args.linger_ms:
                config = BusConfig(broker.bootstrap, "bench-relay", linger_ms=int(linger))
                bus = KafkaBus(config)
                await bus.connect()
                try:
                    async with databases(backend, ["relay"]) as urls:
                        before = snapshot()
                        got = await phase(urls["relay"], args, relay=True, bus=bus)
                        used = Usage(before, snapshot())
                finally:
                    await bus.close()
                yield (
                    f"{backend:<11}{linger:>10g}{got['cpu_ms']:>11.2f}"
                    f"{used.cpu_s(tansu) * 1000 / args.events:>13.2f}"
                    f"{got['events_per_send']:>9.2f}{got['ack_p50_ms']:>12.1f}"
                )
    finally:
        broker.stop()


SCENARIO = Scenario("relay", __doc__ or "", options, run)
