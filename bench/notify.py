"""Notify benchmark: shipment-delayed event -> delay notice e-mail in a local SMTP mailbox.

    python -m deploy.testenv -- .venv/bin/python bench/notify.py

Per backend (PostgreSQL under deploy.testenv; SQLite with `--backends sqlite,postgresql`)
the order service and the notify service run as deployed (one uvicorn process each) on a
fresh tansu broker, with notify's SMTP pointing at an aiosmtpd server in this process
that notes when each message arrives. Orders are placed through the order service's API
first, then `shipment-delayed` events are published on a fixed timetable (open model) and
latency runs from each event's scheduled publish time to its e-mail arriving. A burst
run then measures the ceiling: notices/s from the first publish to the last e-mail.
Prints figures, asserts nothing. See bench/README.md for how to read them.
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
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiokafka
import aiosmtpd
import aiosmtplib
import asyncpg
import fastapi
import httpx
import sqlalchemy
import uvicorn
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from sqlalchemy import select

if __package__ in (None, ""):  # run as a script: make `bench.*` importable as with -m
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.intake import (
    ASGI_LEAVES,
    DB_LEAVES,
    LIBRARIES,
    busy_cores,
    fmt_ms,
    leaf_label,
    postmaster_pid,
    py_spy,
    scalar,
)
from bench.loadgen import order_body
from bench.pipeline import databases, percentile, server_version, wait_until
from bench.routing import CpuMeter, Service, WaitSampler, log_summary, pg_stats
from services.notify.app import MIGRATIONS as NOTIFY_MIGRATIONS
from services.notify.store import aware
from services.notify.tables import notification
from services.order.app import MIGRATIONS as ORDER_MIGRATIONS
from shared.bus import ALL_TOPICS, BusConfig, ensure_topics
from shared.crypto import generate_key
from shared.db import create_engine, migrate
from shared.events import (
    ConfirmedLine,
    DelayReason,
    Severity,
    ShipmentDelayed,
    SupplierConfirmed,
    new_envelope,
)
from shared.infra import EmbeddedBroker, free_port

API_KEY = "dev-api-key"
DELAYED = "shipment-delayed"
SUPPLIER = "bench-supplier"
PARTITIONS = 8
perf = time.perf_counter
ZH_NAMES = ("张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄婷")


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: one load on one backend."""

    backend: str
    load: str
    offered: float | None  # events/s offered (None: burst, as fast as possible)
    events: int  # shipment-delayed events published
    sent_per_s: float
    mailed: int  # notices whose e-mail arrived within the timeout
    mailed_per_s: float  # mailed / (first scheduled publish -> last e-mail)
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    missing: int = 0
    duplicates: int = 0  # extra e-mails for a notice already delivered
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
        f"{'load':<16}{'offered':>8}{'sent/s':>8}{'events':>7}{'mailed':>7}{'mail/s':>8}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'miss':>5}{'dup':>4}"
        f"{'notify':>7}{'order':>6}{'broker':>7}{'db':>5}{'bench':>6}{'other':>6}"
        f"{'ms/mail':>8}  note"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        notify = r.cpu.get("notify", 0.0)
        per = f"{notify * r.cpu.get('wall', 0.0) / r.mailed * 1000:.2f}" if r.mailed else "-"
        db = r.cpu.get("db")
        offered = "burst" if r.offered is None else f"{r.offered:g}/s"
        print(
            f"{r.load:<16}{offered:>8}{r.sent_per_s:>8.0f}{r.events:>7}{r.mailed:>7}"
            f"{r.mailed_per_s:>8.1f}"
            f"{fmt_ms(r.p50_ms, timeout):>8}{fmt_ms(r.p90_ms, timeout):>8}"
            f"{fmt_ms(r.p99_ms, timeout):>8}{fmt_ms(r.max_ms, timeout):>8}"
            f"{r.missing:>5}{r.duplicates:>4}"
            f"{notify:>7.2f}{r.cpu.get('order', 0.0):>6.2f}{r.cpu.get('broker', 0.0):>7.2f}"
            f"{'-' if db is None else f'{db:.2f}':>5}{r.cpu.get('bench', 0.0):>6.2f}"
            f"{r.cpu.get('other', 0.0):>6.2f}{per:>8}  {r.note}"
        )
    print()


