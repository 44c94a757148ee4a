"""Whole system: the stack `make up` starts, on PostgreSQL, at fixed arrival rates.

    make bench-stack                                        # ~6 min
    python -m deploy.testenv -- .venv/bin/python -m bench stack --rates 50 --seconds 5 \\
        --no-baselines                                      # a quick look

`python -m deploy.local up` runs as a subprocess with its own data directory, free ports,
its embedded tansu broker and fresh PostgreSQL databases on the deploy.testenv server.
The demo suppliers answer after `--latency-ms` with a million in stock. Storefront orders
(demo SKUs) go to `POST /v1/orders` on a fixed timetable per rate; a consumer here reads
`supplier-confirmed` to time placed -> confirmed. Per rate: intake, statuses, latencies,
events consumed per service (`/metrics`), CPU and RSS per process. The highest rate is
the overload step; a low-rate probe follows it at once. Then the baselines with the stack
stopped: bench/bare_app.py (one INSERT per order) and raw aiokafka. `--results FILE`
writes the markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import shutil
import tempfile
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import bare_app
from bench.harness import cli, kafka, procs, report
from bench.harness.cli import Scenario
from bench.harness.clock import perf
from bench.harness.dbs import databases, pg_server, server_version
from bench.harness.generator import LoadOptions, order_body
from bench.harness.load import LoadResult, open_load
from bench.harness.profile import py_spy
from bench.harness.stats import percentile
from bench.harness.system import Stack
from bench.harness.watch import Confirmations
from bench.scenarios import intake, pipeline
from bench.scenarios._stack_report import CONSUMERS, SERVICES, Step, fmt, idle_line, markdown
from deploy.seed import DEMO_SUPPLIERS
from shared.bus import ALL_TOPICS
from shared.infra import free_port

API_KEY = "dev-api-key"
# sale prices well above every demo supplier's cost (no negative-margin routing failures)
PRICES = {"MUG-1": "12.00", "TEA-2": "5.50", "LAMP-3": "29.00", "BAG-4": "16.00", "CAP-5": "8.00"}
STOCK = 1_000_000
Counts = dict[str, float]
PerService = dict[str, Counts | None]
CONSUMED = re.compile(r"^dropship_events_consumed_total\{([^}]*)\}\s+([0-9.eE+-]+)$", re.MULTILINE)


def demo_body(rng: random.Random, i: int) -> dict[str, Any]:
    """A storefront order of 1-3 demo SKUs (module-level: generator processes unpickle it)."""
    body = order_body(rng, i)
    skus = rng.sample(sorted(PRICES), rng.randint(1, 3))
    body["lines"] = [
        {"sku": s, "quantity": rng.randint(1, 2), "unit_price": PRICES[s]} for s in skus
    ]
    return body


async def prepare_suppliers(stack: Stack, latency_ms: float, ship_after_s: float | None) -> None:
    """Simulator latency for the demo suppliers (and `ship_after_s` if given), and stock no
    run can exhaust."""
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(timeout=10) as c:
        listed = await c.get(stack.urls["supplier"] + "/v1/suppliers", headers=headers)
        ids = {s["supplier_key"]: s["id"] for s in listed.raise_for_status().json()["items"]}
        for key, _name, _prio, _sla, offers in DEMO_SUPPLIERS:
            control: dict[str, float] = {"latency_ms": latency_ms}
            if ship_after_s is not None:
                control["ship_after_s"] = ship_after_s
            r = await c.put(f"{stack.urls['simulator']}/_control/{key}", json=control)
            r.raise_for_status()
            items = [
                {"sku": sku, "supplier_sku": f"{key[:4].upper()}-{sku}", "unit_cost": cost,
                 "currency": "USD", "stock": STOCK, "lead_time_hours": lead}
                for sku, (cost, _stock, lead) in offers.items()
            ]  # fmt: skip
            url = f"{stack.urls['supplier']}/v1/suppliers/{ids[key]}/offers"
            (await c.put(url, json=items, headers=headers)).raise_for_status()


COST = re.compile(
    r"^dropship_(db_statements|db_transactions|http_requests|gc_seconds)_total(?:\{[^}]*\})?"
    r"\s+([0-9.eE+-]+)$",
    re.MULTILINE,
)
"""The cost model's counters: round trips, transactions, HTTP requests received, GC time."""


