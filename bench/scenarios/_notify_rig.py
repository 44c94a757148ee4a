"""The notify benchmark's rig: orders set up through the API, the SMTP sink, one phase."""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from bench.harness import kafka, report
from bench.harness.clock import perf, wait_until
from bench.harness.dbs import WaitSampler, scalar
from bench.harness.generator import order_body
from bench.harness.procs import CpuMeter
from bench.harness.report import Stages
from bench.harness.stats import p50_p99, percentile, summary, timeline
from services.notify.tables import notification
from shared.db import aware, create_engine
from shared.events import (
    ConfirmedLine,
    DelayReason,
    Severity,
    ShipmentDelayed,
    SupplierConfirmed,
    new_envelope,
)

API_KEY = "dev-api-key"
DELAYED = "shipment-delayed"
SUPPLIER = "bench-supplier"
ZH_NAMES = ("张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄婷")
STAGES = (
    ("publish->queued", "Kafka, notify's consumer fetch and batch, the handler's inbox txn"),
    ("queued->mailbox", "sender wake-up and claim, contact lookup (HTTP), render, SMTP"),
    ("mailbox->logged", "after the e-mail arrived: the outcome txn (sent_at), not in latency"),
)
# What a sample of the notify service was doing: the first rule whose marker is anywhere
# on the stack; database samples whose caller is hidden get their own group.


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
    latency: dict[str, float | None]  # event -> mailbox, ms: p50, p90, p99, max
    missing: int = 0
    duplicates: int = 0  # extra e-mails for a notice already delivered
    cpu: dict[str, float] = field(default_factory=dict)  # cores used during the phase
    stages: Stages = field(default_factory=dict)
    note: str = ""