STAGES = (
    ("publish->queued", "Kafka, notify's consumer fetch and batch, the handler's inbox txn"),
    ("queued->mailbox", "sender wake-up and claim, contact lookup (HTTP), render, SMTP"),
    ("mailbox->logged", "after the e-mail arrived: the outcome txn (sent_at), not in latency"),
)


def print_stages(rows: list[Row]) -> None:
    if not any(r.stages for r in rows):
        return
    header = f"{'load':<16}" + "".join(f"{name + ' p50/p99':>32}" for name, _ in STAGES)
    print(header)
    print("-" * len(header))
    for r in rows:
        cells = []
        for name, _ in STAGES:
            qs = r.stages.get(name, {})
            p50, p99 = qs.get("p50"), qs.get("p99")
            cell = "-" if p50 is None or p99 is None else f"{p50:.1f} / {p99:.1f} ms"
            cells.append(f"{cell:>32}")
        print(f"{r.load:<16}" + "".join(cells))
    for name, meaning in STAGES:
        print(f"  {name}: {meaning}")
    print()


# --------------------------------------------------------------------------- the mailbox


class Mailbox:
    """aiosmtpd handler: when each message arrived (time.time()), keyed by its recipient.

    Every order has its own customer address, so the envelope recipient names the order
    without parsing the message. Runs in the Controller's thread; list appends are atomic.
    """

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.total = 0
        self.bytes = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.arrivals.setdefault(rcpt.lower(), []).append(now)
            self.total += 1
            self.bytes += len(envelope.original_content or envelope.content or b"")
        return "250 OK"

    def first(self, address: str) -> float | None:
        got = self.arrivals.get(address)
        return got[0] if got else None


# --------------------------------------------------------------------------- orders


@dataclass
class Order:
    order_id: str
    email: str
    locale: str
    lines: list[dict[str, Any]]
    key: bytes = b""
    delay: bytes = b""  # the shipment-delayed envelope, built before the clock starts
    scheduled: float = 0.0  # wall-clock time it was due to be published


def order_request(rng: random.Random, run: str, i: int, zh_share: float) -> dict[str, Any]:
    body = order_body(rng, i)
    zh = rng.random() < zh_share
    body["customer"] = {
        "name": rng.choice(ZH_NAMES) if zh else body["customer"]["name"],
        "email": f"n{i}.{run}@example.com",
        "locale": "zh-CN" if zh else "en",
    }
    body["external_id"] = f"BN-{run}-{i:06d}"
    return body


async def place_orders(
    base: str, count: int, run: str, rng: random.Random, zh_share: float, concurrency: int
) -> tuple[list[Order], float, Counter[int]]:
    """POST /v1/orders `count` times, `concurrency` at a time; returns orders, orders/s, errors."""
    bodies = [order_request(rng, run, i, zh_share) for i in range(count)]
    orders: list[Order | None] = [None] * count
    errors: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = bodies[i]
            headers = {"X-API-Key": API_KEY, "Idempotency-Key": f"bench-notify-{run}-{i}"}
            for _ in range(5):
                try:
                    r = await client.post(f"{base}/v1/orders", json=body, headers=headers)
                except httpx.HTTPError:
                    errors[-1] += 1
                    await asyncio.sleep(0.2)
                    continue
                if r.status_code == 201:
                    o = r.json()
                    orders[i] = Order(
                        o["id"], body["customer"]["email"], body["customer"]["locale"], o["lines"]
                    )
                    break
                errors[r.status_code] += 1
                await asyncio.sleep(0.2)

    t0 = perf()
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    rate = count / (perf() - t0)
    placed = [o for o in orders if o is not None]
    if len(placed) < count:
        raise RuntimeError(f"only {len(placed)}/{count} orders placed: {dict(errors)}")
    return placed, rate, errors


def confirmation(o: Order) -> bytes:
    data = SupplierConfirmed(
        order_id=o.order_id,
        supplier_id=SUPPLIER,
        supplier_order_ref=f"so-{o.order_id}",
        lines=[
            ConfirmedLine(line_id=ln["line_id"], quantity=ln["quantity"], unit_cost="3.00")
            for ln in o.lines
        ],
        currency="USD",
        ship_by=datetime.now(UTC) + timedelta(hours=48),
    )
    return new_envelope(data).to_bytes()


