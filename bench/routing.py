"""Supplier routing benchmark: order-placed consumed -> supplier order sent -> supplier-confirmed.

    python -m deploy.testenv -- .venv/bin/python bench/routing.py

Per backend (SQLite, and PostgreSQL under deploy.testenv) the supplier service runs as
deployed (by default one uvicorn worker: consumer, dispatcher, webhooks and outbox relay
in one process; `--workers N` runs N replicas sharing the consumer group) against the
supplier simulator (its own process, 20 ms answer latency) and a fresh tansu broker.
`order-placed` events are published on a fixed timetable (open model) and latency runs
from each event's scheduled publish time to the last `supplier-confirmed` of its order
reaching a consumer here. Prints figures, asserts nothing. See bench/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import random
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiokafka
import asyncpg
import fastapi
import httpx
import sqlalchemy
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import select

if __package__ in (None, ""):  # run as a script: make `bench.*` importable as with -m
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    ASGI_LEAVES,
    DB_LEAVES,
    LIBRARIES,
    TICK,
    UvicornApp,
    busy_cores,
    fmt_ms,
    leaf_label,
    machine_busy_ticks,
    paced,
    percentile,
    perf,
    postmaster_pid,
    proc_ticks,
    py_spy,
    read_collapsed,
)
from bench.pipeline import databases, server_version, stop_tasks, wait_until
from services.supplier.app import MIGRATIONS
from services.supplier.store import aware
from services.supplier.tables import routing_request, supplier_order
from shared import tracing
from shared.bus import ALL_TOPICS, BusConfig, ensure_topics
from shared.crypto import generate_key
from shared.db import create_engine, migrate
from shared.events import OrderPlaced, PlacedLine, new_envelope
from shared.infra import EmbeddedBroker

API_KEY = "dev-api-key"
PLACED = "order-placed"
CONFIRMED = "supplier-confirmed"
FAILED = "order-routing-failed"
PARTITIONS = 8
GOAL_P99_MS = 250.0

# Two simulated suppliers. SKUs 1-3 go to alpha, 4-6 to beta (3 and 4 are offered by both,
# each cheaper at one), so an order with lines on both sides is split in two supplier orders.
SUPPLIERS: dict[str, dict[str, str]] = {
    "bench-alpha": {"RT-1": "5.00", "RT-2": "6.00", "RT-3": "7.00", "RT-4": "9.50"},
    "bench-beta": {"RT-3": "9.50", "RT-4": "7.00", "RT-5": "6.00", "RT-6": "5.00"},
}
SKUS = sorted({sku for offers in SUPPLIERS.values() for sku in offers})
STOCK = 1_000_000
UNIT_PRICE = Decimal("19.99")


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: one arrival rate on one backend."""

    backend: str
    load: str
    offered: float
    orders: int  # order-placed events published
    sent_per_s: float
    confirmed: int  # orders whose every line was confirmed within the timeout
    confirmed_per_s: float
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    unconfirmed: int = 0
    routing_failed: int = 0
    supplier_orders: int = 0  # supplier-confirmed events for these orders
    cpu: dict[str, float] = field(default_factory=dict)  # cores used during the phase
    stages: dict[str, dict[str, float | None]] = field(default_factory=dict)
    note: str = ""

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        for k, v in data.items():
            if isinstance(v, float):
                data[k] = None if math.isinf(v) else round(v, 2)
        data["cpu"] = {k: round(v, 3) for k, v in self.cpu.items()}
        data["stages"] = {
            name: {q: None if v is None else round(v, 2) for q, v in qs.items()}
            for name, qs in self.stages.items()
        }
        return data