async def scrape_metrics(urls: dict[str, str]) -> tuple[PerService, PerService]:
    """Per service: `dropship_events_consumed_total` per topic (every outcome summed), and
    the cost counters; None for a service whose `/metrics` did not answer."""

    async def one(c: httpx.AsyncClient, name: str) -> tuple[Counts | None, Counts | None]:
        try:
            text = (await c.get(urls[name] + "/metrics")).text
        except httpx.HTTPError:
            return None, None
        per_topic: dict[str, float] = defaultdict(float)
        for labels, value in CONSUMED.findall(text):
            topic = re.search(r'topic="([^"]*)"', labels)
            per_topic[topic.group(1) if topic else "?"] += float(value)
        costs: dict[str, float] = defaultdict(float)
        for kind, value in COST.findall(text):
            costs[kind] += float(value)
        return dict(per_topic), dict(costs)

    async with httpx.AsyncClient(timeout=15) as c:
        got = await asyncio.gather(*(one(c, n) for n in CONSUMERS))
    consumed = {n: g[0] for n, g in zip(CONSUMERS, got, strict=True)}
    return consumed, {n: g[1] for n, g in zip(CONSUMERS, got, strict=True)}


@dataclass(frozen=True)
class Snap:
    cpu: procs.Snapshot
    consumed: dict[str, Counts | None]
    load1: float
    costs: dict[str, Counts | None]


async def snap(urls: dict[str, str], *, scrape: bool = True) -> Snap:
    cpu = procs.snapshot()
    consumed, costs = await scrape_metrics(urls) if scrape else ({}, {})
    return Snap(cpu, consumed, os.getloadavg()[0], costs)


def cores(a: Snap, b: Snap, pids: dict[str, int], pg_root: int | None) -> dict[str, float]:
    u = procs.Usage(a.cpu, b.cpu)
    out = {name: u.cores(pid) for name, pid in pids.items()}
    if pg_root:
        out["postgres"] = u.db_cores(pg_root)
    out["machine"] = u.machine
    return out


SUT = ("order", "supplier", "notify", "metrics", "console", "broker", "launcher")
RIG = ("simulator", "marketplace_sim")


def split(a: Snap, b: Snap, pids: dict[str, int], pg_root: int | None) -> dict[str, float]:
    """CPU seconds between two snapshots: each process of the system under test and the
    rig (per-process /proc utime+stime; PostgreSQL is the postmaster and its backends),
    with the totals `sut` and `rig` (the rig without the load generator, added by the
    caller). The bench process itself (its Kafka consumer) is `bench`, part of the rig."""
    u = procs.Usage(a.cpu, b.cpu)
    # the launcher alone: its children are the services, counted on their own
    out = {
        n: u.cpu_s(pids.get(n)) if n == "launcher" else u.tree_s(pids.get(n)) for n in (*SUT, *RIG)
    }
    out["postgres"] = u.db_cores(pg_root) * u.wall if pg_root else 0.0
    out["bench"] = u.bench * u.wall
    out["sut"] = sum(out[n] for n in (*SUT, "postgres"))
    out["rig"] = sum(out[n] for n in (*RIG, "bench"))
    out["wall"] = u.wall
    return out


async def quiet(stack: Stack, pg_root: int | None, idle_sut: float, cap_s: float) -> None:
    """Wait (up to `cap_s`) until the system under test is back near its idle cost for a
    whole second: the lifecycle after confirmation (dispatch, tracking, notices, metrics)
    has drained."""
    deadline = perf() + cap_s
    while perf() < deadline:
        a = await snap(stack.urls, scrape=False)
        await asyncio.sleep(1.0)
        got = split(a, await snap(stack.urls, scrape=False), stack.pids, pg_root)
        if got["sut"] / got["wall"] <= idle_sut + 0.03:
            return


