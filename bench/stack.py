"""Whole-system load benchmark: the stack `make up` starts, on PostgreSQL, at fixed arrival rates.

    python -m deploy.testenv -- .venv/bin/python bench/stack.py
    python -m deploy.testenv -- .venv/bin/python bench/stack.py --rates 50 --seconds 5 \
        --no-baselines                                  # a quick look

`python -m deploy.local up` runs as a subprocess (as tests/e2e/test_story.py starts it):
its own data directory under /tmp, free ports, its embedded tansu broker, and fresh
PostgreSQL databases for the four services on the `deploy.testenv` server. The demo
suppliers it seeds get `latency_ms` 20 at the simulator and a million in stock. Storefront
orders (demo SKUs MUG-1 TEA-2 LAMP-3 BAG-4 CAP-5) go to `POST /v1/orders` on a fixed
timetable per rate (open model, bench/loadgen.py's generator); a consumer in the bench reads
`supplier-confirmed` to time placed -> confirmed. Per rate: intake, statuses, latencies,
events consumed per service (`/metrics`), CPU and RSS per process. The highest rate is the
overload step; a low-rate probe follows it at once. Then the same run's baselines with the
stack stopped: bench/bare_app.py (one INSERT per order) and raw aiokafka.
Prints figures, asserts nothing; `--results FILE` writes them as markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiokafka import AIOKafkaConsumer

if __package__ in (None, ""):  # run as a script: make `bench.*` importable as with -m
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import loadgen
from bench._common import TICK, machine_busy_ticks, percentile, perf, postmaster_pid, proc_ticks
from deploy.seed import DEMO_SUPPLIERS
from shared.infra import free_port

REPO = Path(__file__).resolve().parents[1]
API_KEY = "dev-api-key"
SERVICES = ("order", "supplier", "notify", "metrics", "simulator")
CONSUMERS = ("order", "supplier", "notify", "metrics")
# sale prices well above every demo supplier's cost (no negative-margin routing failures)
PRICES = {"MUG-1": "12.00", "TEA-2": "5.50", "LAMP-3": "29.00", "BAG-4": "16.00", "CAP-5": "8.00"}
STOCK = 1_000_000
CONSUMED = re.compile(r"^dropship_events_consumed_total\{([^}]*)\}\s+([0-9.eE+-]+)$", re.MULTILINE)


# --------------------------------------------------------------------------- load generator
# bench/loadgen.py's open-model generator (raw keep-alive HTTP/1.1, uvloop, bodies built
# before the clock starts, latency from the scheduled time), with demo-catalogue orders,
# the order id and line ids of every 201 kept, and Retry-After counted on refusals.


def stack_body(rng: random.Random, i: int) -> dict[str, Any]:
    body = loadgen.order_body(rng, i)
    skus = rng.sample(sorted(PRICES), rng.randint(1, 3))
    body["lines"] = [
        {"sku": s, "quantity": rng.randint(1, 2), "unit_price": PRICES[s]} for s in skus
    ]
    return body


class StackGen(loadgen.Generator):
    def __init__(self, plan: loadgen.Plan) -> None:
        super().__init__(plan)
        host = f"{plan.host}:{plan.port}"
        rng = random.Random(plan.seed * 1_000_003 + plan.index)
        self.payloads = {}
        for i in self.indices:
            body = json.dumps(stack_body(rng, i), separators=(",", ":")).encode()
            head = (
                f"POST {plan.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"X-API-Key: {plan.api_key}\r\nIdempotency-Key: {plan.run}-{i}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            self.payloads[i] = head.encode() + body
        self.placed: dict[int, tuple[str, list[str], float]] = {}  # i -> id, lines, answered
        self.retry_after: Counter[int] = Counter()  # refusals carrying Retry-After, by status
        self.by_second: Counter[tuple[int, int]] = Counter()  # (second, status)

    def answered(
        self, conn: loadgen.Conn, req: tuple[int, float], status: int, close: bool
    ) -> None:
        assert conn.head is not None
        now = perf()
        start = conn.head[1]
        self.by_second[(int(req[1] - self.start), status)] += 1
        if status == 201 and now - req[1] <= self.plan.timeout:
            with contextlib.suppress(ValueError, KeyError):
                order = json.loads(bytes(conn.buf[start:]))
                self.placed[req[0]] = (order["id"], [ln["line_id"] for ln in order["lines"]], now)
        elif status >= 400 and b"\r\nretry-after:" in bytes(conn.buf[:start]).lower():
            self.retry_after[status] += 1
        super().answered(conn, req, status, close)


async def _gen_process(plan: loadgen.Plan, pipe: Any) -> dict[str, Any]:
    import gc
    import resource

    gen = StackGen(plan)
    for _ in range(min(plan.conns, plan.max_conns)):
        gen.open_one()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gen.ready.wait(), 10)
    pipe.send(("ready", gen.open_count))
    start = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    gc.collect()
    gc.disable()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await gen.run(start)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    gc.enable()
    return {
        "scheduled": len(gen.indices),
        "sent_in_window": gen.sent_in_window,
        "latencies": gen.latencies,
        "statuses": dict(gen.statuses),
        "errors": dict(gen.errors),
        "late": gen.late,
        "wait_ms": gen.wait_ms,
        "last_ok": gen.last_ok,
        "max_open": gen.max_open,
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "ended": perf(),
        "placed": gen.placed,
        "retry_after": dict(gen.retry_after),
        "by_second": [[s, st, n] for (s, st), n in gen.by_second.items()],
    }


def _gen_worker(plan: loadgen.Plan, pipe: Any) -> None:
    with contextlib.suppress(OSError):
        os.nice(-10)
    import uvloop

    pipe.send(("result", uvloop.run(_gen_process(plan, pipe))))


def run_load(
    url: str, rate: float, seconds: float, args: argparse.Namespace, run_id: str, started: Any
) -> dict[str, Any]:
    """The timetable in `args.gen_procs` processes (blocking; run it in a thread)."""
    parts = urlsplit(url)
    ctx = mp.get_context("spawn")
    procs = args.gen_procs
    workers = []
    for k in range(procs):
        plan = loadgen.Plan(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            parts.path,
            API_KEY,
            run_id,
            rate,
            seconds,
            procs,
            k,
            max(1, args.conns // procs),
            max(1, args.max_conns // procs),
            args.timeout,
            hash(run_id) & 0xFFFF,
        )
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_gen_worker, args=(plan, theirs), daemon=True)
        proc.start()
        workers.append((proc, mine))
    opened = sum(pipe.recv()[1] for _, pipe in workers)
    start = perf() + 0.3
    for _, pipe in workers:
        pipe.send(start)
    started(start)
    results = []
    for proc, pipe in workers:
        kind, value = pipe.recv()
        assert kind == "result", kind
        results.append(value)
        proc.join(10)
    merged = loadgen.merge(results, rate, seconds, start, args.timeout, opened)
    merged["start"] = start
    merged["placed"] = {i: v for r in results for i, v in r["placed"].items()}
    merged["retry_after"] = dict(sum((Counter(r["retry_after"]) for r in results), Counter()))
    per_second: Counter[tuple[int, int]] = Counter()
    for r in results:
        for s, st, n in r["by_second"]:
            per_second[(s, st)] += n
    merged["by_second"] = per_second
    return merged


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    env: dict[str, str]
    folder: Path
    urls: dict[str, str] = field(default_factory=dict)
    launcher: subprocess.Popen[bytes] | None = None
    pids: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        log = (self.folder / "up.log").open("ab")
        self.launcher = subprocess.Popen(
            [sys.executable, "-m", "deploy.local", "up"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, name: str = "up", lines: int = 40) -> str:
        path = self.folder / ("up.log" if name == "up" else f"logs/{name}.log")
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    async def wait_ready(self, within: float = 180.0) -> None:
        deadline = perf() + within
        async with httpx.AsyncClient(timeout=5) as client:
            for name, url in self.urls.items():
                probe = "/healthz" if name == "simulator" else "/readyz"
                while True:
                    if self.launcher is None or self.launcher.poll() is not None:
                        raise RuntimeError(f"deploy.local exited:\n{self.log_tail()}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url + probe)).status_code == 200:
                            break
                    if perf() > deadline:
                        raise RuntimeError(f"{name} not ready:\n{self.log_tail(name)}")
                    await asyncio.sleep(0.3)
            while True:  # the launcher seeds the demo suppliers once every service is up
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    r = await client.get(
                        self.urls["supplier"] + "/v1/suppliers", headers={"X-API-Key": API_KEY}
                    )
                    keys = {s["supplier_key"] for s in r.json()["items"]}
                    if {k for k, *_ in DEMO_SUPPLIERS} <= keys and "Dropship is up" in (
                        self.folder / "up.log"
                    ).read_text(errors="replace"):
                        break
                if perf() > deadline:
                    raise RuntimeError(f"demo data not seeded:\n{self.log_tail()}")
                await asyncio.sleep(0.3)

    def find_pids(self) -> None:
        """The uvicorn process of each service (by `--port P` on its command line), tansu."""
        ports = {n: self.env[f"DROPSHIP_{n.upper()}_PORT"] for n in SERVICES}
        broker_port = self.env["DROPSHIP_EMBEDDED_KAFKA_PORT"]
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if "uvicorn" in argv and "--port" in argv:
                port = argv[argv.index("--port") + 1]
                for name, p in ports.items():
                    if p == port:
                        self.pids[name] = int(entry.name)
            elif any("tansu" in a for a in argv[:1]) and any(broker_port in a for a in argv):
                self.pids["broker"] = int(entry.name)
        if self.launcher is not None:
            self.pids["launcher"] = self.launcher.pid
        missing = [n for n in (*SERVICES, "broker") if n not in self.pids]
        if missing:
            raise RuntimeError(f"processes not found: {missing}")

    def stop(self) -> None:
        if self.launcher is None or self.launcher.poll() is not None:
            return
        self.launcher.send_signal(signal.SIGINT)
        try:
            self.launcher.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.launcher.pid, signal.SIGKILL)
            self.launcher.wait(10)


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
                {
                    "sku": sku,
                    "supplier_sku": f"{key[:4].upper()}-{sku}",
                    "unit_cost": cost,
                    "currency": "USD",
                    "stock": STOCK,
                    "lead_time_hours": lead,
                }
                for sku, (cost, _stock, lead) in offers.items()
            ]
            r = await c.put(
                f"{stack.urls['supplier']}/v1/suppliers/{ids[key]}/offers",
                json=items,
                headers=headers,
            )
            r.raise_for_status()


# --------------------------------------------------------------------------- observing


class Confirmations:
    """Reads `supplier-confirmed` and `order-routing-failed`: when each line was confirmed."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            "supplier-confirmed",
            "order-routing-failed",
            bootstrap_servers=bootstrap,
            group_id=f"bench-stack-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            max_poll_records=1000,
        )
        self.confirmed: dict[str, dict[str, float]] = defaultdict(dict)  # order -> line -> t
        self.failed: dict[str, set[str]] = defaultdict(set)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> float:
        t0 = perf()
        await self.consumer.start()
        while not self.consumer.assignment():
            await self.consumer.getmany(timeout_ms=200)
            if perf() - t0 > 60:
                raise RuntimeError("bench consumer got no partitions within 60 s")
        # position every partition at its end now, so nothing earlier is read
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)
        self.task = asyncio.create_task(self._run(), name="bench-confirmations")
        return perf() - t0

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            now = perf()
            for tp, messages in batches.items():
                for m in messages:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        data = json.loads(m.value)["data"]
                        if tp.topic == "supplier-confirmed":
                            seen = self.confirmed[data["order_id"]]
                            for line in data["lines"]:
                                seen.setdefault(line["line_id"], now)
                        else:
                            self.failed[data["order_id"]].update(data["line_ids"])

    def settled(self, order_id: str, lines: list[str]) -> bool:
        seen = self.confirmed.get(order_id, {})
        failed = self.failed.get(order_id, set())
        return all(ln in seen or ln in failed for ln in lines)

    def confirmed_at(self, order_id: str, lines: list[str]) -> float | None:
        seen = self.confirmed.get(order_id, {})
        if not all(ln in seen for ln in lines):
            return None
        return max(seen[ln] for ln in lines)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler:
    """Peak RSS of the stack's processes, sampled every second while a step runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak.get(name, 0), rss_kb(pid))
            await asyncio.sleep(1.0)

    def __enter__(self) -> Sampler:
        self.task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()


async def consumed_counts(urls: dict[str, str]) -> dict[str, dict[str, float] | None]:
    """`dropship_events_consumed_total` per service, per topic (every outcome summed);
    None for a service whose `/metrics` did not answer."""

    async def one(c: httpx.AsyncClient, name: str) -> dict[str, float] | None:
        try:
            text = (await c.get(urls[name] + "/metrics")).text
        except httpx.HTTPError:
            return None
        per_topic: dict[str, float] = defaultdict(float)
        for labels, value in CONSUMED.findall(text):
            topic = re.search(r'topic="([^"]*)"', labels)
            per_topic[topic.group(1) if topic else "?"] += float(value)
        return dict(per_topic)

    async with httpx.AsyncClient(timeout=15) as c:
        got = await asyncio.gather(*(one(c, n) for n in CONSUMERS))
    return dict(zip(CONSUMERS, got, strict=True))


@dataclass
class Snapshot:
    t: float
    ticks: dict[int, tuple[str, int, int, int]]
    busy: int
    consumed: dict[str, dict[str, float] | None]
    load1: float


async def snapshot(urls: dict[str, str]) -> Snapshot:
    t, ticks, busy = perf(), proc_ticks(), machine_busy_ticks()
    return Snapshot(t, ticks, busy, await consumed_counts(urls), os.getloadavg()[0])


def cpu_cores(
    a: Snapshot, b: Snapshot, pids: dict[str, int], pg_root: int | None
) -> dict[str, float]:
    wall = b.t - a.t

    def used(pid: int) -> float:
        if pid not in b.ticks:
            return 0.0
        return max(0, b.ticks[pid][2] - a.ticks.get(pid, ("", 0, 0, 0))[2]) / TICK

    out = {name: used(pid) / wall for name, pid in pids.items()}
    if pg_root:
        db = [p for p, (_, ppid, *_) in b.ticks.items() if p == pg_root or ppid == pg_root]
        out["postgres"] = sum(used(p) for p in db) / wall
    out["machine"] = (b.busy - a.busy) / TICK / wall
    return out


def events_per_s(a: Snapshot, b: Snapshot) -> dict[str, float | None]:
    wall = b.t - a.t
    out: dict[str, float | None] = {}
    for n in CONSUMERS:
        before, after = a.consumed.get(n), b.consumed.get(n)
        if before is None or after is None:
            out[n] = None  # a scrape failed
        else:
            out[n] = (sum(after.values()) - sum(before.values())) / wall
    return out


def topic_deltas(a: Snapshot, b: Snapshot) -> dict[str, dict[str, float]]:
    out = {}
    for n in CONSUMERS:
        before, after = a.consumed.get(n), b.consumed.get(n)
        if before is not None and after is not None:
            out[n] = {t: v - before.get(t, 0.0) for t, v in after.items()}
    return out


# --------------------------------------------------------------------------- steps


@dataclass
class Step:
    label: str
    rate: float
    seconds: float
    load: dict[str, Any]
    cpu: dict[str, float]
    rss_kb: dict[str, int]
    events: dict[str, float | None]
    events_total: dict[str, float]
    confirm_ms: list[float]
    unsettled: int
    routing_failed: int
    drain_s: float | None
    wall_from: datetime
    wall_to: datetime
    load1: tuple[float, float]
    topics: dict[str, dict[str, float]] = field(default_factory=dict)
    webhook: dict[str, Any] = field(default_factory=dict)

    @property
    def statuses(self) -> dict[int, int]:
        return {int(k): v for k, v in self.load["statuses"].items()}

    @property
    def timeouts(self) -> int:
        errors = self.load["errors"]
        return sum(v for k, v in errors.items() if k != "connect")


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
    loop = asyncio.get_running_loop()
    started: asyncio.Future[float] = loop.create_future()

    def on_start(start: float) -> None:
        loop.call_soon_threadsafe(started.set_result, start)

    run_id = f"{label.replace(' ', '').replace('/', '')}-{uuid.uuid4().hex[:6]}"
    wall_from = datetime.now(UTC)
    job = asyncio.create_task(
        asyncio.to_thread(
            run_load, stack.urls["order"] + "/v1/orders", rate, seconds, args, run_id, on_start
        )
    )
    start = await asyncio.wait_for(asyncio.shield(started), 120)
    with Sampler({n: p for n, p in stack.pids.items() if n != "launcher"}) as sampler:
        await asyncio.sleep(max(0.0, start - perf()))
        a = await snapshot(stack.urls)
        await asyncio.sleep(max(0.0, start + seconds - perf()))
        b = await snapshot(stack.urls)
        load = await job
    wall_to = datetime.now(UTC)
    placed: dict[int, tuple[str, list[str], float]] = load["placed"]
    deadline = perf() + drain
    while perf() < deadline and not all(conf.settled(o, ls) for o, ls, _ in placed.values()):  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    c = await snapshot(stack.urls)
    topics = topic_deltas(a, c)
    step = Step(
        label,
        rate,
        seconds,
        load,
        cpu_cores(a, b, stack.pids, pg_root),
        dict(sampler.peak),
        events_per_s(a, b),
        {n: sum(v.values()) for n, v in topics.items()},
        [],
        0,
        0,
        None,
        wall_from,
        wall_to,
        (a.load1, b.load1),
        topics,
    )
    recount(step, conf)
    return step


async def health_check(stack: Stack, folder: Path) -> list[str]:
    """Every service must still answer `/readyz` within 10 s; one that does not gets a
    py-spy dump of its threads (in the data dir, if py-spy is there) as evidence."""
    from bench._common import py_spy

    notes = []
    async with httpx.AsyncClient(timeout=10) as c:
        for name, url in stack.urls.items():
            probe = "/healthz" if name == "simulator" else "/readyz"
            try:
                code = (await c.get(url + probe)).status_code
            except httpx.HTTPError as exc:
                code = 0
                notes.append(f"{name} did not answer {probe} after the run ({type(exc).__name__})")
            else:
                if code != 200:
                    notes.append(f"{name} answered {probe} {code} after the run")
            spy = py_spy()
            if code != 200 and spy:
                out = folder / f"{name}-py-spy-dump.txt"
                proc = await asyncio.create_subprocess_exec(
                    spy,
                    "dump",
                    "--pid",
                    str(stack.pids[name]),
                    stdout=out.open("wb"),
                    stderr=asyncio.subprocess.STDOUT,
                )
                await proc.wait()
                notes.append(f"py-spy dump of {name} in {out}")
    return notes


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def webhook_acks(stack: Stack, steps: list[Step]) -> None:
    """Supplier-callback acknowledgement latency as the simulator saw it (its order history:
    `occurred_at` just before the POST, `completed_at` after the answer), per step window."""
    acks: list[tuple[datetime, str, float, int, str]] = []
    async with httpx.AsyncClient(timeout=120) as c:
        for key, *_ in DEMO_SUPPLIERS:
            r = await c.get(f"{stack.urls['simulator']}/_control/{key}/orders")
            for order in r.json()["items"]:
                for ev in order["events"]:
                    t0, t1 = parse_time(ev["occurred_at"]), parse_time(ev["completed_at"])
                    acks.append(
                        (
                            t0,
                            ev["kind"],
                            (t1 - t0).total_seconds() * 1000,
                            ev["attempts"],
                            ev["status"],
                        )
                    )
    for step in steps:
        mine = [a for a in acks if step.wall_from <= a[0] <= step.wall_to]
        for kind in sorted({a[1] for a in mine}):
            first = [ms for _, k, ms, att, st in mine if k == kind and att == 1 and st == "sent"]
            retried = sum(1 for _, k, _ms, att, _st in mine if k == kind and att > 1)
            failed = sum(1 for _, k, _ms, _att, st in mine if k == kind and st != "sent")
            step.webhook[kind] = {
                "n": len([a for a in mine if a[1] == kind]),
                "p50": percentile(first, 50),
                "p99": percentile(first, 99),
                "retried": retried,
                "failed": failed,
            }


# --------------------------------------------------------------------------- baselines


async def baselines(args: argparse.Namespace, pg_server: str) -> list[tuple[str, str, str]]:
    """bench/bare_app.py under wrk and at the top rate; raw aiokafka produce/consume."""
    from bench import bare_app
    from bench import intake as ib
    from bench import pipeline as pb
    from shared.bus import ALL_TOPICS, BusConfig, ensure_topics
    from shared.infra import EmbeddedBroker

    class Bare(ib.Target):
        def _children(self) -> list[int]:  # one worker: uvicorn serves in the master
            assert self.proc is not None
            return [self.proc.pid] if self.workers == 1 else super()._children()

    rows: list[tuple[str, str, str]] = []
    broker = EmbeddedBroker().start()
    try:
        async with pb.databases("postgresql", ["bare"]) as urls:
            await asyncio.to_thread(bare_app.create_table, urls["bare"])
            with tempfile.TemporaryDirectory(prefix="dropship-stack-bare-") as tmp:
                env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
                bare = Bare(
                    "bare FastAPI",
                    "bench.bare_app:create_app",
                    {**env, "BENCH_BARE_DATABASE_URL": urls["bare"]},
                    args.bare_workers,
                    Path(tmp) / "bare.log",
                )
                infra = ib.Infra(
                    broker.process.pid if broker.process else None, postmaster_pid(pg_server)
                )
                bare.start()
                try:
                    await bare.wait_ready()
                    await bare.sanity()
                    wargs = argparse.Namespace(
                        duration=args.baseline_seconds,
                        threads=2,
                        connections=64,
                        timeout=args.timeout,
                        gen_procs=args.gen_procs,
                        max_conns=args.max_conns,
                    )
                    await ib.run_open("postgresql", bare, infra, 100, 2, wargs, "bw")  # warm-up
                    w = await ib.run_wrk("postgresql", bare, infra, wargs, "bc")
                    rows.append(
                        (
                            f"bare FastAPI insert, {args.bare_workers} worker, wrk 64 conns",
                            f"{w.ok_per_s:.0f} orders/s",
                            f"p50 {w.p50_ms:.1f} ms, p99 {w.p99_ms:.1f} ms (closed loop: queueing "
                            f"behind 64 conns); app {w.cpu.get('app', 0):.2f} cores, "
                            f"db {w.cpu.get('db', 0):.2f}",
                        )
                    )
                    top = max(args.rates)
                    o, _ = await ib.run_open(
                        "postgresql", bare, infra, top, args.baseline_seconds, wargs, "bo"
                    )
                    rows.append(
                        (
                            f"bare FastAPI insert, open {top:g}/s",
                            f"{o.ok_per_s:.0f} orders/s",
                            f"p50 {fmt(o.p50_ms)} ms, p99 {fmt(o.p99_ms)} ms from the scheduled "
                            f"time; errors {o.errors}",
                        )
                    )
                finally:
                    bare.stop()
        await ensure_topics(
            BusConfig(broker.bootstrap, "bench-admin", 8), (*ALL_TOPICS, pb.RAW_TOPIC)
        )
        raw_args = argparse.Namespace(events=args.raw_events, timeout=120.0)
        raw = await pb.bench_raw("raw", broker, pb.envelope_size(), raw_args)
        for r in raw:
            lat = ""
            if r.latencies_ms:
                lat = f"send->consume p50 {fmt(r.pct(50))} ms, p99 {fmt(r.pct(99))} ms; "
            rows.append((r.path, f"{r.rate:.0f} msgs/s", f"{lat}{r.events} msgs {r.note}".strip()))
    finally:
        broker.stop()
    return rows


# --------------------------------------------------------------------------- report


def fmt(v: float | None, timeout: float | None = None) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return f">{timeout:g}s" if timeout else "inf"
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def step_tables(steps: list[Step], args: argparse.Namespace) -> list[str]:
    out = [
        "| step | offered/s | sent/s | 201/s | 201 in time | 429 | 503 (Retry-After) | other | "
        "timeouts (late 201) | "
        "intake p50 ms | intake p99 ms | confirmed | placed→confirmed p50 ms | p99 ms | "
        "not confirmed | drained after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        st = s.statuses
        ra = s.load["retry_after"]
        other = {k: v for k, v in st.items() if k not in (201, 429, 503)}
        conf = [x for x in s.confirm_ms if not math.isinf(x)]
        out.append(
            f"| {s.label} | {s.rate:g} | {s.load['sent_per_s']:.0f} | {s.load['ok_per_s']:.0f} | "
            f"{s.load['ok']} | {st.get(429, 0)} | {st.get(503, 0)} ({ra.get(503, 0)}) | "
            f"{sum(other.values()) or '-'}{' ' + str(other) if other else ''} | "
            f"{s.timeouts} ({st.get(201, 0) - s.load['ok']}) | "
            f"{fmt(s.load['p50_ms'], args.timeout)} | {fmt(s.load['p99_ms'], args.timeout)} | "
            f"{len(conf)} | {fmt(percentile(s.confirm_ms, 50), args.drain)} | "
            f"{fmt(percentile(s.confirm_ms, 99), args.drain)} | "
            f"{s.unsettled + s.routing_failed} | "
            f"{'-' if s.drain_s is None else f'{s.drain_s:.1f} s'} |"
        )
    out += [
        "",
        "Resources during each step's load window (cores = CPU seconds per second; RSS = peak "
        "MB during the step; events/s = `dropship_events_consumed_total` delta over the window):",
        "",
    ]
    procs = [*SERVICES, "broker", "postgres", "launcher"]
    out.append(
        "| step | "
        + " | ".join(f"{p} cpu" for p in procs)
        + " | generator cpu | machine busy | other | load1 | "
        + " | ".join(f"{p} RSS" for p in (*SERVICES, "broker"))
        + " | "
        + " | ".join(f"{p} ev/s" for p in CONSUMERS)
        + " |"
    )
    out.append("|---|" + "---:|" * (len(procs) + 4 + len(SERVICES) + 1 + len(CONSUMERS)))
    for s in steps:
        gen = s.load["gen_cpu_s"] / max(s.load["wall_s"], 1e-9)
        ours = sum(s.cpu.get(p, 0.0) for p in procs) + gen
        out.append(
            f"| {s.label} | "
            + " | ".join(f"{s.cpu.get(p, 0.0):.2f}" for p in procs)
            + f" | {gen:.2f} | {s.cpu['machine']:.2f} | {max(0.0, s.cpu['machine'] - ours):.2f}"
            + f" | {s.load1[1]:.2f} | "
            + " | ".join(f"{s.rss_kb.get(p, 0) / 1024:.0f}" for p in (*SERVICES, "broker"))
            + " | "
            + " | ".join(
                "?" if s.events.get(p) is None else f"{s.events[p]:.0f}" for p in CONSUMERS
            )
            + " |"
        )
    out += [
        "",
        "Supplier callback (webhook) acknowledgement, as the simulator timed its POSTs:",
        "",
    ]
    out.append("| step | kind | deliveries | first-try p50 ms | p99 ms | retried | failed |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for s in steps:
        for kind, w in s.webhook.items():
            out.append(
                f"| {s.label} | {kind} | {w['n']} | {fmt(w['p50'])} | {fmt(w['p99'])} | "
                f"{w['retried']} | {w['failed']} |"
            )
    return out


def overload_lines(steps: list[Step]) -> list[str]:
    out = []
    for s in steps:
        if not s.label.startswith(("overload", "probe")):
            continue
        per = s.load["by_second"]
        seconds = sorted({sec for sec, _ in per})
        cells = []
        for sec in seconds:
            counts = {st: n for (x, st), n in per.items() if x == sec}
            cells.append(f"{sec}s:" + "/".join(f"{st}x{n}" for st, n in sorted(counts.items())))
        out.append(
            f"- {s.label}, answers by second of the timetable: "
            + (", ".join(cells) or "none answered")
        )
    return out


# --------------------------------------------------------------------------- driver


def machine_info(pg_version: str) -> dict[str, str]:
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": f"{len(os.sched_getaffinity(0))} ({model})",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg_version,
    }


async def run(args: argparse.Namespace) -> int:
    from bench.pipeline import databases, server_version

    pg_server = os.environ.get("DROPSHIP_TEST_PG_URL", "")
    if not pg_server:
        raise SystemExit("bench/stack.py needs DROPSHIP_TEST_PG_URL: run it under deploy.testenv")
    machine = machine_info(await server_version())
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print("dropship whole-stack benchmark")
    print("  " + "  ".join(f"{k}={v}" for k, v in machine.items()))
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t_begin = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="dropship-stack-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env["DROPSHIP_TEST_PG_URL"] = pg_server
    env |= {
        "DROPSHIP_DATA_DIR": str(folder / "var"),
        "DROPSHIP_EMBEDDED_KAFKA_PORT": str(free_port()),
    }
    if args.log_level:
        env["DROPSHIP_LOG_LEVEL"] = args.log_level
    if args.max_inflight:
        env["DROPSHIP_MAX_INFLIGHT_REQUESTS"] = str(args.max_inflight)
    for name in SERVICES:
        env[f"DROPSHIP_{name.upper()}_PORT"] = str(free_port())
    steps: list[Step] = []
    base_rows: list[tuple[str, str, str]] = []
    notes: list[str] = []
    async with databases("postgresql", list(CONSUMERS)) as urls:
        for name in CONSUMERS:
            env[f"DROPSHIP_{name.upper()}_DATABASE_URL"] = urls[name]
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
            conf = Confirmations(f"127.0.0.1:{env['DROPSHIP_EMBEDDED_KAFKA_PORT']}")
            join = await conf.start()
            print(f"  bench consumer joined in {join:.1f}s")
            pg_root = postmaster_pid(pg_server)
            if args.idle > 0:  # what the stack costs with no orders at all
                await asyncio.sleep(2)
                a = await snapshot(stack.urls)
                await asyncio.sleep(args.idle)
                b = await snapshot(stack.urls)
                idle = cpu_cores(a, b, stack.pids, pg_root)
                notes.append(
                    f"idle, no orders, {args.idle:g} s before the warm-up: cores "
                    + ", ".join(f"{k} {v:.2f}" for k, v in idle.items())
                )
                print(f"  {notes[-1]}")
            if args.warmup > 0:
                w = await run_step(
                    stack, conf, "warm-up", args.warmup_rate, args.warmup, args, pg_root, 30
                )
                print(
                    f"  warm-up {args.warmup_rate:g}/s: {w.load['statuses']}, "
                    f"unsettled {w.unsettled}"
                )
            rates = sorted(args.rates)
            for n, rate in enumerate(rates):
                overload = n == len(rates) - 1 and args.probe_rate > 0 and len(rates) > 1
                label = f"overload {rate:g}/s" if overload else f"{rate:g}/s"
                await asyncio.sleep(args.pause)
                step = await run_step(
                    stack,
                    conf,
                    label,
                    rate,
                    args.seconds,
                    args,
                    pg_root,
                    0 if overload else args.drain,
                )
                steps.append(step)
                print(f"  {label}: {step.load['statuses']} errors {step.load['errors']}")
                if overload:
                    probe = await run_step(
                        stack,
                        conf,
                        f"probe {args.probe_rate:g}/s",
                        args.probe_rate,
                        args.probe_seconds,
                        args,
                        pg_root,
                        args.drain,
                    )
                    steps.append(probe)
                    print(f"  probe: {probe.load['statuses']} errors {probe.load['errors']}")
                    recount(step, conf)  # its backlog has drained (or the drain timed out)
            notes += await health_check(stack, folder)
            await webhook_acks(stack, steps)
            for name in SERVICES:
                size = (folder / "var" / "logs" / f"{name}.log").stat().st_size
                notes.append(f"{name} log {size / 1e6:.1f} MB")
        finally:
            if conf is not None:
                await conf.stop()
            stack.stop()
    if args.baselines:
        base_rows = await baselines(args, pg_server)
    t_end = datetime.now(UTC)
    lines = report(args, machine, command, steps, base_rows, notes, t_begin, t_end)
    print("\n".join(lines))
    if args.results:
        args.results.write_text("\n".join(lines) + "\n")
        print(f"\nwritten to {args.results}")
    if args.keep or any("py-spy dump" in n for n in notes):
        print(f"stack data and logs kept in {folder}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0


def recount(step: Step, conf: Confirmations) -> None:
    """Placed -> confirmed of the step's 201s, from what the bench consumer has seen so far
    (again after the probe for the overload step, which is not waited for)."""
    placed = step.load["placed"]
    start = step.load["start"]
    confirm_ms = []
    unsettled = failed = 0
    last = 0.0
    for i, (order_id, lines, _a) in placed.items():
        at = conf.confirmed_at(order_id, lines)
        if at is not None:
            confirm_ms.append((at - (start + i / step.rate)) * 1000)
            last = max(last, at)
        elif conf.failed.get(order_id):
            failed += 1
            confirm_ms.append(math.inf)
        else:
            unsettled += 1
            confirm_ms.append(math.inf)
    step.confirm_ms, step.unsettled, step.routing_failed = confirm_ms, unsettled, failed
    step.drain_s = (last - (start + step.seconds)) if last and not unsettled else None


def goal_lines(steps: list[Step]) -> list[str]:
    """Issue 7's goals next to this run's figures."""
    if not steps:
        return []
    best = max(steps, key=lambda s: s.load["ok_per_s"])
    at200 = next((s for s in steps if s.rate == 200), None)
    out = [
        "| goal (issue 7) | this run | met |",
        "|---|---|---|",
        f"| intake ≥ 700 orders/s on PostgreSQL | {best.load['ok_per_s']:.0f} 201/s in time "
        f"(step {best.label}) | {'yes' if best.load['ok_per_s'] >= 700 else 'no'} |",
    ]
    if at200 is None:
        return [*out, "| (no 200/s step: the other goals are not measured) | | |"]
    p99 = percentile(at200.confirm_ms, 99)
    out.append(
        f"| p99 placed→supplier-confirmed ≤ 250 ms at 200 orders/s | {fmt(p99)} ms "
        f"| {'yes' if p99 is not None and p99 <= 250 else 'no'} |"
    )
    ack = at200.webhook.get("callback")
    if ack:
        worse = ack["retried"] + ack["failed"]
        ok = ack["p99"] is not None and ack["p99"] <= 50 and not worse
        out.append(
            f"| webhook acknowledgement p99 ≤ 50 ms at 200/s | {fmt(ack['p99'])} ms first try, "
            f"{ack['retried']} retried of {ack['n']} | {'yes' if ok else 'no'} |"
        )
    return out


def report(
    args: argparse.Namespace,
    machine: dict[str, str],
    command: str,
    steps: list[Step],
    base_rows: list[tuple[str, str, str]],
    notes: list[str],
    t_begin: datetime,
    t_end: datetime,
) -> list[str]:
    ship = "default (1 s)" if args.ship_after_s is None else f"{args.ship_after_s:g} s"
    out = [
        f"run {t_begin:%Y-%m-%d %H:%M}-{t_end:%H:%M} UTC; "
        + "; ".join(f"{k} {v}" for k, v in machine.items()),
        f"command: `{command}`",
        f"settings: {args.seconds:g} s per rate, simulator latency {args.latency_ms:g} ms, "
        f"simulator ship_after_s {ship}, "
        f"intake timeout {args.timeout:g} s, generator {args.gen_procs} procs / "
        f"{args.max_conns} conns max, log level {args.log_level or 'default (INFO)'}, "
        f"max in-flight {args.max_inflight or 'default (64)'}",
        "",
        *step_tables(steps, args),
        "",
        *overload_lines(steps),
    ]
    out += ["", *goal_lines(steps)]
    if base_rows:
        out += ["", "Baselines, same run, stack stopped:", "", "| baseline | throughput | detail |"]
        out.append("|---|---:|---|")
        out += [f"| {a} | {b} | {c} |" for a, b, c in base_rows]
    if notes:
        out += ["", "notes: " + "; ".join(notes)]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--rates", default="50,100,200,400", help="orders/s; the highest is the overload step"
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of timetable per rate")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="simulator answer latency")
    ap.add_argument(
        "--ship-after-s",
        type=float,
        default=None,
        help="simulator ship_after_s (default: its own, 1 s: every order is also dispatched "
        "and tracked; 3600: routing and confirmation only)",
    )
    ap.add_argument(
        "--timeout", type=float, default=5.0, help="an intake request slower than this fails"
    )
    ap.add_argument(
        "--drain", type=float, default=60.0, help="max seconds to wait for confirmations"
    )
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between steps")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of unreported warm-up")
    ap.add_argument("--warmup-rate", type=float, default=20.0)
    ap.add_argument(
        "--idle", type=float, default=10.0, help="seconds of CPU measured with no orders first"
    )
    ap.add_argument(
        "--probe-rate", type=float, default=20.0, help="recovery probe after the overload"
    )
    ap.add_argument("--probe-seconds", type=float, default=10.0)
    ap.add_argument("--gen-procs", type=int, default=2)
    ap.add_argument("--conns", type=int, default=32, help="connections opened before each step")
    ap.add_argument("--max-conns", type=int, default=512, help="generator connection cap")
    ap.add_argument(
        "--log-level", default="", help="DROPSHIP_LOG_LEVEL for the stack (default: unset)"
    )
    ap.add_argument("--max-inflight", type=int, default=0, help="DROPSHIP_MAX_INFLIGHT_REQUESTS")
    ap.add_argument("--no-baselines", dest="baselines", action="store_false")
    ap.add_argument("--baseline-seconds", type=float, default=10.0)
    ap.add_argument("--bare-workers", type=int, default=1, help="uvicorn workers of the bare app")
    ap.add_argument("--raw-events", type=int, default=20000)
    ap.add_argument("--results", type=Path, default=None, help="write the markdown here")
    ap.add_argument("--keep", action="store_true", help="keep the stack's data dir and logs")
    args = ap.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