def build_delays(orders: list[Order], reason: DelayReason) -> None:
    severity = Severity.NORMAL if reason is DelayReason.AT_RISK else Severity.URGENT
    expected = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    for o in orders:
        envelope = new_envelope(
            ShipmentDelayed(
                order_id=o.order_id,
                supplier_id=SUPPLIER,
                reason=reason,
                severity=severity,
                expected_by=expected,
            )
        )
        o.key, o.delay = envelope.key, envelope.to_bytes()


async def publish_all(
    producer: AIOKafkaProducer, topic: str, items: list[tuple[bytes, bytes]]
) -> None:
    futures = [await producer.send(topic, value, key=key) for key, value in items]
    await asyncio.gather(*futures)


async def publish_open(producer: AIOKafkaProducer, orders: list[Order], rate: float) -> list[float]:
    """Send order i's delay at start + i/rate whatever happened before; lateness per send (s)."""
    late: list[float] = []
    futures = []
    start = time.time() + 0.02
    for i, o in enumerate(orders):
        o.scheduled = start + i / rate
        wait = o.scheduled - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        late.append(time.time() - o.scheduled)
        futures.append(await producer.send(DELAYED, o.delay, key=o.key))
    await asyncio.gather(*futures)
    return late


async def publish_burst(producer: AIOKafkaProducer, orders: list[Order]) -> float:
    """Every delay as fast as the producer takes them; returns seconds until all were acked."""
    start = time.time()
    futures = []
    for o in orders:
        o.scheduled = time.time()
        futures.append(await producer.send(DELAYED, o.delay, key=o.key))
    await asyncio.gather(*futures)
    return time.time() - start


# --------------------------------------------------------------------------- one phase


@dataclass
class Rig:
    backend: str
    producer: AIOKafkaProducer
    mailbox: Mailbox
    pids: dict[str, int | None]
    db_root: int | None
    waits: WaitSampler | None
    args: argparse.Namespace
    earlier: list[Order] = field(default_factory=list)  # orders of the phases before


@dataclass
class Phase:
    load: str
    orders: list[Order]
    row: Row
    waits: str = ""
    timeline: str = ""


def delivered(rig: Rig, orders: list[Order]) -> int:
    return sum(1 for o in orders if o.email in rig.mailbox.arrivals)


async def run_phase(
    rig: Rig,
    load: str,
    orders: list[Order],
    rate: float | None,
    within: float,
    on_start: Any = None,
) -> Phase:
    """Publish the orders' delays (at `rate`/s, or as a burst), wait for their e-mails."""
    mailbox = rig.mailbox
    # let the previous phases' stragglers through first (at most --drain seconds)
    await wait_until(
        lambda: delivered(rig, rig.earlier) >= len(rig.earlier), perf() + rig.args.drain
    )
    left = len(rig.earlier) - delivered(rig, rig.earlier)
    await asyncio.sleep(rig.args.pause)
    if rig.waits is not None:
        rig.waits.reset()
    if on_start is not None:
        on_start()
    with CpuMeter(rig.pids, rig.db_root) as meter:
        if rate is None:
            acked_s = await publish_burst(rig.producer, orders)
            late: list[float] = []
            sent_per_s = len(orders) / max(acked_s, 1e-9)
        else:
            late = await publish_open(rig.producer, orders, rate)
            sent_per_s = len(orders) / max(time.time() - orders[0].scheduled, 1e-9)
        deadline = perf() + (orders[-1].scheduled + within - time.time())
        await wait_until(lambda: delivered(rig, orders) >= len(orders), deadline, 0.02)
    # an e-mail later than `within` after its event's scheduled time counts as missing
    arrivals = {
        o.order_id: t
        if (t := mailbox.first(o.email)) is not None and t - o.scheduled <= within
        else None
        for o in orders
    }
    latencies = [
        (got - o.scheduled) * 1000 if (got := arrivals[o.order_id]) is not None else math.inf
        for o in orders
    ]
    got = sorted(t for t in arrivals.values() if t is not None)
    first = orders[0].scheduled
    span = (got[-1] - first) if got else 0.0
    mailed_per_s = len(got) / span if span > 0 else 0.0
    dups = sum(max(0, len(mailbox.arrivals.get(o.email, [])) - 1) for o in orders)
    rig.earlier += orders
    note: list[str] = []
    if left:
        note.append(f"STARTED WITH {left} EARLIER NOTICES UNDELIVERED")
    if rate is not None:
        late_p99 = (percentile(late, 99) or 0.0) * 1000
        note.append(f"late p99 {late_p99:.1f} ms")
        if late_p99 > 5:
            note.insert(0, "PUBLISHER LAGGED")
        if mailed_per_s < 0.97 * rate:
            note.insert(0, "BELOW OFFERED")
    else:
        note.append(f"published+acked in {acked_s:.2f}s")
        if len(got) > 1:
            drain = (len(got) - 1) / max(got[-1] - got[0], 1e-9)
            note.append(f"first mail after {1000 * (got[0] - first):.0f} ms, then {drain:.1f}/s")
    zh = sum(1 for o in orders if o.locale == "zh-CN")
    note.append(f"{zh} zh-CN/{len(orders) - zh} en")
    row = Row(
        rig.backend,
        load,
        rate,
        len(orders),
        sent_per_s,
        len(got),
        mailed_per_s,
        percentile(latencies, 50),
        percentile(latencies, 90),
        percentile(latencies, 99),
        percentile(latencies, 100),
        len(orders) - len(got),
        dups,
        meter.cores,
        note="; ".join(note),
    )
    return Phase(load, orders, row, rig.waits.summary() if rig.waits else "", timeline(got, first))


