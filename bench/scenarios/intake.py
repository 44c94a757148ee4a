"""Order intake: POST /v1/orders on the order service against a bare FastAPI insert.

    python -m deploy.testenv -- .venv/bin/python -m bench intake
    .venv/bin/python -m bench intake --duration 5                 # sqlite only, quick look

Per backend (SQLite, and PostgreSQL under deploy.testenv) the order service runs as in
production (`uvicorn --factory services.order.app:create_app --workers 2`, outbox relay
publishing to a tansu broker) next to bench/bare_app.py, the floor: 2 workers, one
pydantic model, one INSERT. Each gets a closed-loop capacity run with wrk and open-model
runs at fixed arrival rates (latency from the scheduled send time). Needs wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import tempfile
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import fastapi
import httpx
import pydantic
import sqlalchemy
import uvicorn

from bench import bare_app
from bench.harness import profile
from bench.harness.cli import Scenario, add_backends, floats, words
from bench.harness.clock import perf
from bench.harness.dbs import databases, db_root, scalar, server_version
from bench.harness.generator import LoadOptions, order_body
from bench.harness.load import open_load, run_wrk
from bench.harness.procs import REPO, CpuMeter, Usage, UvicornApp, clean_env
from bench.harness.report import (
    Output,
    background_load,
    machine,
    noisy_warning,
    tool_version,
    versions,
)
from bench.harness.stats import fmt_ms
from services.order.app import MIGRATIONS
from services.order.pii import generate_key
from shared.db import migrate
from shared.infra import EmbeddedBroker

LUA = str(REPO / "bench" / "intake_order.lua")
API_KEY = "dev-api-key"
UNPUBLISHED = "SELECT count(*) FROM outbox_event WHERE published_at IS NULL"

# What a sample of an order-service worker was doing: the first rule whose marker is on
# the stack (specific to general); "db:" samples are split by their leaf-most frame.
PHASES: profile.Rules = (
    ("outbox relay (select, publish, mark)", ("shared/outbox.py",)),
    ("Kafka consumer loop (idle group)", ("shared/consumer.py", "aiokafka/consumer/")),
    ("aiokafka producer / client", ("aiokafka/",)),
    ("request: read body + JSON parse", ("Request.body (", "Request.json (", "_get_body")),
    (
        "request: validation (pydantic, e-mail, pycountry)",
        ("request_body_to_args", "_validate_value", "email_validator/", "pycountry/"),
    ),
    ("request: sync deps via threadpool", ("run_in_threadpool", "to_thread", "run_sync")),
    ("request: dependency solving", ("solve_dependencies",)),
    ("handler: PII AES-GCM + HMAC", ("PiiCipher.", "cryptography/", "hmac.py")),
    ("handler: idempotency fingerprint", ("model_dump (", "hashlib")),
    ("handler: render_order + JSONResponse", ("render_order (", "starlette/responses.py")),
    (profile.DB, profile.DB_MARKERS),
    ("handler: domain, uow, events (ours)", ("create_order (services/order/api.py",)),
)


COST = re.compile(
    r"^dropship_(db_statements|db_transactions)_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", re.MULTILINE
)
"""The cost model's counters: database round trips and transactions (commits and rollbacks)."""
STARTED = re.compile(r"^process_start_time_seconds\s+([0-9.eE+-]+)$", re.MULTILINE)
"""Tells the workers apart: each answers `/metrics` from its own counters."""
Costs = dict[str, dict[str, float]]


async def worker_costs(base: str, workers: int) -> Costs:
    """Each worker's cost counters, by its start time; a new connection per scrape lets the
    kernel hand it to any worker (up to 20 tries per worker)."""
    seen: Costs = {}
    for _ in range(20 * workers):
        async with httpx.AsyncClient(timeout=5.0) as client:
            text = (await client.get(base + "/metrics")).text
        started = STARTED.search(text)
        costs: dict[str, float] = defaultdict(float)
        for kind, value in COST.findall(text):
            costs[kind] += float(value)
        seen[started.group(1) if started else "?"] = dict(costs)
        if len(seen) >= workers:
            break
    return seen


