"""Order intake benchmark: POST /v1/orders on the order service vs a bare FastAPI insert.

    python -m deploy.testenv -- .venv/bin/python bench/intake.py

Per backend (SQLite, and PostgreSQL under deploy.testenv) the order service runs as in
production (`uvicorn --factory services.order.app:create_app --workers 2`, outbox relay
publishing to a tansu broker) next to bench/bare_app.py, the floor: 2 workers, one
pydantic model, one INSERT. Each gets a closed-loop capacity run with wrk and open-model
runs at fixed arrival rates with bench/loadgen.py (latency from the scheduled send time).
Prints figures, asserts nothing. See bench/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import fastapi
import httpx
import pydantic
import sqlalchemy
import uvicorn
from sqlalchemy.engine import make_url

if __package__ in (None, ""):  # run as a script: make `bench.*` importable as with -m
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bare_app
from bench._common import (  # bench/notify.py imports some of these from here
    ASGI_LEAVES,
    DB_LEAVES,
    LIBRARIES,
    REPO,
    TICK,
    UvicornApp,
    busy_cores,
    fmt_ms,
    leaf_label,
    machine_busy_ticks,
    perf,
    postmaster_pid,
    proc_ticks,
    py_spy,
    read_collapsed,
)
from bench.loadgen import order_body
from bench.pipeline import databases, server_version
from services.order.app import MIGRATIONS
from services.order.pii import generate_key
from shared.db import migrate
from shared.infra import EmbeddedBroker

LUA = REPO / "bench" / "intake_order.lua"
LOADGEN = REPO / "bench" / "loadgen.py"
API_KEY = "dev-api-key"


# --------------------------------------------------------------------------- results


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

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        for k, v in data.items():
            if isinstance(v, float):
                data[k] = None if math.isinf(v) else round(v, 2)
        data["cpu"] = {k: round(v, 3) for k, v in self.cpu.items()}
        return data


def print_table(rows: list[Row], timeout: float) -> None:
    header = (
        f"{'target':<15}{'load':<17}{'offered':>8}{'sent/s':>8}{'201/s':>8}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'errors':>7}"
        f"{'app cpu':>9}{'db cpu':>7}{'gen cpu':>8}{'other':>7}{'app ms/201':>11}  note"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        offered = "-" if r.offered is None else f"{r.offered:g}/s"
        sent = "-" if r.sent_per_s is None else f"{r.sent_per_s:.0f}"
        app = r.cpu.get("app", 0.0)
        per_ok = f"{app * r.cpu.get('wall', 0.0) / r.ok * 1000:.2f}" if r.ok else "-"
        db = r.cpu.get("db")
        print(
            f"{r.target:<15}{r.load:<17}{offered:>8}{sent:>8}{r.ok_per_s:>8.0f}"
            f"{fmt_ms(r.p50_ms, timeout):>8}{fmt_ms(r.p90_ms, timeout):>8}"
            f"{fmt_ms(r.p99_ms, timeout):>8}{fmt_ms(r.max_ms, timeout):>8}{r.errors:>7}"
            f"{app:>9.2f}{'-' if db is None else f'{db:.2f}':>7}{r.cpu.get('gen', 0.0):>8.2f}"
            f"{r.cpu.get('other', 0.0):>7.2f}{per_ok:>11}  {r.note}"
        )
    print()


# --------------------------------------------------------------------------- cpu accounting


@dataclass(frozen=True)
class Infra:
    broker_pid: int | None
    db_pid: int | None  # the postmaster (None on SQLite: the database is in the workers)


class CpuMeter:
    """Cores used during a phase: app workers, PostgreSQL, broker, load generator, others.

    `other` is whatever else kept the machine busy (another test run, say): when it is
    well above zero the figures are lower than the machine can do.
    """

    def __init__(self, target: Target, infra: Infra) -> None:
        self.workers = target.worker_pids
        self.master = target.proc.pid if target.proc else None
        self.infra = infra

    def __enter__(self) -> CpuMeter:
        self.t0 = perf()
        self.before = proc_ticks()
        self.busy0 = machine_busy_ticks()
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = perf() - self.t0
        after = proc_ticks()
        busy = (machine_busy_ticks() - self.busy0) / TICK
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)

        def used(pid: int | None) -> float:
            if pid is None or pid not in after:
                return 0.0
            return max(0, after[pid][2] - self.before.get(pid, ("", 0, 0, 0))[2]) / TICK

        def kernel(pid: int) -> float:
            if pid not in after:
                return 0.0
            return max(0, after[pid][3] - self.before.get(pid, ("", 0, 0, 0))[3]) / TICK

        def rusage(a: resource.struct_rusage, b: resource.struct_rusage) -> float:
            return (b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime)

        root = self.infra.db_pid
        db_pids = [p for p, (_, ppid, *_) in after.items() if root and (p == root or ppid == root)]
        self.per_worker = [used(p) / self.wall for p in self.workers]
        app_s = sum(used(p) for p in self.workers)
        self.app_sys = sum(kernel(p) for p in self.workers) / app_s if app_s else 0.0
        self.db = sum(used(p) for p in db_pids) / self.wall
        self.broker = used(self.infra.broker_pid) / self.wall
        self.master_cores = used(self.master) / self.wall
        self.bench = rusage(self.self0, me) / self.wall
        self.children = rusage(self.children0, children)  # wrk / loadgen, once they exited
        self.busy = busy / self.wall

    def cores(self, gen_cpu_s: float | None = None) -> dict[str, float]:
        gen = (self.children if gen_cpu_s is None else gen_cpu_s) / self.wall
        app = sum(self.per_worker)
        known = app + self.master_cores + self.db + self.broker + gen + self.bench
        out = {"app": app, "broker": self.broker, "gen": gen, "wall": self.wall}
        out["other"] = max(0.0, self.busy - known)
        if self.infra.db_pid is not None:
            out["db"] = self.db
        return out

    def split(self) -> str:
        """Cores per worker, and the kernel's share of the workers' CPU time."""
        per = "/".join(f"{c:.2f}" for c in self.per_worker)
        return f"{per} ({100 * self.app_sys:.0f}% sys)"


# --------------------------------------------------------------------------- targets


@dataclass
class Target(UvicornApp):
    """The order service or the bare app, answering storefront orders."""

    ok_total: int = 0  # every 201 this target gave, all phases

    async def sanity(self) -> None:
        """One order must give 201, or nothing that follows means anything."""
        headers = {"X-API-Key": API_KEY, "Idempotency-Key": f"sanity-{uuid.uuid4().hex}"}
        body = order_body(random.Random(0), 0)
        async with httpx.AsyncClient(timeout=10.0) as client:
            r = await client.post(self.base + "/v1/orders", json=body, headers=headers)
        if r.status_code != 201:
            raise RuntimeError(f"{self.name}: sample order got {r.status_code}: {r.text[:500]}")
        self.ok_total += 1


# --------------------------------------------------------------------------- databases


async def scalar(url: str, sql: str) -> int:
    """One integer from the database behind a SQLAlchemy URL (without taking write locks)."""
    if make_url(url).get_backend_name() == "sqlite":
        path = make_url(url).database or ""

        def read() -> int:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                return int(conn.execute(sql).fetchone()[0])
            finally:
                conn.close()

        return await asyncio.to_thread(read)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


UNPUBLISHED = "SELECT count(*) FROM outbox_event WHERE published_at IS NULL"


async def drain_outbox(url: str, within: float = 60.0) -> str:
    """Wait for the relay to publish everything; says how far behind it was."""
    backlog = await scalar(url, UNPUBLISHED)
    if not backlog:
        return "outbox 0 behind"
    t0 = perf()
    left = backlog
    while left and perf() - t0 < within:
        await asyncio.sleep(0.1)
        left = await scalar(url, UNPUBLISHED)
    if left:
        return f"outbox {backlog} behind, {left} left after {within:.0f}s"
    return f"outbox {backlog} behind, drained {perf() - t0:.1f}s"


# --------------------------------------------------------------------------- load


async def run_wrk(
    backend: str, target: Target, infra: Infra, args: argparse.Namespace, run_id: str
) -> Row:
    seconds = max(1, round(args.duration))
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        f"{args.timeout:g}s",
        "-s",
        str(LUA),
        target.base,
        "--",
        run_id,
    ]
    with CpuMeter(target, infra) as meter:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("BENCH-JSON ")]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{out.decode()}\n{err.decode()}")
    res = json.loads(lines[-1].removeprefix("BENCH-JSON "))
    statuses = {int(k): v for k, v in res["statuses"].items()}
    ok = statuses.get(201, 0)
    target.ok_total += ok
    others = {k: v for k, v in statuses.items() if k != 201}
    sock = {k: v for k, v in res["errors"].items() if v and k != "status"}
    secs = res["duration_us"] / 1e6
    note = [f"closed loop, {args.connections} conns; workers {meter.split()}"]
    if others:
        note.append(f"non-201 {dict(sorted(others.items()))}")
    if sock:
        note.append(f"socket {sock}")
    return Row(
        backend,
        target.name,
        f"wrk {args.connections}c",
        None,
        None,
        ok,
        ok / secs,
        res["p50_us"] / 1000,
        res["p90_us"] / 1000,
        res["p99_us"] / 1000,
        res["max_us"] / 1000,
        sum(others.values()) + sum(sock.values()),
        meter.cores(),
        "; ".join(note),
    )


async def run_open(
    backend: str,
    target: Target,
    infra: Infra,
    rate: float,
    duration: float,
    args: argparse.Namespace,
    run_id: str,
) -> tuple[Row, dict[str, Any]]:
    cmd = [
        sys.executable,
        str(LOADGEN),
        "--url",
        target.base + "/v1/orders",
        "--rate",
        f"{rate:g}",
        "--duration",
        f"{duration:g}",
        "--procs",
        str(args.gen_procs),
        "--conns",
        str(args.connections),
        "--max-conns",
        str(args.max_conns),
        "--timeout",
        f"{args.timeout:g}",
        "--api-key",
        API_KEY,
        "--run-id",
        run_id,
        "--json",
    ]
    with tempfile.TemporaryFile() as errfile:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=errfile
        )
        assert proc.stdout is not None
        await proc.stdout.readline()  # "# started": processes up, connections open
        with CpuMeter(target, infra) as meter:
            out = await proc.stdout.read()
            await proc.wait()
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"loadgen failed ({proc.returncode}):\n{err[-3000:]}")
    res: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    statuses = {int(k): v for k, v in res["statuses"].items()}
    ok = statuses.get(201, 0)
    target.ok_total += ok
    ok_per_s = ok / res["ok_span_s"]
    others = {k: v for k, v in statuses.items() if k != 201}
    errs = {k: v for k, v in res["errors"].items() if v}
    note = [f"late p99 {res['late_p99_ms']:.1f} ms; workers {meter.split()}"]
    if (res["late_p99_ms"] or 0) > 5 or res["sent_per_s"] < 0.98 * rate:
        note.insert(0, "GENERATOR LAGGED" if res["conns_max"] < args.max_conns else "CONNS CAPPED")
    if ok_per_s < 0.97 * rate:
        note.insert(0, "BELOW OFFERED")
    if res["conns_max"] > res["conns_opened"]:
        note.append(f"conns {res['conns_opened']}->{res['conns_max']}")
    if others:
        note.append(f"non-201 {dict(sorted(others.items()))}")
    if errs:
        note.append(f"errors {errs}")
    row = Row(
        backend,
        target.name,
        f"open {rate:g}/s",
        rate,
        res["sent_per_s"],
        ok,
        ok_per_s,
        res["p50_ms"],
        res["p90_ms"],
        res["p99_ms"],
        res["max_ms"],
        sum(others.values()) + sum(errs.values()),
        meter.cores(res["gen_cpu_s"]),
        "; ".join(note),
    )
    return row, res


# --------------------------------------------------------------------------- profiling


# What a sample of the worker was doing. The first PHASES rule whose marker appears
# anywhere on the stack wins (specific to general); a stack no rule matches is named by
# its leaf-most frame in ASGI_LEAVES. Database samples are split by their leaf-most
# SQLAlchemy/asyncpg frame. SQLAlchemy's async layer runs statements in greenlets whose
# stacks start at `Session.execute` (the request frames above are not visible there):
# those count as database work, whoever issued them.
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
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
    ("db:", ("asyncpg/", "sqlalchemy/", "greenlet")),
    ("handler: domain, uow, events (ours)", ("create_order (services/order/api.py",)),
)


def summarise_profile(path: Path, top: int = 12) -> list[str]:
    """Percentages from py-spy's collapsed stacks (`--format raw`) of one worker."""
    stacks, total = read_collapsed(path)
    if not total:
        return ["  (no samples)"]
    phases: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        joined = ";".join(frames)
        phase = next((n for n, keys in PHASES if any(k in joined for k in keys)), None)
        if phase == "db:":
            phase = leaf_label(frames, DB_LEAVES)
        elif phase is None:
            phase = leaf_label(frames, ASGI_LEAVES) if frames else "native code, no Python frame"
        phases[phase or "other"] += count
        library = leaf_label(frames, LIBRARIES) or "other"
        libraries[library if frames else "native code, no Python frame"] += count
        leaves[frames[-1] if frames else "(native)"] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    out = [f"  {total} samples while the worker held the GIL (its Python CPU time)", ""]
    out.append("  by phase (first matching rule on the stack):")
    out += [f"    {pct(n)}  {name}" for name, n in phases.most_common()]
    out += ["", "  by library (leaf-most frame in a known package):"]
    out += [f"    {pct(n)}  {name}" for name, n in libraries.most_common()]
    out += ["", f"  top {top} functions by self time:"]
    out += [f"    {pct(n)}  {frame[:100]}" for frame, n in leaves.most_common(top)]
    return out