def consumed_delta(a: Snap, b: Snap, *, costs: bool = False) -> dict[str, Counts | None]:
    """Events consumed per service and topic (or, with `costs`, the cost counters) between
    two snapshots (None: a scrape failed)."""
    out: dict[str, Counts | None] = {}
    first, last = (a.costs, b.costs) if costs else (a.consumed, b.consumed)
    for n in CONSUMERS:
        before, after = first.get(n), last.get(n)
        if before is None or after is None:
            out[n] = None
        else:
            out[n] = {t: v - before.get(t, 0.0) for t, v in after.items()}
    return out


def recount(step: Step, conf: Confirmations) -> None:
    """Placed -> confirmed of the step's 201s, from what the bench consumer has seen so far
    (again after the probe for the overload step, which is not waited for)."""
    confirm_ms = []
    unsettled = failed = 0
    last = 0.0
    for i, (order_id, lines, _a) in step.load.placed.items():
        at = conf.confirmed_at(order_id, lines)
        if at is not None:
            confirm_ms.append((at - (step.load.start + i / step.rate)) * 1000)
            last = max(last, at)
        else:
            failed += bool(conf.failed.get(order_id))
            unsettled += not conf.failed.get(order_id)
            confirm_ms.append(math.inf)
    step.confirm_ms, step.unsettled, step.routing_failed = confirm_ms, unsettled, failed
    end = step.load.start + step.seconds
    step.drain_s = (last - end) if last and not unsettled else None


async def run_step(
    stack: Stack,
    conf: Confirmations,
    label: str,
    rate: float,
    seconds: float,
    args: argparse.Namespace,
    pg_root: int | None,
    drain: float,
) -> Step:
    """One rate: the timetable, CPU/RSS/events over its window, then up to `drain` seconds
    for its orders to be confirmed."""
    run_id = f"{label.replace(' ', '').replace('/', '')}-{uuid.uuid4().hex[:6]}"
    options = LoadOptions(
        procs=args.gen_procs,
        conns=args.conns,
        max_conns=args.max_conns,
        timeout=args.timeout,
        api_key=API_KEY,
        seed=hash(run_id) & 0xFFFF,
        body=demo_body,
        track=True,
    )
    wall_from = datetime.now(UTC)
    url = stack.urls["order"] + "/v1/orders"
    started, job = await open_load(url, rate, seconds, options, run_id)
    start = await asyncio.wait_for(asyncio.shield(started), 120)
    with procs.RssSampler({n: p for n, p in stack.pids.items() if n != "launcher"}) as rss:
        await asyncio.sleep(max(0.0, start - perf()))
        a = await snap(stack.urls)
        await asyncio.sleep(max(0.0, start + seconds - perf()))
        b = await snap(stack.urls)
        load: LoadResult = await job
    wall_to = datetime.now(UTC)
    deadline = perf() + drain
    placed = load.placed.values()
    while perf() < deadline and not all(conf.settled(o, ls) for o, ls, _ in placed):  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    if drain > 0:
        await quiet(stack, pg_root, args.idle_sut, min(drain, args.quiet_cap))
    drained = await snap(stack.urls)
    topics = consumed_delta(a, drained)
    events: dict[str, float | None] = {}
    for n, v in consumed_delta(a, b).items():
        events[n] = None if v is None else sum(v.values()) / (b.cpu.t - a.cpu.t)
    step = Step(
        label, rate, seconds, load, cores(a, b, stack.pids, pg_root), dict(rss.peak), events,
        wall_from, wall_to, (a.load1, b.load1),
        topics={n: v for n, v in topics.items() if v is not None},
        cpu_s=split(a, drained, stack.pids, pg_root) | {"generator": load.gen_cpu_s},
        costs={n: v for n, v in consumed_delta(a, drained, costs=True).items() if v is not None},
    )  # fmt: skip
    recount(step, conf)
    return step