def timeline(got: list[float], start: float, buckets: int = 30) -> str:
    """E-mails per second since the first publish (first `buckets` seconds)."""
    if not got:
        return ""
    counts = Counter(int(t - start) for t in got)
    last = min(int(got[-1] - start), buckets - 1)
    return " ".join(str(counts.get(s, 0)) for s in range(last + 1))


async def stage_breakdown(url: str, phases: list[Phase], mailbox: Mailbox) -> None:
    """Per-stage latency from notify's own timestamps (the notification log)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = {
                r.order_id: r
                for r in await conn.execute(
                    select(
                        notification.c.order_id,
                        notification.c.created_at,
                        notification.c.sent_at,
                        notification.c.attempts,
                        notification.c.status,
                    ).where(notification.c.recipient_kind == "customer")
                )
            }
    finally:
        await engine.dispose()
    for phase in phases:
        spans: dict[str, list[float]] = {name: [] for name, _ in STAGES}
        statuses: Counter[str] = Counter()
        retried = 0
        for o in phase.orders:
            r = rows.get(o.order_id)
            if r is None:
                statuses["not queued"] += 1
                continue
            statuses[r.status] += 1
            retried += r.attempts > 1
            queued = aware(r.created_at).timestamp()  # type: ignore[union-attr]
            mail = mailbox.first(o.email)
            spans["publish->queued"].append((queued - o.scheduled) * 1000)
            if mail is not None:
                spans["queued->mailbox"].append((mail - queued) * 1000)
                if r.sent_at is not None:
                    sent = aware(r.sent_at).timestamp()  # type: ignore[union-attr]
                    spans["mailbox->logged"].append((sent - mail) * 1000)
        phase.row.stages = {
            name: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for name, v in spans.items()
        }
        log = ", ".join(f"{k} {n}" for k, n in statuses.most_common())
        phase.row.note += f"; log: {log}" + (f", {retried} retried" if retried else "")


# --------------------------------------------------------------------------- profiling


# What a sample of the notify service was doing: the first rule whose marker is anywhere
# on the stack. SQLAlchemy runs statements in greenlets whose stacks start at the sync
# session, so most database samples cannot be charged to a caller (own group, by leaf).
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("outbox relay (notification-sent)", ("shared/outbox.py",)),
    ("sender: ssl.create_default_context (every send)", ("create_default_context",)),
    ("sender: SMTP send (aiosmtplib)", ("aiosmtplib/", "Mailer.send", "SmtpMailer.send")),
    ("sender: contact lookup (httpx to order service)", ("services/notify/contacts.py",)),
    ("sender: render (jinja2)", ("services/notify/rendering.py", "jinja2/")),
    ("sender: build_email (email package)", ("build_email (",)),
    ("sender: claim", ("Sender._claim (", "claim_due (")),
    ("sender: outcome txn (finish + event)", ("Sender._finish (",)),
    ("sender: context/cap reads", ("Sender._context (", "Sender._check_cap (")),
    ("sender: other", ("services/notify/sender.py",)),
    ("consumer: delay handler (queue notice)", ("services/notify/handlers.py",)),
    ("consumer: loop, envelope parse, inbox", ("shared/consumer.py", "aiokafka/consumer/")),
    ("unit of work (caller hidden)", ("shared/uow.py", "services/notify/store.py")),
    ("aiokafka producer / client", ("aiokafka/",)),
    ("httpx (caller hidden)", ("httpx/", "httpcore/", "h11/")),
)
DB_MARKERS = ("sqlalchemy/", "asyncpg/", "aiosqlite/", "greenlet", "sqlite3/")
DB_DRIVER_LEAVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("db: aiosqlite thread / sqlite3", ("aiosqlite/", "sqlite3/")),
    *DB_LEAVES,
)
NOTIFY_LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aiosqlite, sqlite3", ("aiosqlite/", "sqlite3/")),
    ("aiosmtplib", ("aiosmtplib/",)),
    ("email (stdlib)", ("/email/",)),
    ("jinja2, markupsafe", ("jinja2/", "markupsafe/")),
    ("httpx, httpcore, h11", ("httpx/", "httpcore/", "h11/")),
    ("ssl (stdlib)", ("/ssl.py",)),
    *LIBRARIES,
)


IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)",)


def summarise_profile(path: Path, top: int = 15, gil: bool = False) -> list[str]:
    """Percentages from py-spy's collapsed stacks (`--format raw`) of the notify service."""
    stacks: list[tuple[list[str], int]] = []
    idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        if frames and frames[-1].startswith(IDLE_LEAVES):
            idle += int(count)  # a pool thread waiting for work that py-spy took as running
            continue
        stacks.append((frames, int(count)))
    total = sum(c for _, c in stacks)
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
        components[name] += count
        if db:
            in_db[name] += count
        lib = (leaf_label(frames, NOTIFY_LIBRARIES) or "other") if frames else "native"
        libraries[lib] += count
        leaves[frames[-1] if frames else "(native)"] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    what = (
        "while the service held the GIL (its Python CPU time)"
        if gil
        else "of threads on CPU, GIL held or not (C code that releases it counts too)"
    )
    out = [f"  {total} samples {what}"]
    if idle:
        out.append(f"  ({idle} more of idle thread-pool workers left out)")
    out.append("")
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