class Mailbox:
    """aiosmtpd handler: when each message arrived (time.time()), keyed by its recipient.

    Every order has its own customer address, so the envelope recipient names the order
    without parsing the message. Runs in the Controller's thread.
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
    base: str, count: int, run: str, rng: random.Random, args: argparse.Namespace
) -> tuple[list[Order], float, Counter[int]]:
    """POST /v1/orders `count` times, concurrently; the orders, orders/s and retried errors."""
    bodies = [order_request(rng, run, i, args.zh_share) for i in range(count)]
    orders: list[Order | None] = [None] * count
    errors: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    n = args.place_concurrency
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            headers = {"X-API-Key": API_KEY, "Idempotency-Key": f"bench-notify-{run}-{i}"}
            for _ in range(5):
                try:
                    r = await client.post(f"{base}/v1/orders", json=bodies[i], headers=headers)
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 201:
                    c = bodies[i]["customer"]
                    orders[i] = Order(r.json()["id"], c["email"], c["locale"], r.json()["lines"])
                    break
                errors[-1 if r is None else r.status_code] += 1
                await asyncio.sleep(0.2)

    t0 = perf()
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(n)))
    placed = [o for o in orders if o is not None]
    if len(placed) < count:
        raise RuntimeError(f"only {len(placed)}/{count} orders placed: {dict(errors)}")
    return placed, count / (perf() - t0), errors


def confirmation(o: Order) -> tuple[bytes, bytes]:
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
    return o.order_id.encode(), new_envelope(data).to_bytes()


def build_delays(orders: list[Order], reason: DelayReason) -> None:
    severity = Severity.NORMAL if reason is DelayReason.AT_RISK else Severity.URGENT
    expected = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    for o in orders:
        data = ShipmentDelayed(
            order_id=o.order_id,
            supplier_id=SUPPLIER,
            reason=reason,
            severity=severity,
            expected_by=expected,
        )
        envelope = new_envelope(data)
        o.key, o.delay = envelope.key, envelope.to_bytes()


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
    notify_url: str = ""  # where notify's /metrics is read (contact requests)

    def delivered(self, orders: list[Order]) -> int:
        return sum(1 for o in orders if o.email in self.mailbox.arrivals)


@dataclass
class Phase:
    load: str
    orders: list[Order]
    row: Row
    waits: str = ""
    timeline: str = ""


CONTACT_REQUESTS = "dropship_notify_contact_requests_total{"


async def contact_requests(url: str) -> dict[str, float]:
    """Notify's count of its contact requests to the order service, by endpoint ({}: none)."""
    if not url:
        return {}
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            text = (await http.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(CONTACT_REQUESTS):
            labels, _, value = line.rpartition(" ")
            found[labels.split('endpoint="', 1)[1].split('"', 1)[0]] = float(value)
    return found


def lookups_note(before: dict[str, float], after: dict[str, float], row: Row) -> str:
    """Contact requests per e-mail and the order service's CPU per e-mail, for the note."""
    order_ms = row.cpu.get("order", 0.0) * row.cpu.get("wall", 0.0) * 1000
    per_mail = f"order {order_ms / row.mailed:.2f} cpu-ms/mail" if row.mailed else ""
    if not after:
        return f"contact lookups: not reported; {per_mail}"
    counts = {k: after[k] - before.get(k, 0.0) for k in sorted(after)}
    total = sum(counts.values())
    each = ", ".join(f"{k} {v:.0f}" for k, v in counts.items())
    rate = f"{total / row.mailed:.2f}/mail" if row.mailed else "-"
    return f"contact lookups: {total:.0f} ({each}) = {rate}; {per_mail}"


async def run_phase(
    rig: Rig,
    load: str,
    orders: list[Order],
    rate: float | None,
    within: float,
    on_start: Callable[[], None] | None = None,
) -> Phase:
    """Publish the orders' delays (at `rate`/s, or as a burst), wait for their e-mails."""
    mailbox, messages = rig.mailbox, [(o.key, o.delay) for o in orders]
    # let the previous phases' stragglers through first (at most --drain seconds)
    await wait_until(
        lambda: rig.delivered(rig.earlier) >= len(rig.earlier), perf() + rig.args.drain
    )
    left = len(rig.earlier) - rig.delivered(rig.earlier)
    await asyncio.sleep(rig.args.pause)
    if rig.waits is not None:
        rig.waits.reset()
    if on_start is not None:
        on_start()
    wall = time.time() - perf()  # the mailbox notes time.time()
    asked_before = await contact_requests(rig.notify_url)
    with CpuMeter() as meter:
        t0 = perf()
        late: list[float] = []
        if rate is None:
            due = await kafka.publish_all(rig.producer, DELAYED, messages)
        else:
            due, late = await kafka.publish_paced(rig.producer, DELAYED, messages, rate)
        sent_per_s = len(orders) / max(perf() - (t0 if rate is None else due[0]), 1e-9)
        for o, sent in zip(orders, due, strict=True):
            o.scheduled = wall + sent
        deadline = perf() + (orders[-1].scheduled + within - time.time())
        await wait_until(lambda: rig.delivered(orders) >= len(orders), deadline, 0.02)
    asked_after = await contact_requests(rig.notify_url)
    # an e-mail later than `within` after its event's scheduled time counts as missing
    arrivals = {o.order_id: mailbox.first(o.email) for o in orders}
    for o in orders:
        arrived = arrivals[o.order_id]
        if arrived is not None and arrived - o.scheduled > within:
            arrivals[o.order_id] = None
    latencies = [
        (t - o.scheduled) * 1000 if (t := arrivals[o.order_id]) is not None else math.inf
        for o in orders
    ]
    got = sorted(t for t in arrivals.values() if t is not None)
    first = orders[0].scheduled
    span = (got[-1] - first) if got else 0.0
    mailed_per_s = len(got) / span if span > 0 else 0.0
    dups = sum(max(0, len(mailbox.arrivals.get(o.email, [])) - 1) for o in orders)
    rig.earlier += orders
    if rate is not None:
        late_p99 = (percentile(late, 99) or 0.0) * 1000
        what = "NOTICES UNDELIVERED"
        note = report.flags(
            late_p99_ms=late_p99, achieved=mailed_per_s, rate=rate, left=left, what=what
        )
    else:
        note = [f"STARTED WITH {left} EARLIER NOTICES UNDELIVERED"] if left else []
        note.append(f"published+acked in {perf() - t0:.2f}s")
        if len(got) > 1:
            drain = (len(got) - 1) / max(got[-1] - got[0], 1e-9)
            note.append(f"first mail after {1000 * (got[0] - first):.0f} ms, then {drain:.1f}/s")
    zh = sum(1 for o in orders if o.locale == "zh-CN")
    note.append(f"{zh} zh-CN/{len(orders) - zh} en")
    row = Row(
        rig.backend, load, rate, len(orders), sent_per_s, len(got), mailed_per_s,
        summary(latencies), len(orders) - len(got), dups, meter.named(rig.pids, rig.db_root),
        note="; ".join(note),
    )  # fmt: skip
    row.note += "; " + lookups_note(asked_before, asked_after, row)
    waits = rig.waits.summary() if rig.waits else ""
    return Phase(load, orders, row, waits, timeline(got, first))


async def stage_breakdown(url: str, phases: list[Phase], mailbox: Mailbox) -> None:
    """Per-stage latency from notify's own timestamps (the notification log)."""
    engine = create_engine(url)
    n = notification.c
    query = select(n.order_id, n.created_at, n.sent_at, n.attempts, n.status)
    try:
        async with engine.connect() as conn:
            rows = {
                r.order_id: r
                for r in await conn.execute(query.where(n.recipient_kind == "customer"))
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
            queued = aware(r.created_at)
            mail = mailbox.first(o.email)
            if queued is None:
                continue
            spans["publish->queued"].append((queued.timestamp() - o.scheduled) * 1000)
            sent = aware(r.sent_at)
            if mail is not None:
                spans["queued->mailbox"].append((mail - queued.timestamp()) * 1000)
                if sent is not None:
                    spans["mailbox->logged"].append((sent.timestamp() - mail) * 1000)
        phase.row.stages = {name: p50_p99(v) for name, v in spans.items()}
        log = ", ".join(f"{k} {c}" for k, c in statuses.most_common())
        phase.row.note += f"; log: {log}" + (f", {retried} retried" if retried else "")


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