async def health_check(stack: Stack) -> list[str]:
    """Every service must still answer `/readyz` within 10 s; one that does not gets a
    py-spy dump of its threads (in the data dir, if py-spy is there) as evidence."""
    notes = []
    async with httpx.AsyncClient(timeout=10) as c:
        for name, url in stack.urls.items():
            probe = "/healthz" if name == "simulator" else "/readyz"
            try:
                code = (await c.get(url + probe)).status_code
            except httpx.HTTPError as exc:
                code = 0
                notes.append(f"{name} did not answer {probe} after the run ({type(exc).__name__})")
            if code not in (0, 200):
                notes.append(f"{name} answered {probe} {code} after the run")
            spy = py_spy()
            if code != 200 and spy:
                out = stack.folder / f"{name}-py-spy-dump.txt"
                with out.open("wb") as f:
                    proc = await asyncio.create_subprocess_exec(
                        spy, "dump", "--pid", str(stack.pids[name]), stdout=f, stderr=f
                    )
                    await proc.wait()
                notes.append(f"py-spy dump of {name} in {out}")
    return notes


async def webhook_acks(stack: Stack, steps: list[Step]) -> list[str]:
    """Supplier-callback acknowledgement latency as the simulator saw it (its order history:
    `occurred_at` just before the POST, `completed_at` after the answer), per step window;
    a note for each supplier whose history could not be read."""
    acks: list[tuple[datetime, str, float, int, str]] = []
    notes: list[str] = []
    async with httpx.AsyncClient(timeout=120) as c:
        for key, *_ in DEMO_SUPPLIERS:
            try:
                r = await c.get(f"{stack.urls['simulator']}/_control/{key}/orders")
            except httpx.HTTPError as exc:
                notes.append(f"simulator history of {key} not read ({exc!r}): acks not counted")
                continue
            for order in r.json()["items"]:
                for ev in order["events"]:
                    t0 = datetime.fromisoformat(ev["occurred_at"].replace("Z", "+00:00"))
                    t1 = datetime.fromisoformat(ev["completed_at"].replace("Z", "+00:00"))
                    ms = (t1 - t0).total_seconds() * 1000
                    acks.append((t0, ev["kind"], ms, ev["attempts"], ev["status"]))
    for step in steps:
        mine = [a for a in acks if step.wall_from <= a[0] <= step.wall_to]
        for kind in sorted({a[1] for a in mine}):
            of_kind = [a for a in mine if a[1] == kind]
            first = [ms for _, _, ms, att, st in of_kind if att == 1 and st == "sent"]
            step.webhook[kind] = {
                "n": len(of_kind),
                "p50": percentile(first, 50),
                "p99": percentile(first, 99),
                "retried": sum(1 for a in of_kind if a[3] > 1),
                "failed": sum(1 for a in of_kind if a[4] != "sent"),
            }
    return notes