def per_order(before: Costs, after: Costs, ok: int, workers: int) -> str:
    """Statements and transactions per 201 over every worker; '' unless all were seen."""
    if not ok or len(before) < workers or set(before) != set(after):
        return ""
    got = {
        kind: sum(after[w].get(kind, 0.0) - before[w].get(kind, 0.0) for w in before) / ok
        for kind in ("db_statements", "db_transactions")
    }
    return (
        f"per 201: {got['db_statements']:.2f} statements, {got['db_transactions']:.3f} transactions"
    )


@dataclass(frozen=True)
class Load:
    """How each target is loaded: wrk's closed loop and the open-model generator."""

    duration: float = 15.0
    threads: int = 2
    connections: int = 64
    gen_procs: int = 2
    max_conns: int = 256
    timeout: float = 5.0

    def generator(self, seed: int = 1) -> LoadOptions:
        return LoadOptions(
            procs=self.gen_procs,
            conns=self.connections,
            max_conns=self.max_conns,
            timeout=self.timeout,
            api_key=API_KEY,
            seed=seed,
        )


@dataclass
class Row:
    """One line of the table: one target under one load."""

    backend: str
    target: str
    load: str
    offered: float | None  # requests/s offered (None: closed loop)
    sent_per_s: float | None
    ok: int  # 201 answers
    ok_per_s: float
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # cores used during the phase
    note: str = ""


def table(out: Output, rows: list[Row], timeout: float) -> None:
    def line(r: Row) -> str:
        offered = "-" if r.offered is None else f"{r.offered:g}/s"
        sent = "-" if r.sent_per_s is None else f"{r.sent_per_s:.0f}"
        app, db = r.cpu.get("app", 0.0), r.cpu.get("db")
        per_ok = f"{app * r.cpu.get('wall', 0.0) / r.ok * 1000:.2f}" if r.ok else "-"
        lat = "".join(f"{fmt_ms(v, timeout):>8}" for v in (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms))
        return (
            f"{r.target:<15}{r.load:<17}{offered:>8}{sent:>8}{r.ok_per_s:>8.0f}{lat}{r.errors:>7}"
            f"{app:>9.2f}{'-' if db is None else f'{db:.2f}':>7}{r.cpu.get('gen', 0.0):>8.2f}"
            f"{r.cpu.get('other', 0.0):>7.2f}{per_ok:>11}  {r.note}"
        )

    out.table(
        f"{'target':<15}{'load':<17}{'offered':>8}{'sent/s':>8}{'201/s':>8}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'errors':>7}"
        f"{'app cpu':>9}{'db cpu':>7}{'gen cpu':>8}{'other':>7}{'app ms/201':>11}  note",
        map(line, rows),
    )


@dataclass
class Target(UvicornApp):
    """The order service or the bare app, answering storefront orders."""

    ok_total: int = 0  # every 201 this target gave, all phases
    broker_pid: int | None = None
    db_root: int | None = None  # the postmaster (None on SQLite: the database is in-process)

    async def sanity(self) -> None:
        """One order must give 201, or nothing that follows means anything."""
        headers = {"X-API-Key": API_KEY, "Idempotency-Key": f"sanity-{uuid.uuid4().hex}"}
        async with httpx.AsyncClient(timeout=10.0) as client:
            r = await client.post(
                self.base + "/v1/orders", json=order_body(random.Random(0), 0), headers=headers
            )
        if r.status_code != 201:
            raise RuntimeError(f"{self.name}: sample order got {r.status_code}: {r.text[:500]}")
        self.ok_total += 1

    def cores(self, u: Usage, gen_cpu_s: float | None = None) -> tuple[dict[str, float], str]:
        """Cores of the workers, PostgreSQL, broker and generator; the per-worker split."""
        per_worker = [u.cores(p) for p in self.worker_pids]
        app_s = sum(u.cpu_s(p) for p in self.worker_pids)
        sys_share = sum(u.cpu_s(p, kernel=True) for p in self.worker_pids) / app_s if app_s else 0
        gen = (u.children_s if gen_cpu_s is None else gen_cpu_s) / u.wall
        master = u.cores(self.pid) if self.workers > 1 else 0.0
        db = u.db_cores(self.db_root)
        broker = u.cores(self.broker_pid)
        known = sum(per_worker) + master + db + broker + gen + u.bench
        out = {"app": sum(per_worker), "broker": broker, "gen": gen, "wall": u.wall}
        out["other"] = max(0.0, u.machine - known)
        if self.db_root is not None:
            out["db"] = db
        split = "/".join(f"{c:.2f}" for c in per_worker)
        return out, f"{split} ({100 * sys_share:.0f}% sys)"