async def run_profile(
    backend: str, target: Target, infra: Infra, args: argparse.Namespace, out_dir: Path
) -> tuple[Row, list[str]]:
    """wrk at saturation while py-spy samples the first worker (raw collapsed stacks)."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    out = out_dir / f"intake-{backend}-order-worker.folded"
    seconds = args.profile_seconds
    run = argparse.Namespace(**{**vars(args), "duration": seconds + 3})
    spy_cmd = [
        spy,
        "record",
        "--pid",
        str(target.worker_pids[0]),
        "--duration",
        str(seconds),
        "--rate",
        "250",
        "--gil",
        "--format",
        "raw",
        "--output",
        str(out),
    ]

    async def record() -> None:
        await asyncio.sleep(1.5)
        proc = await asyncio.create_subprocess_exec(
            *spy_cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")

    row, _ = await asyncio.gather(run_wrk(backend, target, infra, run, "prof"), record())
    row.load = f"wrk {args.connections}c+py-spy"
    lines = [f"where the time goes: order service on {backend}, under wrk {args.connections}c"]
    lines.append(
        f"  py-spy record --pid {target.worker_pids[0]} --rate 250 --gil --format raw -o {out}"
    )
    lines += summarise_profile(out)
    return row, lines


# --------------------------------------------------------------------------- driver


async def bench_target(
    backend: str,
    target: Target,
    infra: Infra,
    db_url: str,
    args: argparse.Namespace,
    profile: bool,
) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    extra: list[str] = []
    is_order = target.name == "order service"
    tag = uuid.uuid4().hex[:6]
    target.start()
    try:
        t0 = perf()
        await target.wait_ready()
        await target.sanity()
        extra.append(f"  {target.name}: ready in {perf() - t0:.1f}s, workers {target.worker_pids}")
        # warm-up: connection pools, prepared statements, imports on first use; not reported
        await run_open(backend, target, infra, args.warmup_rate, args.warmup, args, "w" + tag)
        if is_order:
            await drain_outbox(db_url)
        rows.append(await run_wrk(backend, target, infra, args, "c" + tag))
        if is_order:
            rows[-1].note += "; " + await drain_outbox(db_url)
        for rate in args.rates:
            row, _ = await run_open(
                backend, target, infra, rate, args.duration, args, f"r{rate:g}{tag}"
            )
            if is_order:
                row.note += "; " + await drain_outbox(db_url)
            rows.append(row)
        if profile:
            row, lines = await run_profile(backend, target, infra, args, args.profile)
            rows.append(row)
            extra = [*lines, "", *extra]
            await drain_outbox(db_url)
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


async def run_backend(backend: str, args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    broker = EmbeddedBroker(log_path=args.broker_log).start()
    server = os.environ.get("DROPSHIP_TEST_PG_URL", "")
    infra = Infra(
        broker.process.pid if broker.process else None,
        postmaster_pid(server) if backend == "postgresql" and server else None,
    )
    rows: list[Row] = []
    notes: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dropship-intake-") as tmp:
            async with databases(backend, ["order", "bare"]) as urls:
                await asyncio.to_thread(migrate, MIGRATIONS, urls["order"])
                await asyncio.to_thread(bare_app.create_table, urls["bare"])
                base_env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
                order = Target(
                    "order service",
                    "services.order.app:create_app",
                    {
                        **base_env,
                        "DROPSHIP_ORDER_DATABASE_URL": urls["order"],
                        "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
                        "DROPSHIP_PII_KEY": generate_key(),
                        "DROPSHIP_MIGRATE_ON_START": "false",
                        "DROPSHIP_LOG_LEVEL": "WARNING",
                        "DROPSHIP_DATA_DIR": tmp,
                    },
                    args.workers,
                    Path(tmp) / "order.log",
                )
                order.env["DROPSHIP_ORDER_PORT"] = str(order.port)
                bare = Target(
                    "bare FastAPI",
                    "bench.bare_app:create_app",
                    {**base_env, "BENCH_BARE_DATABASE_URL": urls["bare"]},
                    args.workers,
                    Path(tmp) / "bare.log",
                )
                profile = args.profile is not None and backend == args.profile_backend
                for target, url in ((order, urls["order"]), (bare, urls["bare"])):
                    if target.name.split()[0] not in args.targets:
                        continue
                    try:
                        got, extra = await bench_target(
                            backend, target, infra, url, args, profile and target is order
                        )
                    except Exception:
                        print(f"--- {target.name} log (tail) ---\n{target.log_tail()}")
                        raise
                    rows += got
                    notes += extra
    finally:
        broker.stop()
    return rows, notes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_backends = "sqlite,postgresql" if os.environ.get("DROPSHIP_TEST_PG_URL") else "sqlite"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--backends",
        default=default_backends,
        help=f"comma-separated: sqlite,postgresql (default here: {default_backends})",
    )
    ap.add_argument("--targets", default="order,bare", help="order, bare or both (default both)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    ap.add_argument(
        "--rates", default="300,700", help="open-model arrival rates, orders/s (default 300,700)"
    )
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers per app")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--gen-procs", type=int, default=2, help="open-model generator processes")
    ap.add_argument(
        "--max-conns", type=int, default=256, help="open-model connection cap (default 256)"
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds before a request fails")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per app")
    ap.add_argument("--warmup-rate", type=float, default=150.0, help="warm-up orders/s")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="also py-spy one order-service worker under wrk; collapsed stacks go to DIR",
    )
    ap.add_argument("--profile-seconds", type=int, default=10, help="py-spy duration (default 10)")
    ap.add_argument(
        "--profile-backend", default=None, help="backend to profile (default: postgresql if run)"
    )
    ap.add_argument("--json", action="store_true", help="also print one JSON line of results")
    ap.add_argument("--broker-log", type=Path, default=None, help="append tansu output here")
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in args.backends:
        if b not in ("sqlite", "postgresql"):
            ap.error(f"unknown backend {b!r}")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.profile_backend is None:
        args.profile_backend = "postgresql" if "postgresql" in args.backends else args.backends[0]
    if shutil.which("wrk") is None:
        ap.error("wrk not found (apt-get install wrk)")
    return args


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except OSError:
        return "-"
    return (out.stdout or out.stderr).split()[1] if (out.stdout or out.stderr) else "-"


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
        "pydantic": pydantic.VERSION,
        "sqlalchemy": sqlalchemy.__version__,
        "asyncpg": asyncpg.__version__,
        "wrk": tool_version(["wrk", "--version"]),
        "postgresql": await server_version() if "postgresql" in args.backends else "-",
    }
    print("dropship order intake benchmark")
    print("  " + "  ".join(f"{k}={v}" for k, v in machine.items()))
    print(
        f"  workers={args.workers} duration={args.duration:g}s "
        f"rates={','.join(f'{r:g}' for r in args.rates)}/s wrk=-t{args.threads} "
        f"-c{args.connections} gen-procs={args.gen_procs} timeout={args.timeout:g}s "
        f"backends={','.join(args.backends)}"
    )
    print(
        "  one machine: app workers, database, broker and load generator share the cores; "
        "cpu columns are cores used"
    )
    background = await busy_cores(1.0)
    print(f"  other load before the start: {background:.2f} cores busy on an idle bench")
    if background > 0.2:
        print("  WARNING: the machine is not idle; every figure below will be lower")
    print()
    rows: list[Row] = []
    for backend in args.backends:
        t0 = perf()
        backend_rows, notes = await run_backend(backend, args)
        rows += backend_rows
        print(f"== {backend}")
        print_table(backend_rows, args.timeout)
        for line in notes:
            print(line)
        print(f"  ({backend} run took {perf() - t0:.1f}s incl. start-up and warm-up)\n")
    noisy = max((r.cpu.get("other", 0.0) for r in rows), default=0.0)
    if noisy > 0.25:
        print(
            f"WARNING: other processes kept up to {noisy:.2f} cores busy during a run (column "
            "'other'): throughput and latency understate this machine; app ms/201 holds up best"
        )
    print(
        "latency: wrk rows are closed loop (includes queueing behind the connections); open rows "
        "are from each request's scheduled time, nearest-rank, failures count as slowest"
    )
    if args.json:
        print(json.dumps({"machine": machine, "results": [r.summary() for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