async def record_profile(pid: int, seconds: int, out: Path, delay: float, gil: bool) -> list[str]:
    """py-spy the notify process; returns the command line used."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    await asyncio.sleep(delay)
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100"]
    cmd += [*(["--gil"] if gil else []), "--format", "raw", "--output", str(out)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
    return cmd


# --------------------------------------------------------------------------- driver


async def wait_for_facts(url: str, count: int, within: float) -> float:
    """Until notify recorded every order (order-placed) and its supplier share."""
    t0 = perf()
    while True:
        facts = await scalar(url, "SELECT count(*) FROM order_fact")
        shares = await scalar(url, "SELECT count(*) FROM supplier_share")
        if facts >= count and shares >= count:
            return perf() - t0
        if perf() - t0 > within:
            raise RuntimeError(
                f"notify knows {facts}/{count} orders and {shares}/{count} supplier shares "
                f"after {within:.0f}s"
            )
        await asyncio.sleep(0.25)


async def run_backend(
    backend: str, args: argparse.Namespace
) -> tuple[list[Phase], list[str], list[str]]:
    broker = EmbeddedBroker(log_path=args.broker_log).start()
    server = os.environ.get("DROPSHIP_TEST_PG_URL", "")
    db_root = postmaster_pid(server) if backend == "postgresql" and server else None
    notes: list[str] = []
    profile_lines: list[str] = []
    phases: list[Phase] = []
    rng = random.Random(f"notify:{backend}")
    run = uuid.uuid4().hex[:6]
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    try:
        await ensure_topics(
            BusConfig(bootstrap=broker.bootstrap, client_id="bench-admin", partitions=PARTITIONS),
            ALL_TOPICS,
        )
        with tempfile.TemporaryDirectory(prefix="dropship-notify-") as tmp:
            async with databases(backend, ["order", "notify"]) as urls:
                await asyncio.to_thread(migrate, ORDER_MIGRATIONS, urls["order"])
                await asyncio.to_thread(migrate, NOTIFY_MIGRATIONS, urls["notify"])
                base_env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
                common = {
                    **base_env,
                    "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
                    "DROPSHIP_MIGRATE_ON_START": "false",
                    "DROPSHIP_LOG_LEVEL": "WARNING",
                    "DROPSHIP_DATA_DIR": tmp,
                }
                order = Service(
                    "order service", "services.order.app:create_app", {}, 1, Path(tmp) / "order.log"
                )
                order.env = {
                    **common,
                    "DROPSHIP_ORDER_DATABASE_URL": urls["order"],
                    "DROPSHIP_ORDER_PORT": str(order.port),
                    "DROPSHIP_PII_KEY": generate_key(),
                    "DROPSHIP_CONSUMERS_ENABLED": "true" if args.order_consumers else "false",
                }
                notify = Service(
                    "notify service",
                    "services.notify.app:create_app",
                    {},
                    1,
                    Path(tmp) / "notify.log",
                )
                notify.env = {
                    **common,
                    "DROPSHIP_NOTIFY_DATABASE_URL": urls["notify"],
                    "DROPSHIP_NOTIFY_PORT": str(notify.port),
                    "DROPSHIP_ORDER_URL": order.base,
                    "DROPSHIP_SUPPLIER_URL": "",  # no supplier service: breakers not watched
                    "DROPSHIP_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
                    "DROPSHIP_DIGEST_WINDOW_S": "0",
                }
                if args.concurrency is not None:
                    notify.env["DROPSHIP_SENDER_CONCURRENCY"] = str(args.concurrency)
                if args.sender_poll is not None:
                    notify.env["DROPSHIP_SENDER_POLL_S"] = str(args.sender_poll)
                producer = AIOKafkaProducer(
                    bootstrap_servers=broker.bootstrap, acks="all", linger_ms=2
                )
                waits: WaitSampler | None = None
                try:
                    t0 = perf()
                    controller.start()
                    order.start()
                    notify.start()
                    await asyncio.gather(order.wait_ready(), notify.wait_ready(), producer.start())
                    notes.append(
                        f"  ready in {perf() - t0:.1f}s; order pid {order.pid}, notify pid "
                        f"{notify.pid}, aiosmtpd on 127.0.0.1:{smtp_port} (thread in the bench)"
                    )
                    # orders through the API; notify learns them from order-placed
                    n_warm = max(1, round(args.warmup * args.warmup_rate))
                    n_open = [max(1, round(r * args.duration)) for r in args.rates]
                    total = n_warm + sum(n_open) + args.burst
                    t1 = perf()
                    placed, placed_rate, errors = await place_orders(
                        order.base, total, run, rng, args.zh_share, args.place_concurrency
                    )
                    confirms = [(o.order_id.encode(), confirmation(o)) for o in placed]
                    await publish_all(producer, "supplier-confirmed", confirms)
                    known = await wait_for_facts(urls["notify"], total, args.setup_timeout)
                    err = f" (retried: {dict(errors)})" if errors else ""
                    notes.append(
                        f"  set-up: {total} orders placed at {placed_rate:.0f}/s{err}, "
                        f"supplier-confirmed published; notify knew all {known:.1f}s later "
                        f"({perf() - t1:.1f}s in all)"
                    )
                    build_delays(placed, args.reason)
                    rig = Rig(
                        backend,
                        producer,
                        mailbox,
                        {
                            "notify": notify.pid,
                            "order": order.pid,
                            "broker": broker.process.pid if broker.process else None,
                        },
                        db_root,
                        None,
                        args,
                    )
                    if backend == "postgresql":
                        waits = WaitSampler(urls["notify"])
                        await waits.start()
                        rig.waits = waits
                    cursor = 0

                    def take(n: int) -> list[Order]:
                        nonlocal cursor
                        cursor += n
                        return placed[cursor - n : cursor]

                    warm = await run_phase(
                        rig, "warm-up", take(n_warm), args.warmup_rate, max(args.timeout, 20.0)
                    )
                    notes.append(
                        f"  warm-up {args.warmup_rate:g}/s x {args.warmup:g}s: "
                        f"{warm.row.mailed}/{warm.row.events} mailed, p50 "
                        f"{fmt_ms(warm.row.p50_ms, args.timeout)} ms"
                    )
                    if not warm.row.mailed:
                        raise RuntimeError("no e-mail arrived during the warm-up")
                    for rate, n in zip(args.rates, n_open, strict=True):
                        phases.append(
                            await run_phase(rig, f"open {rate:g}/s", take(n), rate, args.timeout)
                        )
                    if args.burst:
                        spying: list[asyncio.Task[list[str]]] = []
                        out = (args.profile or Path(tmp)) / f"notify-{backend}-burst.folded"

                        def spy() -> None:
                            if args.profile is None:
                                return
                            job = record_profile(
                                notify.pid or 0, args.profile_seconds, out, 0.5, args.profile_gil
                            )
                            spying.append(asyncio.create_task(job))

                        phases.append(
                            await run_phase(
                                rig,
                                f"burst {args.burst}" + ("+py-spy" if args.profile else ""),
                                take(args.burst),
                                None,
                                args.burst_timeout,
                                on_start=spy,
                            )
                        )
                        cmds = await asyncio.gather(*spying)
                        if cmds:
                            profile_lines = [
                                f"where the time goes: notify service on {backend}, burst "
                                f"of {args.burst}",
                                "  " + shlex.join(cmds[0]),
                                *summarise_profile(out, gil=args.profile_gil),
                            ]
                    notes += [f"  {p.load}: {p.waits}" for p in phases if p.waits]
                    notes += [
                        f"  {p.load}: e-mails per second since the first publish: {p.timeline}"
                        for p in phases
                        if p.timeline
                    ]
                    await stage_breakdown(urls["notify"], phases, mailbox)
                    if backend == "postgresql":
                        notes.append(f"  postgresql (notify db): {await pg_stats(urls['notify'])}")
                    notes.append(
                        f"  mailbox: {mailbox.total} messages (warm-up included), "
                        f"{mailbox.bytes / max(mailbox.total, 1) / 1024:.1f} KiB mean"
                    )
                except Exception:
                    for svc in (order, notify):
                        print(f"--- {svc.name} log (tail) ---\n{svc.log_tail()}")
                    raise
                finally:
                    if waits is not None:
                        await waits.stop()
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    notify.stop()
                    order.stop()
                    with contextlib.suppress(Exception):
                        controller.stop()
                for svc in (notify, order):
                    lines = log_summary(svc.log)
                    if lines:
                        notes.append(f"  {svc.name} log, WARNING and above (top {len(lines)}):")
                        notes += [f"    {ln}" for ln in lines]
                if args.logs is not None:
                    for svc in (notify, order):
                        (args.logs / f"notify-{backend}-{svc.log.name}").write_bytes(
                            svc.log.read_bytes()
                        )
    finally:
        broker.stop()
    return phases, notes, profile_lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_backends = "postgresql" if os.environ.get("DROPSHIP_TEST_PG_URL") else "sqlite"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--backends",
        default=default_backends,
        help=f"comma-separated: sqlite,postgresql (default here: {default_backends})",
    )
    ap.add_argument("--rates", default="50", help="open-model arrival rates, events/s (default 50)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per measured rate")
    ap.add_argument(
        "--burst", type=int, default=2000, help="events in the ceiling burst (0: no burst)"
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds after an event's scheduled time before its e-mail counts as missing",
    )
    ap.add_argument(
        "--burst-timeout",
        type=float,
        default=300.0,
        help="seconds after the burst's last publish to wait for its e-mails (default 300)",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="DROPSHIP_SENDER_CONCURRENCY for notify (default: the service's own, 16)",
    )
    ap.add_argument(
        "--sender-poll",
        type=float,
        default=None,
        help="DROPSHIP_SENDER_POLL_S for notify (default: the service's own, 1.0)",
    )
    ap.add_argument(
        "--reason",
        default="at_risk",
        choices=[r.value for r in DelayReason],
        help="delay reason; at_risk is severity normal (no ops alert), the others urgent",
    )
    ap.add_argument(
        "--zh-share", type=float, default=0.5, help="share of customers with locale zh-CN"
    )
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up (unreported)")
    ap.add_argument("--warmup-rate", type=float, default=20.0, help="warm-up events/s")
    ap.add_argument("--pause", type=float, default=1.0, help="quiet seconds before each phase")
    ap.add_argument(
        "--drain",
        type=float,
        default=180.0,
        help="at most this many seconds waiting for earlier e-mails before a phase (default 180)",
    )
    ap.add_argument(
        "--place-concurrency", type=int, default=16, help="orders placed concurrently in set-up"
    )
    ap.add_argument(
        "--setup-timeout", type=float, default=300.0, help="seconds for notify to learn the orders"
    )
    ap.add_argument(
        "--order-consumers",
        action="store_true",
        help="let the order service consume the events too (as deployed); off by default",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the notify service during the burst; stacks go to DIR",
    )
    ap.add_argument("--profile-seconds", type=int, default=15, help="py-spy duration (default 15)")
    ap.add_argument(
        "--profile-gil",
        action="store_true",
        help="py-spy --gil: sample only the GIL holder (default: every thread on CPU)",
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
    args.reason = DelayReason(args.reason)
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        if py_spy() is None:
            ap.error("--profile needs py-spy (.venv/bin/pip install py-spy)")
    return args


def command_line() -> str:
    """How this run was started, including deploy.testenv when it is the parent."""
    own = shlex.join([sys.executable, *sys.argv])
    with contextlib.suppress(OSError):
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        words = [w.decode(errors="replace") for w in parent]
        if "deploy.testenv" in words:
            return shlex.join(words)
    return own


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


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
        "aiosmtpd": aiosmtpd.__version__,
        "aiosmtplib": aiosmtplib.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "asyncpg": asyncpg.__version__,
        "postgresql": await server_version() if "postgresql" in args.backends else "-",
    }
    print("dropship notify benchmark: shipment-delayed -> delay notice e-mail")
    print(f"  command: {command_line()}")
    print(f"  started: {datetime.now(UTC).isoformat(timespec='seconds')}  uptime: {uptime()}")
    print("  " + "  ".join(f"{k}={v}" for k, v in machine.items()))
    print(
        f"  rates={','.join(f'{r:g}' for r in args.rates)}/s duration={args.duration:g}s "
        f"burst={args.burst} reason={args.reason.value} zh-CN share={args.zh_share:g} "
        f"sender_concurrency={args.concurrency or 'default (16)'} "
        f"sender_poll_s={args.sender_poll or 'default (1)'} digest_window_s=0 "
        f"timeout={args.timeout:g}s partitions={PARTITIONS} backends={','.join(args.backends)} "
        f"order consumers={'on' if args.order_consumers else 'off'}"
    )
    print(
        "  one machine: notify (1 process), order service (1 process), broker, database, and "
        "this bench (publisher + aiosmtpd) share the cores; cpu columns are cores used"
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
        phases, notes, profile = await run_backend(backend, args)
        backend_rows = [p.row for p in phases]
        rows += backend_rows
        print(f"== {backend}")
        print_table(backend_rows, args.timeout)
        print_stages(backend_rows)
        for line in notes:
            print(line)
        print(f"  ({backend} run took {perf() - t0:.1f}s incl. start-up, orders and warm-up)\n")
        if profile:
            profiles += [*profile, ""]
    for line in profiles:
        print(line)
    for r in rows:
        if r.offered is None:
            print(
                f"ceiling on {r.backend}: {r.mailed_per_s:.1f} notices/s into the mailbox "
                f"({r.mailed}/{r.events} e-mails, first publish -> last e-mail)"
            )
        else:
            print(
                f"{r.offered:g}/s on {r.backend}: p50 {fmt_ms(r.p50_ms, args.timeout)} ms, "
                f"p99 {fmt_ms(r.p99_ms, args.timeout)} ms event -> mailbox"
            )
    noisy = max((r.cpu.get("other", 0.0) for r in rows), default=0.0)
    if noisy > 0.25:
        print(
            f"WARNING: other processes kept up to {noisy:.2f} cores busy during a run (column "
            "'other'): throughput and latency understate this machine"
        )
    print(f"  finished: {datetime.now(UTC).isoformat(timespec='seconds')}  uptime: {uptime()}")
    print(
        "latency: from each shipment-delayed event's scheduled publish time (burst: its send) "
        "to its e-mail arriving at the SMTP server; nearest-rank; missing count as slowest"
    )
    if args.json:
        print(json.dumps({"machine": machine, "results": [r.summary() for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