async def wrk_row(backend: str, target: Target, load: Load, run_id: str) -> Row:
    """Closed loop: wrk at `load.connections` for `load.duration` seconds."""
    counted = target.name == "order service"  # the bare app keeps no counters
    before = await worker_costs(target.base, target.workers) if counted else {}
    with CpuMeter() as meter:
        res = await run_wrk(
            target.base, LUA, load.threads, load.connections, load.duration, load.timeout, run_id
        )
    ok = res.statuses.get(201, 0)
    after = await worker_costs(target.base, target.workers) if counted else {}
    costs = per_order(before, after, ok, target.workers)
    target.ok_total += ok
    others = {k: v for k, v in res.statuses.items() if k != 201}
    cpu, split = target.cores(meter.usage)
    note = [f"closed loop, {load.connections} conns; workers {split}"]
    if costs:
        note.append(costs)
    if others:
        note.append(f"non-201 {dict(sorted(others.items()))}")
    if res.socket_errors:
        note.append(f"socket {res.socket_errors}")
    errors = sum(others.values()) + sum(res.socket_errors.values())
    return Row(
        backend, target.name, f"wrk {load.connections}c", None, None, ok, ok / res.seconds,
        res.p50_ms, res.p90_ms, res.p99_ms, res.max_ms, errors, cpu, "; ".join(note),
    )  # fmt: skip


async def open_row(
    backend: str, target: Target, load: Load, rate: float, duration: float, run_id: str
) -> Row:
    """Open model: `rate` orders/s for `duration` seconds, latency from the due time."""
    started, job = await open_load(
        target.base + "/v1/orders", rate, duration, load.generator(), run_id
    )
    await started  # generator processes up, connections open
    with CpuMeter() as meter:
        res = await job
    ok = res.statuses.get(201, 0)
    target.ok_total += ok
    ok_per_s = ok / res.ok_span_s
    others = {k: v for k, v in res.statuses.items() if k != 201}
    errs = {k: v for k, v in res.errors.items() if v}
    cpu, split = target.cores(meter.usage, res.gen_cpu_s)
    late = res.late_p99_ms or 0.0
    note = [f"late p99 {late:.1f} ms; workers {split}"]
    if late > 5 or res.sent_per_s < 0.98 * rate:
        note.insert(0, "GENERATOR LAGGED" if res.conns_max < load.max_conns else "CONNS CAPPED")
    if ok_per_s < 0.97 * rate:
        note.insert(0, "BELOW OFFERED")
    if res.conns_max > res.conns_opened:
        note.append(f"conns {res.conns_opened}->{res.conns_max}")
    if others:
        note.append(f"non-201 {dict(sorted(others.items()))}")
    if errs:
        note.append(f"errors {errs}")
    return Row(
        backend, target.name, f"open {rate:g}/s", rate, res.sent_per_s, ok, ok_per_s,
        res.p50_ms, res.p90_ms, res.p99_ms, res.max_ms,
        sum(others.values()) + sum(errs.values()), cpu, "; ".join(note),
    )  # fmt: skip


async def profile_row(
    backend: str, target: Target, load: Load, seconds: int, out_dir: Path
) -> tuple[Row, list[str]]:
    """wrk at saturation while py-spy samples the first worker (raw collapsed stacks)."""
    out = out_dir / f"intake-{backend}-order-worker.folded"
    pid = target.worker_pids[0]
    longer = Load(**{**asdict(load), "duration": seconds + 3})
    spy = profile.record(pid, seconds, out, rate=250, delay=1.5)
    row, cmd = await asyncio.gather(wrk_row(backend, target, longer, "prof"), spy)
    row.load = f"wrk {load.connections}c+py-spy"
    lines = [f"where the time goes: order service on {backend}, under wrk {load.connections}c"]
    lines += ["  " + " ".join(cmd), *profile.summarise(out, PHASES, top=12)]
    return row, lines