def print_table(rows: list[Row], timeout: float) -> None:
    header = (
        f"{'load':<18}{'offered':>8}{'sent/s':>8}{'orders':>7}{'confirmed':>10}{'conf/s':>8}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'unconf':>7}"
        f"{'svc cpu':>8}{'sim cpu':>8}{'broker':>7}{'db cpu':>7}{'other':>6}{'svc ms/ord':>11}"
        "  note"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        svc = r.cpu.get("supplier", 0.0)
        per = f"{svc * r.cpu.get('wall', 0.0) / r.confirmed * 1000:.2f}" if r.confirmed else "-"
        db = r.cpu.get("db")
        print(
            f"{r.load:<18}{f'{r.offered:g}/s':>8}{r.sent_per_s:>8.0f}{r.orders:>7}"
            f"{r.confirmed:>10}{r.confirmed_per_s:>8.0f}"
            f"{fmt_ms(r.p50_ms, timeout):>8}{fmt_ms(r.p90_ms, timeout):>8}"
            f"{fmt_ms(r.p99_ms, timeout):>8}{fmt_ms(r.max_ms, timeout):>8}{r.unconfirmed:>7}"
            f"{svc:>8.2f}{r.cpu.get('simulator', 0.0):>8.2f}{r.cpu.get('broker', 0.0):>7.2f}"
            f"{'-' if db is None else f'{db:.2f}':>7}{r.cpu.get('other', 0.0):>6.2f}{per:>11}"
            f"  {r.note}"
        )
    print()


STAGES = (
    ("placed->consumed", "publish to the routing handler running (Kafka, consumer batching)"),
    ("consumed->sent", "routing txn, dispatcher claim, supplier HTTP call (20 ms), outcome txn"),
    ("sent->confirmed", "simulator decision delay, its callback, webhook until on_callback"),
    ("confirmed->seen", "webhook commit, outbox relay, Kafka, consumer here"),
)


def print_stages(rows: list[Row]) -> None:
    """Where the latency goes, per stage of each order's last-confirmed supplier order."""
    if not any(r.stages for r in rows):
        return
    header = f"{'load':<18}" + "".join(f"{name + ' p50/p99':>30}" for name, _ in STAGES)
    print(header)
    print("-" * len(header))
    for r in rows:
        cells = []
        for name, _ in STAGES:
            qs = r.stages.get(name, {})
            p50, p99 = qs.get("p50"), qs.get("p99")
            cell = "-" if p50 is None or p99 is None else f"{p50:.1f} / {p99:.1f} ms"
            cells.append(f"{cell:>30}")
        print(f"{r.load:<18}" + "".join(cells))
    for name, meaning in STAGES:
        print(f"  {name}: {meaning}")
    print()


# --------------------------------------------------------------------------- processes


@dataclass
class Service(UvicornApp):
    """One uvicorn process with a single worker: the app runs in the process itself."""

    health: str = "/readyz"

    async def wait_ready(self, within: float = 90.0) -> None:
        deadline = perf() + within
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
                try:
                    if (await client.get(self.base + self.health)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if perf() > deadline:
                    raise RuntimeError(
                        f"{self.name} not ready after {within:.0f}s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.2)
        assert self.proc is not None
        self.worker_pids = [self.proc.pid]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class CpuMeter:
    """Cores used during a phase by named processes, PostgreSQL, this bench and the rest."""

    def __init__(self, pids: dict[str, int | None], db_root: int | None) -> None:
        self.pids = pids
        self.db_root = db_root

    def __enter__(self) -> CpuMeter:
        self.t0 = perf()
        self.before = proc_ticks()
        self.busy0 = machine_busy_ticks()
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        return self

    def __exit__(self, *exc: object) -> None:
        wall = perf() - self.t0
        after = proc_ticks()
        busy = (machine_busy_ticks() - self.busy0) / TICK
        me = resource.getrusage(resource.RUSAGE_SELF)

        def used(pid: int | None, index: int = 2) -> float:
            if pid is None or pid not in after:
                return 0.0
            return max(0, after[pid][index] - self.before.get(pid, ("", 0, 0, 0))[index]) / TICK

        def tree(pid: int | None, index: int = 2) -> float:
            """A process and its direct children (uvicorn's workers)."""
            kids = [p for p, (_, ppid, *_) in after.items() if pid is not None and ppid == pid]
            return used(pid, index) + sum(used(k, index) for k in kids)

        out = {name: tree(pid) / wall for name, pid in self.pids.items()}
        supplier_s = tree(self.pids.get("supplier"))
        self.supplier_sys = tree(self.pids.get("supplier"), 3) / supplier_s if supplier_s else 0.0
        if self.db_root is not None:
            root = self.db_root
            db = [p for p, (_, ppid, *_) in after.items() if p == root or ppid == root]
            out["db"] = sum(used(p) for p in db) / wall
        out["bench"] = (
            (me.ru_utime + me.ru_stime) - (self.self0.ru_utime + self.self0.ru_stime)
        ) / wall
        out["other"] = max(0.0, busy / wall - sum(out.values()))
        out["wall"] = wall
        self.cores = out


# --------------------------------------------------------------------------- orders


@dataclass
class Order:
    order_id: str
    key: bytes
    value: bytes
    line_ids: frozenset[str]
    scheduled: float = 0.0  # perf_counter time it was due to be published


def make_orders(run: str, count: int, rng: random.Random) -> list[Order]:
    """Envelopes built before the clock starts: 1-3 distinct SKUs, quantity 1-2."""
    out = []
    for i in range(count):
        order_id = f"ord-{run}-{i:06d}"
        skus = rng.sample(SKUS, rng.choice((1, 1, 1, 2, 2, 3)))
        lines = [
            PlacedLine(line_id=f"l{n}", sku=sku, quantity=rng.randint(1, 2), unit_price=UNIT_PRICE)
            for n, sku in enumerate(skus, start=1)
        ]
        data = OrderPlaced(
            order_id=order_id,
            channel="storefront",
            external_id=f"ext-{run}-{i}",
            currency="USD",
            lines=lines,
            shipping_country="US",
            shipping_postal_code=f"{10000 + i % 90000:05d}",
            placed_at=datetime.now(UTC),
        )
        envelope = new_envelope(data, traceparent=tracing.new_traceparent())
        out.append(
            Order(
                order_id, envelope.key, envelope.to_bytes(), frozenset(ln.line_id for ln in lines)
            )
        )
    return out


class Confirmations:
    """Consumes supplier-confirmed and order-routing-failed; notes when each order is done."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            CONFIRMED,
            FAILED,
            bootstrap_servers=bootstrap,
            group_id=f"bench-routing-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            fetch_max_wait_ms=10,  # the measuring end should add little of its own
        )
        self.waiting: dict[str, set[str]] = {}  # order id -> line ids not yet confirmed
        self.done: dict[str, float] = {}  # order id -> when its last line was confirmed
        self.failed: dict[str, float] = {}
        self.events: Counter[str] = Counter()  # supplier-confirmed events per order
        self.seen_at: dict[str, float] = {}  # order id -> last supplier-confirmed seen
        self.open: set[str] = set()  # expected orders neither confirmed nor failed yet

    def expect(self, orders: list[Order]) -> None:
        for o in orders:
            self.waiting[o.order_id] = set(o.line_ids)
            self.open.add(o.order_id)

    def settled(self, ids: set[str]) -> bool:
        return self.open.isdisjoint(ids)

    async def start(self, within: float = 60.0) -> float:
        """Join the group and hold partitions (~3 s on tansu); returns the seconds it took."""
        t0 = perf()
        await self.consumer.start()
        while not self.consumer.assignment():
            await self.consumer.getmany(timeout_ms=200)
            if perf() - t0 > within:
                raise RuntimeError(f"bench consumer got no partitions within {within:.0f} s")
        return perf() - t0

    async def run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            now = perf()
            for messages in batches.values():
                for m in messages:
                    data = json.loads(m.value)["data"]
                    order_id = data["order_id"]
                    if m.topic == FAILED:
                        self.failed.setdefault(order_id, now)
                        self.open.discard(order_id)
                        continue
                    self.events[order_id] += 1
                    self.seen_at[order_id] = now
                    left = self.waiting.get(order_id)
                    if left is None:
                        continue
                    left.difference_update(ln["line_id"] for ln in data["lines"])
                    if not left:
                        self.done.setdefault(order_id, now)
                        self.open.discard(order_id)

    async def stop(self) -> None:
        await self.consumer.stop()


async def publish(producer: AIOKafkaProducer, orders: list[Order], rate: float) -> list[float]:
    """Send order i at start + i/rate whatever happened before; returns lateness per send (s)."""
    late: list[float] = []
    futures = []
    async for i, due in paced(len(orders), rate):
        o = orders[i]
        o.scheduled = due
        late.append(perf() - due)
        futures.append(await producer.send(PLACED, o.value, key=o.key))
    await asyncio.gather(*futures)
    return late


# --------------------------------------------------------------------------- set-up


async def seed(supplier: Service, simulator: Service, latency_ms: float) -> None:
    """Two suppliers pointing at the simulator, ample stock; each answers after latency_ms."""
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(headers=headers, timeout=10.0) as client:
        for key, offers in SUPPLIERS.items():
            control = {"latency_ms": latency_ms, "ship_after_s": 3600.0}
            r = await client.put(f"{simulator.base}/_control/{key}", json=control)
            r.raise_for_status()
            body = {
                "name": f"Bench {key}",
                "supplier_key": key,
                "api_base_url": f"{simulator.base}/{key}",
                "credentials": {"api_key": f"sim-key-{key}", "webhook_secret": f"sim-secret-{key}"},
                "priority": 5,
                "ship_sla_hours": 48.0,
            }
            r = await client.post(f"{supplier.base}/v1/suppliers", json=body)
            r.raise_for_status()
            items = [
                {
                    "sku": sku,
                    "supplier_sku": f"{key.split('-')[1].upper()}-{sku}",
                    "unit_cost": cost,
                    "currency": "USD",
                    "stock": STOCK,
                    "lead_time_hours": 48,
                }
                for sku, cost in offers.items()
            ]
            r = await client.put(
                f"{supplier.base}/v1/suppliers/{r.json()['id']}/offers", json=items
            )
            r.raise_for_status()


# --------------------------------------------------------------------------- one phase


class WaitSampler:
    """Samples pg_stat_activity of the service's database every 100 ms (PostgreSQL only).

    Per phase: how many of the service's connections were running a statement, waiting
    on a lock, or idle inside an open transaction, on average, and which statements
    waited on locks most often.
    """

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        self.task: asyncio.Task[None] | None = None
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.states: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()

    async def start(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        self.task = asyncio.create_task(self._run(conn), name="bench-pg-waits")

    async def _run(self, conn: asyncpg.Connection) -> None:
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event, left(query, 60) AS query "
                    "FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                self.samples += 1
                for r in rows:
                    if r["wait_event_type"] == "Lock":
                        self.states["lock wait"] += 1
                        self.waiting[" ".join(r["query"].split())] += 1
                    elif r["state"] == "active":
                        self.states["active"] += 1
                    elif r["state"] == "idle in transaction":
                        self.states["idle in txn"] += 1
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        n = self.samples
        parts = [f"{k} {self.states[k] / n:.1f}" for k in ("active", "lock wait", "idle in txn")]
        line = "pg connections (mean): " + ", ".join(parts)
        total = sum(self.waiting.values())
        if total:
            top = "; ".join(f"{100 * c / total:.0f}% {q}" for q, c in self.waiting.most_common(3))
            line += f"; lock waits on: {top}"
        return line

    async def stop(self) -> None:
        if self.task is not None:
            await stop_tasks(self.task)


@dataclass
class Rig:
    """What every phase of one backend shares."""

    backend: str
    producer: AIOKafkaProducer
    seen: Confirmations
    pids: dict[str, int | None]  # processes whose CPU is reported
    db_root: int | None  # the PostgreSQL postmaster (None on SQLite)
    waits: WaitSampler | None
    args: argparse.Namespace
    rng: random.Random


@dataclass
class Phase:
    load: str
    rate: float
    orders: list[Order]
    row: Row | None = None
    waits: str = ""


async def run_phase(
    rig: Rig,
    load: str,
    rate: float,
    seconds: float,
    settle_s: float | None = None,
    on_start: Callable[[], object] | None = None,
) -> Phase:
    """Publish `rate`/s for `seconds`, wait for confirmations; one row of the table."""
    args, seen = rig.args, rig.seen
    run = f"{load.split()[0][:4]}{rate:g}-{uuid.uuid4().hex[:4]}"
    orders = make_orders(run, max(1, round(rate * seconds)), rig.rng)
    # let the previous phase's stragglers through first (at most --drain seconds), then pause
    if seen.open:
        await wait_until(lambda: not seen.open, perf() + args.drain, 0.05)
    left = len(seen.open)
    await asyncio.sleep(args.pause)
    seen.expect(orders)
    if on_start is not None:
        on_start()
    if rig.waits is not None:
        rig.waits.reset()
    with CpuMeter(rig.pids, rig.db_root) as meter:
        late = await publish(rig.producer, orders, rate)
        sent_span = max(perf() - orders[0].scheduled, 1e-9)
        deadline = orders[-1].scheduled + (settle_s or args.timeout)
        ids = {o.order_id for o in orders}
        await wait_until(lambda: seen.settled(ids), deadline, 0.02)
    done = {i: seen.done[i] for i in ids if i in seen.done}
    latencies = [
        (done[o.order_id] - o.scheduled) * 1000 if o.order_id in done else math.inf for o in orders
    ]
    failed = sum(1 for i in ids if i in seen.failed and i not in done)
    last = max(done.values(), default=orders[0].scheduled)
    span = last - orders[0].scheduled
    confirmed_per_s = len(done) / span if span > 0 else 0.0
    supplier_orders = sum(seen.events[i] for i in ids)
    late_p99 = (percentile(late, 99) or 0.0) * 1000
    note = [f"late p99 {late_p99:.1f} ms"]
    if left:
        note.insert(0, f"STARTED WITH {left} EARLIER ORDERS UNSETTLED")
    if late_p99 > 5:
        note.insert(0, "PUBLISHER LAGGED")
    if confirmed_per_s < 0.97 * rate:
        note.insert(0, "BELOW OFFERED")
    if done:
        split = sum(seen.events[i] for i in done) / len(done)
        note.append(f"{split:.2f} supplier orders/confirmed order")
    note.append(f"svc {100 * meter.supplier_sys:.0f}% sys")
    if failed:
        note.append(f"{failed} routing failed")
    row = Row(
        rig.backend,
        load,
        rate,
        len(orders),
        len(orders) / sent_span,
        len(done),
        confirmed_per_s,
        percentile(latencies, 50),
        percentile(latencies, 90),
        percentile(latencies, 99),
        percentile(latencies, 100),
        len(orders) - len(done),
        failed,
        supplier_orders,
        meter.cores,
        note="; ".join(note),
    )
    return Phase(load, rate, orders, row, rig.waits.summary() if rig.waits else "")


async def stage_breakdown(url: str, phases: list[Phase], seen: Confirmations, clock: Any) -> None:
    """Per-stage latency from the service's own timestamps (read once the service stopped)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            requests = {
                r.order_id: aware(r.received_at)
                for r in await conn.execute(
                    select(routing_request.c.order_id, routing_request.c.received_at)
                )
            }
            orders: dict[str, list[Any]] = {}
            for r in await conn.execute(
                select(
                    supplier_order.c.order_id,
                    supplier_order.c.sent_at,
                    supplier_order.c.confirmed_at,
                )
            ):
                orders.setdefault(r.order_id, []).append(r)
    finally:
        await engine.dispose()

    def ms(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else (b - a).total_seconds() * 1000

    for phase in phases:
        assert phase.row is not None
        stages: dict[str, list[float]] = {name: [] for name, _ in STAGES}
        for o in phase.orders:
            sos = [s for s in orders.get(o.order_id, []) if s.confirmed_at is not None]
            if o.order_id not in seen.done or not sos:
                continue
            last = max(sos, key=lambda s: aware(s.confirmed_at))
            confirmed = aware(last.confirmed_at)
            spans = (
                ms(clock(o.scheduled), requests.get(o.order_id)),
                ms(requests.get(o.order_id), aware(last.sent_at)),
                ms(aware(last.sent_at), confirmed),
                ms(confirmed, clock(seen.seen_at[o.order_id])),
            )
            for (name, _), value in zip(STAGES, spans, strict=True):
                if value is not None:
                    stages[name].append(value)
        phase.row.stages = {
            name: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for name, v in stages.items()
        }


# --------------------------------------------------------------------------- profiling


# What a sample of the supplier service was doing: the first COMPONENTS rule whose marker
# appears anywhere on the stack. SQLAlchemy's async layer runs statements in greenlets
# whose stacks start at the sync Session/Connection (the coroutine above is not visible),
# so most database samples cannot be charged to a component: they form their own group,
# split by the leaf-most driver/SQLAlchemy frame. `db` in a component's line is the share
# of its samples that were inside SQLAlchemy or the driver while its frames were visible.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("outbox relay (select, publish, mark)", ("shared/outbox.py",)),
    (
        "webhook: supplier callback (verify, dedupe, on_callback)",
        ("services/supplier/webhooks.py",),
    ),
    ("dispatcher: record_send (outcome txn)", ("record_send (",)),
    (
        "dispatcher: supplier HTTP call (adapter, httpx)",
        ("services/supplier/adapter.py", "httpx/", "httpcore/", "aiolimiter/", "tenacity/"),
    ),
    ("SLA clock", ("sla_clock (", "scan_sla (")),
    ("dispatcher: claim + build jobs", ("services/supplier/dispatcher.py",)),
    ("consumer: order-placed handler (routing)", ("services/supplier/handlers.py",)),
    ("consumer: loop, envelope parse, inbox", ("shared/consumer.py", "aiokafka/consumer/")),
    ("unit of work (ours, caller hidden)", ("shared/uow.py", "services/supplier/store.py")),
    ("aiokafka producer / client", ("aiokafka/",)),
    ("credentials unseal (AES-GCM)", ("cryptography/", "shared/crypto.py")),
)
DB_MARKERS = ("sqlalchemy/", "asyncpg/", "aiosqlite/", "greenlet", "sqlite3/")
DB_DRIVER_LEAVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("db: aiosqlite thread / sqlite3", ("aiosqlite/", "sqlite3/")),
    *DB_LEAVES,
)
SUPPLIER_LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aiosqlite, sqlite3", ("aiosqlite/", "sqlite3/")),
    ("httpx, httpcore, h11", ("httpx/", "httpcore/", "h11/")),
    *LIBRARIES,
)