async def baselines(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """bench/bare_app.py under wrk and at the top rate; raw aiokafka produce/consume."""
    rows: list[tuple[str, str, str]] = []
    topics = (*ALL_TOPICS, pipeline.RAW_TOPIC)
    async with kafka.broker(topics) as broker, databases("postgresql", ["bare"]) as urls:
        await asyncio.to_thread(bare_app.create_table, urls["bare"])
        with tempfile.TemporaryDirectory(prefix="dropship-stack-bare-") as tmp:
            root = procs.postmaster_pid(pg_server())
            bare = intake.bare_target(
                urls["bare"],
                args.bare_workers,
                Path(tmp) / "bare.log",
                kafka.broker_pid(broker),
                root,
            )
            load = intake.Load(
                args.baseline_seconds, 2, 64, args.gen_procs, args.max_conns, args.timeout
            )
            bare.start()
            try:
                await bare.wait_ready()
                await bare.sanity()
                await intake.open_row("postgresql", bare, load, 100, 2, "bw")  # warm-up
                w = await intake.wrk_row("postgresql", bare, load, "bc")
                rows.append((
                    f"bare FastAPI insert, {args.bare_workers} worker, wrk 64 conns",
                    f"{w.ok_per_s:.0f} orders/s",
                    f"p50 {fmt(w.p50_ms)} ms, p99 {fmt(w.p99_ms)} ms (closed loop: queueing "
                    f"behind 64 conns); app {w.cpu.get('app', 0):.2f} cores, "
                    f"db {w.cpu.get('db', 0):.2f}",
                ))  # fmt: skip
                top = max(args.rates)
                o = await intake.open_row(
                    "postgresql", bare, load, top, args.baseline_seconds, "bo"
                )
                rows.append((
                    f"bare FastAPI insert, open {top:g}/s",
                    f"{o.ok_per_s:.0f} orders/s",
                    f"p50 {fmt(o.p50_ms)} ms, p99 {fmt(o.p99_ms)} ms from the scheduled "
                    f"time; errors {o.errors}",
                ))  # fmt: skip
            finally:
                bare.stop()
        size = pipeline.envelope_size()
        for r in await pipeline.raw_aiokafka("raw", broker.bootstrap, size, args.raw_events, 120.0):
            lat = ""
            if r.latencies_ms:
                lat = f"send->consume p50 {fmt(r.pct(50))} ms, p99 {fmt(r.pct(99))} ms; "
            rows.append((r.path, f"{r.rate:.0f} msgs/s", f"{lat}{r.events} msgs {r.note}".strip()))
    return rows


async def run_steps(
    stack: Stack, conf: Confirmations, args: argparse.Namespace, pg_root: int | None
) -> list[Step]:
    """The warm-up, then each rate, lowest first; the highest is the overload step and the
    probe follows it at once."""
    if args.warmup > 0:
        w = await run_step(stack, conf, "warm-up", args.warmup_rate, args.warmup, args, pg_root, 30)
        print(f"  warm-up {args.warmup_rate:g}/s: {w.load.statuses}, unsettled {w.unsettled}")
    steps: list[Step] = []
    rates = sorted(args.rates)
    for n, rate in enumerate(rates):
        overload = n == len(rates) - 1 and args.probe_rate > 0 and len(rates) > 1
        label = f"overload {rate:g}/s" if overload else f"{rate:g}/s"
        await asyncio.sleep(args.pause)
        drain = 0 if overload else args.drain
        step = await run_step(stack, conf, label, rate, args.seconds, args, pg_root, drain)
        steps.append(step)
        print(f"  {label}: {step.load.statuses} errors {step.load.errors}")
        if overload:
            label = f"probe {args.probe_rate:g}/s"
            probe = await run_step(
                stack, conf, label, args.probe_rate, args.probe_seconds, args, pg_root, args.drain
            )
            steps.append(probe)
            print(f"  probe: {probe.load.statuses} errors {probe.load.errors}")
            recount(step, conf)  # its backlog has drained (or the drain timed out)
    return steps


def stack_env(folder: Path, args: argparse.Namespace) -> dict[str, str]:
    env = procs.clean_env(
        DROPSHIP_TEST_PG_URL=pg_server(),
        DROPSHIP_DATA_DIR=str(folder / "var"),
        DROPSHIP_EMBEDDED_KAFKA_PORT=str(free_port()),
    )
    if args.log_level:
        env["DROPSHIP_LOG_LEVEL"] = args.log_level
    if args.max_inflight:
        env["DROPSHIP_MAX_INFLIGHT_REQUESTS"] = str(args.max_inflight)
    env["DROPSHIP_ACCESS_LOG"] = "true" if args.access_log else "false"
    for pair in args.env:  # e.g. DROPSHIP_KAFKA_IDLE_AFTER_S=0 to measure without a lever
        key, _, value = pair.partition("=")
        env[key] = value
    names = (*SERVICES, "console", "marketplace_sim")
    return env | {f"DROPSHIP_{name.upper()}_PORT": str(free_port()) for name in names}


async def run(args: argparse.Namespace) -> int:
    if not pg_server():
        raise SystemExit(
            "the stack benchmark needs DROPSHIP_TEST_PG_URL: run it under deploy.testenv"
        )
    out = report.Output(args.results)
    info = report.machine_detail(await server_version())
    print(
        "dropship whole-stack benchmark",
        "  " + "  ".join(f"{k}={v}" for k, v in info.items()),
        sep="\n",
    )
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t_begin = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="dropship-stack-", dir="/tmp"))
    env = stack_env(folder, args)
    notes: list[str] = []
    async with databases("postgresql", list(CONSUMERS)) as urls:
        env |= {f"DROPSHIP_{name.upper()}_DATABASE_URL": urls[name] for name in CONSUMERS}
        stack = Stack(env, folder)
        stack.urls = {n: f"http://127.0.0.1:{env[f'DROPSHIP_{n.upper()}_PORT']}" for n in SERVICES}
        t0 = perf()
        stack.start()
        conf: Confirmations | None = None
        try:
            await stack.wait_ready()
            stack.find_pids()
            print(f"  stack up in {perf() - t0:.1f}s; data dir {folder}; pids {stack.pids}")
            await prepare_suppliers(stack, args.latency_ms, args.ship_after_s)
            conf = Confirmations(f"127.0.0.1:{env['DROPSHIP_EMBEDDED_KAFKA_PORT']}", from_end=True)
            print(f"  bench consumer joined in {await conf.start():.1f}s")
            pg_root = procs.postmaster_pid(pg_server())
            args.idle_sut = 0.0
            idle: dict[str, float] = {}
            if args.idle > 0:  # what the stack costs with no orders at all
                await asyncio.sleep(args.settle)  # start-up work and consumer joins are over
                a = await snap(stack.urls, scrape=False)
                await asyncio.sleep(args.idle)
                idle = split(a, await snap(stack.urls, scrape=False), stack.pids, pg_root)
                args.idle_sut = idle["sut"] / idle["wall"]
                print("  idle: " + idle_line(idle))
            steps = await run_steps(stack, conf, args, pg_root)
            notes += await health_check(stack)
            notes += await webhook_acks(stack, steps)
            for name in SERVICES:
                size = (folder / "var" / "logs" / f"{name}.log").stat().st_size
                notes.append(f"{name} log {size / 1e6:.1f} MB")
        finally:
            if conf is not None:
                await conf.stop()
            stack.stop()
    base_rows = await baselines(args) if args.baselines else []
    span = (t_begin, datetime.now(UTC))
    out(*markdown(args, info, report.command_line(), steps, base_rows, notes, span, idle))
    out.save()
    if args.keep or any("py-spy dump" in n for n in notes):
        print(f"stack data and logs kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--rates",
        type=cli.floats,
        default=[50.0, 100.0, 200.0, 400.0],
        help="orders/s (default 50,100,200,400); the highest is the overload step",
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of timetable per rate")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="simulator answer latency")
    ap.add_argument(
        "--ship-after-s",
        type=float,
        default=None,
        help="simulator ship_after_s (default: its own, 1 s; 3600: routing only)",
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="an intake request slower fails")
    ap.add_argument("--drain", type=float, default=60.0, help="max seconds for confirmations")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between steps")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of unreported warm-up")
    ap.add_argument("--warmup-rate", type=float, default=20.0)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of CPU with no orders first")
    ap.add_argument("--probe-rate", type=float, default=20.0, help="recovery probe after overload")
    ap.add_argument("--probe-seconds", type=float, default=10.0)
    ap.add_argument("--gen-procs", type=int, default=2)
    ap.add_argument("--conns", type=int, default=32, help="connections opened before each step")
    ap.add_argument("--max-conns", type=int, default=512, help="generator connection cap")
    ap.add_argument(
        "--log-level",
        default="WARNING",
        help="DROPSHIP_LOG_LEVEL for the stack and its rigs (default WARNING: no line per "
        "request; '' keeps the services' INFO)",
    )
    ap.add_argument(
        "--access-log",
        action="store_true",
        help="uvicorn access log on (DROPSHIP_ACCESS_LOG; off by default in the benchmark)",
    )
    ap.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for every process (repeatable)"
    )
    ap.add_argument("--settle", type=float, default=15.0, help="seconds before the idle window")
    ap.add_argument(
        "--quiet-cap", type=float, default=30.0, help="max seconds waiting for CPU to settle"
    )
    ap.add_argument("--max-inflight", type=int, default=0, help="DROPSHIP_MAX_INFLIGHT_REQUESTS")
    ap.add_argument("--no-baselines", dest="baselines", action="store_false")
    ap.add_argument("--baseline-seconds", type=float, default=10.0)
    ap.add_argument("--bare-workers", type=int, default=1, help="uvicorn workers of the bare app")
    ap.add_argument("--raw-events", type=int, default=20000)
    ap.add_argument("--keep", action="store_true", help="keep the stack's data dir and logs")


SCENARIO = Scenario("stack", __doc__ or "", options, run)