async def drain_outbox(url: str, within: float = 60.0) -> str:
    """Wait for the relay to publish everything; says how far behind it was."""
    backlog = left = await scalar(url, UNPUBLISHED)
    if not backlog:
        return "outbox 0 behind"
    t0 = perf()
    while left and perf() - t0 < within:
        await asyncio.sleep(0.1)
        left = await scalar(url, UNPUBLISHED)
    if left:
        return f"outbox {backlog} behind, {left} left after {within:.0f}s"
    return f"outbox {backlog} behind, drained {perf() - t0:.1f}s"


async def bench_target(
    backend: str, target: Target, db_url: str, args: argparse.Namespace, profiled: bool
) -> tuple[list[Row], list[str]]:
    load = load_of(args)
    is_order = target.name == "order service"
    tag = uuid.uuid4().hex[:6]
    rows: list[Row] = []
    extra: list[str] = []

    async def settled(row: Row) -> Row:
        if is_order:
            row.note += "; " + await drain_outbox(db_url)
        return row

    target.start()
    try:
        t0 = perf()
        await target.wait_ready()
        await target.sanity()
        extra.append(f"  {target.name}: ready in {perf() - t0:.1f}s, workers {target.worker_pids}")
        # warm-up: connection pools, prepared statements, imports on first use; not reported
        await settled(
            await open_row(backend, target, load, args.warmup_rate, args.warmup, "w" + tag)
        )
        rows.append(await settled(await wrk_row(backend, target, load, "c" + tag)))
        for rate in args.rates:
            row = await open_row(backend, target, load, rate, args.duration, f"r{rate:g}{tag}")
            rows.append(await settled(row))
        if profiled:
            row, lines = await profile_row(
                backend, target, load, args.profile_seconds, args.profile
            )
            rows.append(await settled(row))
            extra = [*lines, "", *extra]
    finally:
        target.stop()
    if is_order:
        orders = await scalar(db_url, "SELECT count(*) FROM customer_order")
        outbox = await scalar(db_url, "SELECT count(*) FROM outbox_event")
        left = await scalar(db_url, UNPUBLISHED)
        extra.append(
            f"  {target.name}: {orders} orders in the database, {target.ok_total} 201s counted "
            f"(incl. warm-up); {outbox} outbox rows, {left} unpublished"
        )
    else:
        count = await scalar(db_url, "SELECT count(*) FROM bare_order")
        extra.append(
            f"  {target.name}: {count} rows in the database, {target.ok_total} 201s counted"
        )
    return rows, extra


def load_of(args: argparse.Namespace) -> Load:
    return Load(
        args.duration, args.threads, args.connections, args.gen_procs, args.max_conns, args.timeout
    )


def bare_target(
    url: str, workers: int, log: Path, broker_pid: int | None, root: int | None
) -> Target:
    """bench/bare_app.py on the database at `url` (its table must exist)."""
    env = clean_env(BENCH_BARE_DATABASE_URL=url)
    return Target("bare FastAPI", "bench.bare_app:create_app", env, workers, log,
                  broker_pid=broker_pid, db_root=root)  # fmt: skip