def summarise_supplier_profile(path: Path, top: int = 15) -> list[str]:
    """Percentages from py-spy's collapsed stacks (`--format raw`) of the supplier service."""
    stacks, total = read_collapsed(path)
    if not total:
        return ["  (no samples)"]
    components: Counter[str] = Counter()
    in_db: Counter[str] = Counter()
    hidden_db: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        joined = ";".join(frames)
        db = any(k in joined for k in DB_MARKERS)
        name = next((n for n, keys in COMPONENTS if any(k in joined for k in keys)), None)
        if name is None and db:
            name = "db, caller hidden (greenlet / driver thread)"
            hidden_db[leaf_label(frames, DB_DRIVER_LEAVES) or "db: other"] += count
        elif name is None:
            name = (leaf_label(frames, ASGI_LEAVES) if frames else None) or "other"
            if name.startswith("ASGI"):
                name = f"webhook request path: {name.removeprefix('ASGI: ')}"
        components[name] += count
        if db:
            in_db[name] += count
        libraries[(leaf_label(frames, SUPPLIER_LIBRARIES) or "other") if frames else "native"] += (
            count
        )
        leaves[frames[-1] if frames else "(native)"] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    out = [f"  {total} samples while the service held the GIL (its Python CPU time)", ""]
    out.append(
        "  by component (first matching rule on the stack; db = of which in SQLAlchemy/driver):"
    )
    for name, n in components.most_common():
        extra = (
            f"   (db {pct(in_db[name]).strip()})" if in_db[name] and "hidden" not in name else ""
        )
        out.append(f"    {pct(n)}  {name}{extra}")
        if "hidden" in name:
            out += [f"             {pct(m)}  {leaf}" for leaf, m in hidden_db.most_common()]
    out += ["", "  by library (leaf-most frame in a known package):"]
    out += [f"    {pct(n)}  {name}" for name, n in libraries.most_common()]
    out += ["", f"  top {top} functions by self time:"]
    out += [f"    {pct(n)}  {frame[:110]}" for frame, n in leaves.most_common(top)]
    return out


