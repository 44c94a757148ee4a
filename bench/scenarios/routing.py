"""Supplier routing: order-placed consumed -> supplier order sent -> supplier-confirmed.

    python -m deploy.testenv -- .venv/bin/python -m bench routing
    .venv/bin/python -m bench routing --rates 20,50 --duration 10     # sqlite only
    ... bench routing --lifecycle 0.2 --rates 10,20 --duration 15       # the whole lifecycle

Per backend the supplier service runs as deployed (`--workers N` uvicorn workers sharing
the consumer group) against the supplier simulator (its own process, 20 ms answer
latency) and a fresh tansu broker. `order-placed` events are published on a fixed
timetable (open model); latency runs from each event's scheduled publish time to the last
`supplier-confirmed` of its order reaching a consumer here. Goal: p99 <= 250 ms at the
highest rate. `--lifecycle S`: the simulator ships S seconds after confirming and the
carrier delivers S seconds later, so each supplier order also brings a dispatched callback
and two tracking updates; a phase then ends when the simulator has made every delivery,
and the cost columns cover the whole lifecycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import tempfile
import time
import uuid
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
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from bench.harness import cli, kafka, profile, report
from bench.harness.cli import Scenario
from bench.harness.clock import perf, wait_until
from bench.harness.dbs import WaitSampler, databases, db_root, pg_stats, server_version
from bench.harness.kafka import PARTITIONS, publish_paced
from bench.harness.procs import CpuMeter, UvicornApp, log_notes
from bench.harness.report import Output, Stages
from bench.harness.stats import fmt_ms, p50_p99, percentile, summary
from bench.harness.watch import Confirmations
from bench.scenarios._routing_rig import apps, contact_stub, costs
from services.supplier.app import MIGRATIONS
from services.supplier.tables import routing_request, supplier_order
from shared import tracing
from shared.bus import ALL_TOPICS
from shared.db import aware, create_engine, migrate
from shared.events import OrderPlaced, PlacedLine, new_envelope

API_KEY = "dev-api-key"
PLACED = "order-placed"
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
STAGES = (
    ("placed->consumed", "publish to the routing handler running (Kafka, consumer batching)"),
    ("consumed->sent", "routing txn, dispatcher claim, supplier HTTP call (20 ms), outcome txn"),
    ("sent->confirmed", "simulator decision delay, its callback, webhook until on_callback"),
    ("confirmed->seen", "webhook commit, outbox relay, Kafka, consumer here"),
)
# What a sample of the supplier service was doing: the first rule whose marker is anywhere
# on the stack; database samples whose caller is hidden get their own group.
COMPONENTS: profile.Rules = (
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
    ("unit of work (ours, caller hidden)", ("shared/uow.py", "services/supplier/store")),
    ("aiokafka producer / client", ("aiokafka/",)),
    ("credentials unseal (AES-GCM)", ("cryptography/", "shared/crypto.py")),
)


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
    latency: dict[str, float | None]  # placed -> confirmed, ms: p50, p90, p99, max
    unconfirmed: int = 0
    routing_failed: int = 0
    supplier_orders: int = 0  # supplier-confirmed events for these orders
    cpu: dict[str, float] = field(default_factory=dict)  # cores used during the phase
    stages: Stages = field(default_factory=dict)
    note: str = ""
    statements: float | None = None  # the supplier service's SQL round trips per order
    transactions: float | None = None  # its database transactions per order
    http: float | None = None  # HTTP requests it received per order (callbacks, tracking)
    load1: float = 0.0  # the machine's 1-minute load average at the end of the phase


def table(out: Output, rows: list[Row], timeout: float) -> None:
    def line(r: Row) -> str:
        svc, db = r.cpu.get("supplier", 0.0), r.cpu.get("db")
        per = f"{svc * r.cpu.get('wall', 0.0) / r.confirmed * 1000:.2f}" if r.confirmed else "-"
        stmts = "-" if r.statements is None else f"{r.statements:.1f}"
        txns = "-" if r.transactions is None else f"{r.transactions:.2f}"
        http = "-" if r.http is None else f"{r.http:.1f}"
        lat = "".join(f"{fmt_ms(v, timeout):>8}" for v in r.latency.values())
        return (
            f"{r.load:<18}{f'{r.offered:g}/s':>8}{r.sent_per_s:>8.0f}{r.orders:>7}"
            f"{r.confirmed:>10}{r.confirmed_per_s:>8.0f}{lat}{r.unconfirmed:>7}"
            f"{svc:>8.2f}{r.cpu.get('simulator', 0.0):>8.2f}{r.cpu.get('broker', 0.0):>7.2f}"
            f"{'-' if db is None else f'{db:.2f}':>7}{r.cpu.get('other', 0.0):>6.2f}{per:>11}"
            f"{stmts:>10}{txns:>9}{http:>9}{r.load1:>6.2f}  {r.note}"
        )

    out.table(
        f"{'load':<18}{'offered':>8}{'sent/s':>8}{'orders':>7}{'confirmed':>10}{'conf/s':>8}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'unconf':>7}"
        f"{'svc cpu':>8}{'sim cpu':>8}{'broker':>7}{'db cpu':>7}{'other':>6}{'svc ms/ord':>11}"
        f"{'stmts/ord':>10}{'txns/ord':>9}{'http/ord':>9}{'load':>6}  note",
        map(line, rows),
    )


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
        skus = rng.sample(SKUS, rng.choice((1, 1, 1, 2, 2, 3)))
        lines = [
            PlacedLine(line_id=f"l{n}", sku=sku, quantity=rng.randint(1, 2), unit_price=UNIT_PRICE)
            for n, sku in enumerate(skus, start=1)
        ]
        data = OrderPlaced(
            order_id=f"ord-{run}-{i:06d}",
            channel="storefront",
            external_id=f"ext-{run}-{i}",
            currency="USD",
            lines=lines,
            shipping_country="US",
            shipping_postal_code=f"{10000 + i % 90000:05d}",
            placed_at=datetime.now(UTC),
        )
        env = new_envelope(data, traceparent=tracing.new_traceparent())
        ids = frozenset(ln.line_id for ln in lines)
        out.append(Order(data.order_id, env.key, env.to_bytes(), ids))
    return out


async def seed(
    supplier: UvicornApp, simulator: UvicornApp, latency_ms: float, lifecycle: float | None
) -> None:
    """Two suppliers pointing at the simulator, ample stock; each answers after latency_ms
    (and with `lifecycle`, ships and delivers that many seconds apart)."""
    async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=10.0) as client:
        for key, offers in SUPPLIERS.items():
            control: dict[str, float] = {"latency_ms": latency_ms, "ship_after_s": 3600.0}
            if lifecycle is not None:
                control |= {"ship_after_s": lifecycle, "deliver_after_s": lifecycle}
            (await client.put(f"{simulator.base}/_control/{key}", json=control)).raise_for_status()
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
            prefix = key.split("-")[1].upper()
            items = [
                {"sku": sku, "supplier_sku": f"{prefix}-{sku}", "unit_cost": cost,
                 "currency": "USD", "stock": STOCK, "lead_time_hours": 48}
                for sku, cost in offers.items()
            ]  # fmt: skip
            url = f"{supplier.base}/v1/suppliers/{r.json()['id']}/offers"
            (await client.put(url, json=items)).raise_for_status()


@dataclass
class Rig:
    """What every phase of one backend shares."""

    backend: str
    producer: AIOKafkaProducer
    seen: Confirmations
    pids: dict[str, int | None]  # processes whose CPU is reported
    db_root: int | None  # the PostgreSQL postmaster (None on SQLite)
    base: str  # the supplier service's URL (its /metrics: round trips, transactions)
    simulator: str  # the simulator's URL (its /healthz: lifecycles still running)
    waits: WaitSampler | None
    args: argparse.Namespace
    rng: random.Random
    earlier: list[Order] = field(default_factory=list)  # orders of the phases before

    def unsettled(self, orders: list[Order]) -> int:
        return sum(1 for o in orders if not self.seen.settled(o.order_id, o.line_ids))

    async def lifecycles(self) -> int:
        """Supplier orders whose lifecycle the simulator still runs (0 when not --lifecycle)."""
        if self.args.lifecycle is None:
            return 0
        async with httpx.AsyncClient(timeout=10.0) as client:
            health = (await client.get(f"{self.simulator}/healthz")).json()
        return int(health["pending_tasks"])

    async def settle(self, orders: list[Order], deadline: float) -> None:
        """Until every order is confirmed (or failed) and, with --lifecycle, delivered."""
        await wait_until(lambda: not self.unsettled(orders), deadline, 0.02)
        for _ in range(max(0, math.ceil((deadline - perf()) / 0.1))):
            if not await self.lifecycles():
                return
            await asyncio.sleep(0.1)  # another process, asked over HTTP


@dataclass
class Phase:
    load: str
    orders: list[Order]
    row: Row
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
    await rig.settle(rig.earlier, perf() + args.drain)
    left = rig.unsettled(rig.earlier)
    await asyncio.sleep(args.pause)
    if on_start is not None:
        on_start()
    if rig.waits is not None:
        rig.waits.reset()
    ids = {o.order_id for o in orders}
    before = await costs(rig.base)
    with CpuMeter() as meter:
        messages = [(o.key, o.value) for o in orders]
        due_at, late = await publish_paced(rig.producer, PLACED, messages, rate)
        for o, due in zip(orders, due_at, strict=True):
            o.scheduled = due
        sent_span = max(perf() - orders[0].scheduled, 1e-9)
        deadline = orders[-1].scheduled + (settle_s or args.timeout)
        if args.lifecycle is not None:
            deadline += 2 * args.lifecycle
        await rig.settle(orders, deadline)
    after = await costs(rig.base)
    rig.earlier += orders
    at = {o.order_id: seen.confirmed_at(o.order_id, o.line_ids) for o in orders}
    done = {i: t for i, t in at.items() if t is not None}
    latencies = [
        (done[o.order_id] - o.scheduled) * 1000 if o.order_id in done else math.inf for o in orders
    ]
    failed = sum(1 for i in ids if seen.failed.get(i) and i not in done)
    span = max(done.values(), default=orders[0].scheduled) - orders[0].scheduled
    confirmed_per_s = len(done) / span if span > 0 else 0.0
    late_p99 = (percentile(late, 99) or 0.0) * 1000
    cpu = meter.named(rig.pids, rig.db_root)
    u = meter.usage
    svc_s = u.tree_s(rig.pids["supplier"])
    svc_sys = u.tree_s(rig.pids["supplier"], kernel=True) / svc_s if svc_s else 0.0
    note = report.flags(
        late_p99_ms=late_p99,
        achieved=confirmed_per_s,
        rate=rate,
        left=left,
        what="ORDERS UNSETTLED",
    )
    if done:
        note.append(
            f"{sum(seen.events[i] for i in done) / len(done):.2f} supplier orders/confirmed order"
        )
    note.append(f"svc {100 * svc_sys:.0f}% sys")
    if failed:
        note.append(f"{failed} routing failed")
    row = Row(
        rig.backend, load, rate, len(orders), len(orders) / sent_span, len(done), confirmed_per_s,
        summary(latencies), len(orders) - len(done), failed, sum(seen.events[i] for i in ids),
        cpu, note="; ".join(note),
    )  # fmt: skip
    if done:  # what the service did in the window, per order it confirmed
        row.statements = (after["db_statements"] - before["db_statements"]) / len(done)
        row.transactions = (after["db_transactions"] - before["db_transactions"]) / len(done)
        row.http = (after["http_requests"] - before["http_requests"]) / len(done)
    if args.lifecycle is not None and (running := await rig.lifecycles()):
        row.note += f"; {running} LIFECYCLES STILL RUNNING"
    row.load1 = os.getloadavg()[0]
    return Phase(load, orders, row, rig.waits.summary() if rig.waits else "")


async def stage_breakdown(url: str, phases: list[Phase], seen: Confirmations) -> None:
    """Per-stage latency from the service's own timestamps (read once the service stopped)."""
    wall0, perf0 = time.time(), perf()

    def clock(t: float) -> datetime:
        return datetime.fromtimestamp(wall0 + (t - perf0), UTC)

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(routing_request.c.order_id, routing_request.c.received_at)
            requests = {r.order_id: aware(r.received_at) for r in await conn.execute(query)}
            orders: dict[str, list[Any]] = {}
            cols = supplier_order.c
            for r in await conn.execute(select(cols.order_id, cols.sent_at, cols.confirmed_at)):
                orders.setdefault(r.order_id, []).append(r)
    finally:
        await engine.dispose()

    def ms(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else (b - a).total_seconds() * 1000

    for phase in phases:
        spans: dict[str, list[float]] = {name: [] for name, _ in STAGES}
        for o in phase.orders:
            sos = [(t, s) for s in orders.get(o.order_id, []) if (t := aware(s.confirmed_at))]
            seen_at = seen.confirmed_at(o.order_id, o.line_ids)
            if seen_at is None or not sos:
                continue
            confirmed, last = max(sos, key=lambda pair: pair[0])
            sent = aware(last.sent_at)
            received = requests.get(o.order_id)
            values = (
                ms(clock(o.scheduled), received),
                ms(received, sent),
                ms(sent, confirmed),
                ms(confirmed, clock(seen_at)),
            )
            for (name, _), value in zip(STAGES, values, strict=True):
                if value is not None:
                    spans[name].append(value)
        phase.row.stages = {name: p50_p99(v) for name, v in spans.items()}


async def profiled(rig: Rig, backend: str, pid: int) -> tuple[Phase, list[str]]:
    """One more rate while py-spy samples the supplier service."""
    args = rig.args
    rate = args.profile_rate or max(args.rates)
    out = args.profile / f"routing-{backend}-supplier.folded"
    spying: list[asyncio.Task[list[str]]] = []

    def spy() -> None:
        job = profile.record(pid, args.profile_seconds, out, subprocesses=True, delay=2.0)
        spying.append(asyncio.create_task(job))

    load = f"open {rate:g}/s+py-spy"
    phase = await run_phase(rig, load, rate, args.profile_seconds + 4, on_start=spy)
    cmd, *_ = await asyncio.gather(*spying)
    return phase, [
        f"where the time goes: supplier service on {backend} at {rate:g}/s",
        "  " + " ".join(cmd),
        *profile.summarise(out, COMPONENTS, asgi_prefix="webhook request path: "),
    ]


async def measure(rig: Rig, backend: str, pid: int) -> tuple[list[Phase], list[str], list[str]]:
    """Warm-up, then every rate (and the profiled one); phases, notes, profile lines."""
    args = rig.args
    t1 = perf()  # warm-up: the service's consumer joins its group (~3 s), pools fill
    warm = await run_phase(rig, "warm-up", args.warmup_rate, args.warmup, max(args.timeout, 20.0))
    notes = [
        f"  warm-up {args.warmup_rate:g}/s x {args.warmup:g}s: "
        f"{warm.row.confirmed}/{warm.row.orders} confirmed, settled "
        f"{perf() - t1:.1f}s after its start (includes the service's group join)"
    ]
    if not warm.row.confirmed:
        raise RuntimeError("no order was confirmed during the warm-up")
    phases = [await run_phase(rig, f"open {r:g}/s", r, args.duration) for r in args.rates]
    lines: list[str] = []
    if args.profile is not None and backend in (args.profile_backends or args.backends):
        phase, lines = await profiled(rig, backend, pid)
        phases.append(phase)
    return phases, notes + [f"  {p.load}: {p.waits}" for p in phases if p.waits], lines


async def run_backend(
    backend: str, args: argparse.Namespace
) -> tuple[list[Row], list[str], list[str]]:
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(kafka.broker(ALL_TOPICS, args.broker_log))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dropship-routing-")))
        url = (await stack.enter_async_context(databases(backend, ["supplier"])))["supplier"]
        await asyncio.to_thread(migrate, MIGRATIONS, url)
        order_url = await stack.enter_async_context(contact_stub())
        supplier, simulator = apps(
            tmp, url, broker.bootstrap, args.workers, args.one_by_one, order_url
        )
        seen = Confirmations(broker.bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        waits = WaitSampler(url) if backend == "postgresql" else None
        try:
            t0 = perf()
            simulator.start()
            supplier.start()
            join_s, *_ = await asyncio.gather(
                seen.start(), simulator.wait_ready(), supplier.wait_ready(), producer.start()
            )
            await seed(supplier, simulator, args.latency_ms, args.lifecycle)
            notes = [
                f"  ready in {perf() - t0:.1f}s (bench consumer joined in {join_s:.1f}s); "
                f"supplier pid {supplier.pid}, simulator pid {simulator.pid}"
            ]
            if waits is not None:
                await waits.start()
            pids = {"supplier": supplier.pid, "simulator": simulator.pid}
            pids["broker"] = kafka.broker_pid(broker)
            rng = random.Random(f"routing:{backend}")
            rig = Rig(
                backend, producer, seen, pids, db_root(backend), supplier.base, simulator.base,
                waits, args, rng,
            )  # fmt: skip
            phases, more, profile_lines = await measure(rig, backend, supplier.pid or 0)
        except Exception:
            for svc in (supplier, simulator):
                print(f"--- {svc.name} log (tail) ---\n{svc.log_tail()}")
            raise
        finally:
            if waits is not None:
                await waits.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await seen.stop()
            supplier.stop()
            simulator.stop()
        await stage_breakdown(url, phases, seen)
        notes += more + ([f"  postgresql: {await pg_stats(url)}"] if waits else [])
        notes += log_notes([supplier, simulator])
        if args.logs is not None:
            for svc in (supplier, simulator):
                (args.logs / f"routing-{backend}-{svc.log.name}").write_bytes(svc.log.read_bytes())
    return [p.row for p in phases], notes, profile_lines


def options(ap: argparse.ArgumentParser) -> None:
    cli.add_backends(ap)
    cli.add_rates(
        ap, rates="100,200", unit="orders", duration=20.0, warmup=3.0, warmup_rate=50.0,
        timeout=10.0, timeout_help="seconds after its due time before an order is unconfirmed",
    )  # fmt: skip
    ap.add_argument("--workers", type=int, default=1, help="supplier service workers (default 1)")
    ap.add_argument(
        "--one-by-one",
        action="store_true",
        help="route each order in its own transaction (batch size 1, no batch handler)",
    )
    ap.add_argument("--latency-ms", type=float, default=20.0, help="simulator answer latency")
    ap.add_argument(
        "--lifecycle",
        type=float,
        default=None,
        metavar="S",
        help="the whole lifecycle: ship S s after confirming, deliver S s later (default: "
        "routing only, nothing ships)",
    )
    ap.add_argument("--pause", type=float, default=1.0, help="quiet seconds between rates")
    ap.add_argument("--drain", type=float, default=10.0, help="max seconds for a backlog to settle")
    cli.add_profile(ap, seconds=10, what="after the runs, py-spy the supplier service")
    ap.add_argument("--profile-rate", type=float, default=None, help="orders/s while profiling")
    ap.add_argument("--profile-backends", type=cli.backends, default=None, help="default: all")
    cli.add_logs(ap)


async def run(args: argparse.Namespace) -> int:
    cli.prepare_dirs(args)
    out = Output(args.results)
    pg = await server_version() if "postgresql" in args.backends else "-"
    info = report.machine(
        **report.versions(uvicorn, fastapi, aiokafka, sqlalchemy, asyncpg), postgresql=pg
    )
    await report.header(
        out,
        "dropship supplier routing benchmark",
        info,
        f"  rates={','.join(f'{r:g}' for r in args.rates)}/s duration={args.duration:g}s "
        f"simulator latency={args.latency_ms:g}ms suppliers={len(SUPPLIERS)} skus={len(SKUS)} "
        f"timeout={args.timeout:g}s partitions={PARTITIONS} backends={','.join(args.backends)}"
        f"{' routing one by one' if args.one_by_one else ''}"
        f"{f' lifecycle ship/deliver {args.lifecycle:g}s' if args.lifecycle is not None else ''}",
        f"  one machine: supplier service ({args.workers} worker(s)), simulator, broker, "
        "database and this publisher share the cores; cpu columns are cores used",
    )
    rows: list[Row] = []
    profiles: list[str] = []
    for backend in args.backends:
        t0 = perf()
        backend_rows, notes, prof = await run_backend(backend, args)
        rows += backend_rows
        out(f"== {backend}")
        table(out, backend_rows, args.timeout)
        report.stage_table(out, [(r.load, r.stages) for r in backend_rows], STAGES)
        out(*notes, f"  ({backend} run took {perf() - t0:.1f}s incl. start-up and warm-up)", "")
        profiles += [*prof, ""] if prof else []
    if profiles:
        out(*profiles)
    top = max(args.rates, default=0.0)
    for r in (r for r in rows if r.offered == top and "py-spy" not in r.load):
        p99 = r.latency["p99"]
        verdict = "MET" if p99 is not None and p99 <= GOAL_P99_MS else "MISSED"
        out(
            f"goal p99 <= {GOAL_P99_MS:.0f} ms at {top:g}/s on {r.backend}: {verdict} "
            f"(p99 {fmt_ms(p99, args.timeout)} ms)"
        )
    report.noisy_warning(out, (r.cpu for r in rows))
    out(
        "latency: from each order-placed event's scheduled publish time to the last "
        "supplier-confirmed of its order seen here; nearest-rank; unconfirmed count as slowest"
    )
    if args.json:
        out.json(info, [asdict(r) for r in rows])
    out.save()
    return 0


SCENARIO = Scenario("routing", __doc__ or "", options, run)