async def run_backend(backend: str, args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    broker = EmbeddedBroker(log_path=args.broker_log).start()
    broker_pid = broker.process.pid if broker.process else None
    root = db_root(backend)
    rows: list[Row] = []
    notes: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dropship-intake-") as tmp:
            async with databases(backend, ["order", "bare"]) as urls:
                await asyncio.to_thread(migrate, MIGRATIONS, urls["order"])
                await asyncio.to_thread(bare_app.create_table, urls["bare"])
                order = Target(
                    "order service",
                    "services.order.app:create_app",
                    clean_env(
                        DROPSHIP_ORDER_DATABASE_URL=urls["order"],
                        DROPSHIP_KAFKA_BOOTSTRAP=broker.bootstrap,
                        DROPSHIP_PII_KEY=generate_key(),
                        DROPSHIP_MIGRATE_ON_START="false",
                        DROPSHIP_LOG_LEVEL="WARNING",
                        DROPSHIP_DATA_DIR=tmp,
                    ),
                    args.workers,
                    Path(tmp) / "order.log",
                    broker_pid=broker_pid,
                    db_root=root,
                )
                order.env["DROPSHIP_ORDER_PORT"] = str(order.port)
                if args.linger_ms is not None:
                    order.env["DROPSHIP_ORDER_INTAKE_LINGER_MS"] = f"{args.linger_ms:g}"
                if args.intake_writers is not None:
                    order.env["DROPSHIP_ORDER_INTAKE_WRITERS"] = str(args.intake_writers)
                bare = bare_target(
                    urls["bare"], args.workers, Path(tmp) / "bare.log", broker_pid, root
                )
                profiled = args.profile is not None and backend == args.profile_backend
                for target, url in ((order, urls["order"]), (bare, urls["bare"])):
                    if target.name.split()[0] not in args.targets:
                        continue
                    try:
                        got, extra = await bench_target(
                            backend, target, url, args, profiled and target is order
                        )
                    except Exception:
                        print(f"--- {target.name} log (tail) ---\n{target.log_tail()}")
                        raise
                    rows += got
                    notes += extra
    finally:
        broker.stop()
    return rows, notes


def options(ap: argparse.ArgumentParser) -> None:
    add_backends(ap)
    ap.add_argument("--targets", type=words, default=["order", "bare"], help="order, bare or both")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    ap.add_argument(
        "--rates", type=floats, default=[300.0, 700.0], help="open-model orders/s (default 300,700)"
    )
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers per app")
    ap.add_argument(
        "--linger-ms", type=float, default=None,
        help="the order service's DROPSHIP_ORDER_INTAKE_LINGER_MS (default: its own; 0: no groups)",
    )  # fmt: skip
    ap.add_argument("--intake-writers", type=int, help="DROPSHIP_ORDER_INTAKE_WRITERS (0: auto)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--gen-procs", type=int, default=2, help="open-model generator processes")
    ap.add_argument("--max-conns", type=int, default=256, help="open-model connection cap")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds before a request fails")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per app")
    ap.add_argument("--warmup-rate", type=float, default=150.0, help="warm-up orders/s")
    ap.add_argument(
        "--profile", type=Path, default=None, metavar="DIR",
        help="also py-spy one order-service worker under wrk; collapsed stacks go to DIR",
    )  # fmt: skip
    ap.add_argument("--profile-seconds", type=int, default=10, help="py-spy duration (default 10)")
    ap.add_argument(
        "--profile-backend", default=None, help="backend to profile (default: postgresql if run)"
    )


async def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.profile_backend is None:
        args.profile_backend = "postgresql" if "postgresql" in args.backends else args.backends[0]
    out = Output(args.results)
    pg = await server_version() if "postgresql" in args.backends else "-"
    info = machine(
        **versions(uvicorn, fastapi, pydantic, sqlalchemy, asyncpg),
        wrk=tool_version(["wrk", "--version"]),
        postgresql=pg,
    )
    out("dropship order intake benchmark", "  " + "  ".join(f"{k}={v}" for k, v in info.items()))
    out(
        f"  workers={args.workers} duration={args.duration:g}s "
        f"rates={','.join(f'{r:g}' for r in args.rates)}/s wrk=-t{args.threads} "
        f"-c{args.connections} gen-procs={args.gen_procs} timeout={args.timeout:g}s "
        f"backends={','.join(args.backends)}",
        "  one machine: app workers, database, broker and load generator share the cores; "
        "cpu columns are cores used",
    )
    await background_load(out)
    rows: list[Row] = []
    for backend in args.backends:
        t0 = perf()
        backend_rows, notes = await run_backend(backend, args)
        rows += backend_rows
        out(f"== {backend}")
        table(out, backend_rows, args.timeout)
        out(*notes, f"  ({backend} run took {perf() - t0:.1f}s incl. start-up and warm-up)", "")
    noisy_warning(out, (r.cpu for r in rows), "; app ms/201 holds up best")
    out(
        "latency: wrk rows are closed loop (includes queueing behind the connections); open rows "
        "are from each request's scheduled time, nearest-rank, failures count as slowest"
    )
    if args.json:
        out.json(info, [asdict(r) for r in rows])
    out.save()
    return 0


SCENARIO = Scenario("intake", __doc__ or "", options, run)