async def record_profile(pid: int, seconds: int, out: Path, delay: float) -> None:
    spy = py_spy()
    if spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    await asyncio.sleep(delay)
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100"]
    cmd += ["--gil", "--format", "raw", "--output", str(out), "--subprocesses"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")


# --------------------------------------------------------------------------- diagnostics


def log_summary(path: Path, top: int = 6) -> list[str]:
    """WARNING+ lines of a service's JSON log, counted by message (errors included)."""
    counts: Counter[str] = Counter()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # uvicorn's own plain-text lines
            if line.startswith(("WARNING", "ERROR", "CRITICAL")):
                counts[" ".join(line.split())[:150]] += 1
            continue
        if not isinstance(rec, dict):
            continue
        level = str(rec.get("level") or rec.get("levelname") or "").upper()
        if level in ("WARNING", "ERROR", "CRITICAL"):
            keys = ("error", "error_type", "exc_info", "exception")
            detail = str(next((rec[k] for k in keys if rec.get(k)), ""))
            detail = detail.splitlines()[-1] if detail else ""
            counts[f"{level} {rec.get('message', '')} {detail}"[:150]] += 1
    return [f"{n:>6} x {msg}" for msg, n in counts.most_common(top)]


async def pg_stats(url: str) -> str:
    """Deadlocks, rollbacks and commits PostgreSQL counted in the service's database."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        row = await conn.fetchrow(
            "SELECT deadlocks, xact_rollback, xact_commit FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return (
        f"deadlocks {row['deadlocks']}, rollbacks {row['xact_rollback']}, "
        f"commits {row['xact_commit']}"
    )


# --------------------------------------------------------------------------- driver


async def run_backend(
    backend: str, args: argparse.Namespace
) -> tuple[list[Row], list[str], list[str]]:
    broker = EmbeddedBroker(log_path=args.broker_log).start()
    server = os.environ.get("DROPSHIP_TEST_PG_URL", "")
    db_root = postmaster_pid(server) if backend == "postgresql" and server else None
    notes: list[str] = []
    profile_lines: list[str] = []
    phases: list[Phase] = []
    rng = random.Random(f"routing:{backend}")
    try:
        await ensure_topics(
            BusConfig(bootstrap=broker.bootstrap, client_id="bench-admin", partitions=PARTITIONS),
            ALL_TOPICS,
        )
        with tempfile.TemporaryDirectory(prefix="dropship-routing-") as tmp:
            async with databases(backend, ["supplier"]) as urls:
                url = urls["supplier"]
                await asyncio.to_thread(migrate, MIGRATIONS, url)
                base_env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
                supplier = Service(
                    "supplier service",
                    "services.supplier.app:create_app",
                    {},
                    args.workers,
                    Path(tmp) / "supplier.log",
                )
                simulator = Service(
                    "simulator",
                    "rigs.supplier_simulator.app:create_app",
                    {
                        **base_env,
                        "DROPSHIP_SIMULATOR_SEED": "1",
                        "DROPSHIP_LOG_LEVEL": "WARNING",
                        "DROPSHIP_SIMULATOR_TRACKING_URL": (
                            f"http://127.0.0.1:{supplier.port}/v1/webhooks/tracking"
                        ),
                    },
                    1,
                    Path(tmp) / "simulator.log",
                    health="/healthz",
                )
                supplier.env = {
                    **base_env,
                    "DROPSHIP_SUPPLIER_DATABASE_URL": url,
                    "DROPSHIP_SUPPLIER_PORT": str(supplier.port),
                    "DROPSHIP_SUPPLIER_PUBLIC_URL": supplier.base,
                    "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
                    "DROPSHIP_PII_KEY": generate_key(),
                    "DROPSHIP_MIGRATE_ON_START": "false",
                    "DROPSHIP_LOG_LEVEL": "WARNING",
                    "DROPSHIP_DATA_DIR": tmp,
                }
                seen = Confirmations(broker.bootstrap)
                producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
                consume: asyncio.Task[None] | None = None
                waits: WaitSampler | None = None
                try:
                    t0 = perf()
                    simulator.start()
                    supplier.start()
                    join, *_ = await asyncio.gather(
                        seen.start(),
                        simulator.wait_ready(),
                        supplier.wait_ready(),
                        producer.start(),
                    )
                    await seed(supplier, simulator, args.latency_ms)
                    consume = asyncio.create_task(seen.run(), name="bench-confirmations")
                    notes.append(
                        f"  ready in {perf() - t0:.1f}s (bench consumer joined in {join:.1f}s); "
                        f"supplier pid {supplier.pid}, simulator pid {simulator.pid}"
                    )
                    if backend == "postgresql":
                        waits = WaitSampler(url)
                        await waits.start()
                    rig = Rig(
                        backend,
                        producer,
                        seen,
                        {
                            "supplier": supplier.pid,
                            "simulator": simulator.pid,
                            "broker": broker.process.pid if broker.process else None,
                        },
                        db_root,
                        waits,
                        args,
                        rng,
                    )
                    # warm-up: the service's consumer joins its group (~3 s), pools fill
                    t1 = perf()
                    warm = await run_phase(
                        rig, "warm-up", args.warmup_rate, args.warmup, max(args.timeout, 20.0)
                    )
                    assert warm.row is not None
                    notes.append(
                        f"  warm-up {args.warmup_rate:g}/s x {args.warmup:g}s: "
                        f"{warm.row.confirmed}/{warm.row.orders} confirmed, settled "
                        f"{perf() - t1:.1f}s after its start (includes the service's group join)"
                    )
                    if not warm.row.confirmed:
                        raise RuntimeError("no order was confirmed during the warm-up")
                    for rate in args.rates:
                        phases.append(await run_phase(rig, f"open {rate:g}/s", rate, args.duration))
                    if args.profile is not None and backend in args.profile_backends:
                        rate = args.profile_rate or max(args.rates)
                        out = args.profile / f"routing-{backend}-supplier.folded"
                        spying: list[asyncio.Task[None]] = []

                        def spy() -> None:
                            job = record_profile(supplier.pid or 0, args.profile_seconds, out, 2.0)
                            spying.append(asyncio.create_task(job))

                        load = f"open {rate:g}/s+py-spy"
                        phase = await run_phase(
                            rig, load, rate, args.profile_seconds + 4, on_start=spy
                        )
                        await asyncio.gather(*spying)
                        phases.append(phase)
                        profile_lines = [
                            f"where the time goes: supplier service on {backend} at {rate:g}/s",
                            f"  py-spy record --pid {supplier.pid} --duration "
                            f"{args.profile_seconds} --rate 100 --gil --format raw -o {out}",
                            *summarise_supplier_profile(out),
                        ]
                    notes += [f"  {p.load}: {p.waits}" for p in phases if p.waits]
                except Exception:
                    for svc in (supplier, simulator):
                        print(f"--- {svc.name} log (tail) ---\n{svc.log_tail()}")
                    raise
                finally:
                    if consume is not None:
                        await stop_tasks(consume)
                    if waits is not None:
                        await waits.stop()
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    with contextlib.suppress(Exception):
                        await seen.stop()
                    supplier.stop()
                    simulator.stop()
                wall0, perf0 = time.time(), perf()

                def clock(t: float) -> datetime:
                    return datetime.fromtimestamp(wall0 + (t - perf0), UTC)

                await stage_breakdown(url, phases, seen, clock)
                if backend == "postgresql":
                    notes.append(f"  postgresql: {await pg_stats(url)}")
                for svc in (supplier, simulator):
                    lines = log_summary(svc.log)
                    if lines:
                        notes.append(f"  {svc.name} log, WARNING and above (top {len(lines)}):")
                        notes += [f"    {ln}" for ln in lines]
                if args.logs is not None:
                    for svc in (supplier, simulator):
                        name = f"routing-{backend}-{svc.log.name}"
                        (args.logs / name).write_bytes(svc.log.read_bytes())
    finally:
        broker.stop()
    return [p.row for p in phases if p.row is not None], notes, profile_lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_backends = "sqlite,postgresql" if os.environ.get("DROPSHIP_TEST_PG_URL") else "sqlite"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--backends",
        default=default_backends,
        help=f"comma-separated: sqlite,postgresql (default here: {default_backends})",
    )
    ap.add_argument(
        "--rates", default="100,200", help="open-model arrival rates, orders/s (default 100,200)"
    )
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per measured rate")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="supplier service uvicorn workers (replicas sharing the consumer group; default 1)",
    )
    ap.add_argument("--latency-ms", type=float, default=20.0, help="simulator answer latency")
    ap.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds after an order's scheduled time before it counts as not confirmed",
    )
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up (unreported)")
    ap.add_argument("--warmup-rate", type=float, default=50.0, help="warm-up orders/s")
    ap.add_argument("--pause", type=float, default=1.0, help="quiet seconds between rates")
    ap.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="at most this many seconds waiting for earlier orders to settle before a rate",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="after the runs, py-spy the supplier service at the highest rate; stacks go to DIR",
    )
    ap.add_argument("--profile-seconds", type=int, default=10, help="py-spy duration (default 10)")
    ap.add_argument(
        "--profile-rate", type=float, default=None, help="orders/s while profiling (default: max)"
    )
    ap.add_argument(
        "--profile-backends", default=None, help="backends to profile (default: all that run)"
    )
    ap.add_argument(
        "--logs", type=Path, default=None, metavar="DIR", help="keep the services' logs in DIR"
    )
    ap.add_argument("--json", action="store_true", help="also print one JSON line of results")
    ap.add_argument("--broker-log", type=Path, default=None, help="append tansu output here")
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in args.backends:
        if b not in ("sqlite", "postgresql"):
            ap.error(f"unknown backend {b!r}")
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        if py_spy() is None:
            ap.error("--profile needs py-spy (.venv/bin/pip install py-spy)")
    pb = args.profile_backends
    args.profile_backends = args.backends if pb is None else [b.strip() for b in pb.split(",")]
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    machine = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uvicorn": uvicorn.__version__,
        "fastapi": fastapi.__version__,
        "aiokafka": aiokafka.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "asyncpg": asyncpg.__version__,
        "postgresql": await server_version() if "postgresql" in args.backends else "-",
    }
    print("dropship supplier routing benchmark")
    print("  " + "  ".join(f"{k}={v}" for k, v in machine.items()))
    print(
        f"  rates={','.join(f'{r:g}' for r in args.rates)}/s duration={args.duration:g}s "
        f"simulator latency={args.latency_ms:g}ms suppliers={len(SUPPLIERS)} skus={len(SKUS)} "
        f"timeout={args.timeout:g}s partitions={PARTITIONS} backends={','.join(args.backends)}"
    )
    print(
        f"  one machine: supplier service ({args.workers} worker(s)), simulator, broker, "
        "database and this "
        "publisher share the cores; cpu columns are cores used"
    )
    background = await busy_cores(1.0)
    print(f"  other load before the start: {background:.2f} cores busy on an idle bench")
    if background > 0.2:
        print("  WARNING: the machine is not idle; every figure below will be lower")
    print()
    rows: list[Row] = []
    profiles: list[str] = []
    for backend in args.backends:
        t0 = perf()
        backend_rows, notes, profile = await run_backend(backend, args)
        rows += backend_rows
        print(f"== {backend}")
        print_table(backend_rows, args.timeout)
        print_stages(backend_rows)
        for line in notes:
            print(line)
        print(f"  ({backend} run took {perf() - t0:.1f}s incl. start-up and warm-up)\n")
        if profile:
            profiles += [*profile, ""]
    for line in profiles:
        print(line)
    top = max(args.rates)
    for r in rows:
        if r.offered == top and "py-spy" not in r.load:
            p99 = r.p99_ms if r.p99_ms is not None else math.inf
            verdict = "MET" if p99 <= GOAL_P99_MS else "MISSED"
            print(
                f"goal p99 <= {GOAL_P99_MS:.0f} ms at {top:g}/s on {r.backend}: {verdict} "
                f"(p99 {fmt_ms(r.p99_ms, args.timeout)} ms)"
            )
    noisy = max((r.cpu.get("other", 0.0) for r in rows), default=0.0)
    if noisy > 0.25:
        print(
            f"WARNING: other processes kept up to {noisy:.2f} cores busy during a run (column "
            "'other'): throughput and latency understate this machine"
        )
    print(
        "latency: from each order-placed event's scheduled publish time to the last "
        "supplier-confirmed of its order seen here; nearest-rank; unconfirmed count as slowest"
    )
    if args.json:
        print(json.dumps({"machine": machine, "results": [r.summary() for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
