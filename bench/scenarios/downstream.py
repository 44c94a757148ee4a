"""Notify and metrics on a steady lifecycle stream: CPU, transactions and round trips per order.

    .venv/bin/python -m deploy.testenv -- .venv/bin/python -m bench downstream --rate 10
    .venv/bin/python -m bench downstream --rate 10 --seconds 20        # sqlite only
    ... --env DROPSHIP_NOTIFY_CONSUMER_LINGER_MS=5 --env DROPSHIP_METRICS_CONSUMER_LINGER_MS=5

Per backend: a fresh tansu broker and fresh order, notify and metrics databases; the order
service runs only to answer notify's contact lookups (its relay and consumers off), notify
sends over SMTP to an aiosmtpd sink in this process (`DROPSHIP_DIGEST_WINDOW_S=0`), metrics
keeps its facts. Set-up, not timed: the orders are placed through `POST /v1/orders`.

Then, at `--rate` orders/s (open model), every order's lifecycle is published by this bench
as the stack would: `order-placed`, `supplier-confirmed`, `shipment-dispatched` and
`shipment-delivered`, `--gap-ms` apart. Notify turns the dispatch into an e-mail (and its
`notification-sent` reaches metrics). A warm-up of `--warmup` orders runs first, unmeasured.
The window runs from the first publish until every e-mail has arrived and metrics has
consumed every event (`dropship_events_consumed_total`); per order it reports each service's
CPU (ms, from /proc), its database transactions and statements (round trips, from its own
`dropship_db_transactions_total` / `dropship_db_statements_total`), and PostgreSQL's CPU.
`--env KEY=VALUE` (repeatable) is given to both services, for before/after runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import tempfile
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller

from bench.harness import cli, kafka, report
from bench.harness.cli import Scenario
from bench.harness.clock import perf, wait_until
from bench.harness.dbs import databases, db_root, server_version
from bench.harness.procs import CpuMeter, UvicornApp, clean_env, log_notes
from bench.harness.report import Output
from bench.scenarios._notify_rig import Mailbox, Order, place_orders
from services.metrics.app import MIGRATIONS as METRICS_MIGRATIONS
from services.notify.app import MIGRATIONS as NOTIFY_MIGRATIONS
from services.order.app import MIGRATIONS as ORDER_MIGRATIONS
from shared.bus import ALL_TOPICS
from shared.crypto import generate_key
from shared.db import migrate
from shared.events import (
    ConfirmedLine,
    EventData,
    OrderPlaced,
    PlacedLine,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    new_envelope,
)
from shared.infra import free_port

SUPPLIER = "bench-supplier"
SERVICES = ("notify", "metrics")
COUNTER = re.compile(
    r"^dropship_(db_statements|db_transactions|events_consumed)_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)$",
    re.MULTILINE,
)
Message = tuple[str, bytes, bytes]  # topic, key, value


def lifecycle(o: Order) -> list[EventData]:
    """What the stack publishes about one order that goes well, in order."""
    now = datetime.now(UTC)
    line_ids = [ln["line_id"] for ln in o.lines]
    return [
        OrderPlaced(
            order_id=o.order_id,
            channel="storefront",
            currency="USD",
            lines=[
                PlacedLine(
                    line_id=ln["line_id"],
                    sku=ln["sku"],
                    quantity=ln["quantity"],
                    unit_price=ln["unit_price"],
                )
                for ln in o.lines
            ],
            shipping_country="US",
            shipping_postal_code="10001",
            placed_at=now,
        ),
        SupplierConfirmed(
            order_id=o.order_id,
            supplier_id=SUPPLIER,
            supplier_order_ref=f"so-{o.order_id}",
            lines=[
                ConfirmedLine(line_id=ln["line_id"], quantity=ln["quantity"], unit_cost="3.00")
                for ln in o.lines
            ],
            currency="USD",
            ship_by=now + timedelta(hours=48),
        ),
        ShipmentDispatched(
            order_id=o.order_id,
            supplier_id=SUPPLIER,
            carrier="ups",
            tracking_number=f"1Z{o.order_id[-12:]}",
            line_ids=line_ids,
        ),
        ShipmentDelivered(
            order_id=o.order_id, tracking_number=f"1Z{o.order_id[-12:]}", delivered_at=now
        ),
    ]


def timetable(orders: list[Order], rate: float, gap_s: float) -> list[tuple[float, Message]]:
    """(offset from start, message) for every event, sorted: order i starts at i/rate."""
    out: list[tuple[float, Message]] = []
    for i, o in enumerate(orders):
        for k, data in enumerate(lifecycle(o)):
            envelope = new_envelope(data)
            out.append((i / rate + k * gap_s, (data.event_type, envelope.key, envelope.to_bytes())))
    return sorted(out, key=lambda item: item[0])


async def publish(producer: AIOKafkaProducer, table: list[tuple[float, Message]]) -> None:
    start, futures = perf(), []
    for at, (topic, key, value) in table:
        wait = start + at - perf()
        if wait > 0:
            await asyncio.sleep(wait)
        futures.append(await producer.send(topic, value, key=key))
    await asyncio.gather(*futures)


async def counters(urls: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per service: transactions, statements and events consumed so far."""
    got: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=15) as c:
        for name in SERVICES:
            text = (await c.get(urls[name] + "/metrics")).text
            sums: dict[str, float] = defaultdict(float)
            for kind, value in COUNTER.findall(text):
                sums[kind] += float(value)
            got[name] = dict(sums)
    return got


async def phase(
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    urls: dict[str, str],
    orders: list[Order],
    args: argparse.Namespace,
) -> tuple[CpuMeter, dict[str, dict[str, float]], dict[str, dict[str, float]], float]:
    """Publish the orders' lifecycles and wait until both services are through."""
    before = await counters(urls)
    mails = mailbox.total + len(orders)
    consumed = before["metrics"].get("events_consumed", 0) + 5 * len(orders)
    deadline = perf() + len(orders) / args.rate + args.timeout
    with CpuMeter() as meter:
        await publish(producer, timetable(orders, args.rate, args.gap_ms / 1000))
        if not await wait_until(lambda: mailbox.total >= mails, deadline):
            raise RuntimeError(f"{mails - mailbox.total} e-mails missing")
        while (await counters(urls))["metrics"].get("events_consumed", 0) < consumed:
            if perf() > deadline:
                raise RuntimeError("metrics did not consume every event in time")
            await asyncio.sleep(0.5)
    after = await counters(urls)
    return meter, before, after, os.getloadavg()[0]


def apps(
    folder: Path, urls: dict[str, str], bootstrap: str, smtp: int, args: argparse.Namespace
) -> dict[str, UvicornApp]:
    common = {
        "DROPSHIP_KAFKA_BOOTSTRAP": bootstrap,
        "DROPSHIP_MIGRATE_ON_START": "false",
        "DROPSHIP_LOG_LEVEL": "WARNING",
        "DROPSHIP_DATA_DIR": str(folder),
    }
    extra = dict(kv.split("=", 1) for kv in args.env)
    made = {
        name: UvicornApp(name, f"services.{name}.app:create_app", {}, 1, folder / f"{name}.log")
        for name in ("order", *SERVICES)
    }
    order, notify, metrics = made["order"], made["notify"], made["metrics"]
    order.env = clean_env(
        **common,
        DROPSHIP_ORDER_DATABASE_URL=urls["order"],
        DROPSHIP_ORDER_PORT=str(order.port),
        DROPSHIP_PII_KEY=generate_key(),
        DROPSHIP_CONSUMERS_ENABLED="false",
        DROPSHIP_RELAY_ENABLED="false",  # the bench publishes order-placed itself
    )
    notify.env = clean_env(
        **common,
        **extra,
        DROPSHIP_NOTIFY_DATABASE_URL=urls["notify"],
        DROPSHIP_NOTIFY_PORT=str(notify.port),
        DROPSHIP_ORDER_URL=order.base,
        DROPSHIP_SUPPLIER_URL="",
        DROPSHIP_SMTP_URL=f"smtp://127.0.0.1:{smtp}",
        DROPSHIP_DIGEST_WINDOW_S="0",
    )
    metrics.env = clean_env(
        **common,
        **extra,
        DROPSHIP_METRICS_DATABASE_URL=urls["metrics"],
        DROPSHIP_METRICS_PORT=str(metrics.port),
    )
    return made


def per_order(
    meter: CpuMeter,
    before: dict[str, dict[str, float]],
    after: dict[str, dict[str, float]],
    made: dict[str, UvicornApp],
    root: int | None,
    n: int,
) -> dict[str, dict[str, float]]:
    u = meter.usage
    rows: dict[str, dict[str, float]] = {}
    for name in SERVICES:
        delta = {k: after[name].get(k, 0) - before[name].get(k, 0) for k in after[name]}
        rows[name] = {
            "cpu_ms": u.tree_s(made[name].pid) * 1000 / n,
            "transactions": delta.get("db_transactions", 0) / n,
            "round_trips": delta.get("db_statements", 0) / n,
        }
    if root is not None:
        rows["postgres"] = {"cpu_ms": u.db_cores(root) * u.wall * 1000 / n}
    rows["order"] = {"cpu_ms": u.tree_s(made["order"].pid) * 1000 / n}
    return rows


async def run_backend(backend: str, args: argparse.Namespace, out: Output) -> dict[str, Any]:
    mailbox, smtp = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp)
    n_measured = max(1, round(args.rate * args.seconds))
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(kafka.broker(ALL_TOPICS, args.broker_log))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dropship-down-")))
        urls = await stack.enter_async_context(databases(backend, ["order", *SERVICES]))
        for folder, name in (
            (ORDER_MIGRATIONS, "order"),
            (NOTIFY_MIGRATIONS, "notify"),
            (METRICS_MIGRATIONS, "metrics"),
        ):
            await asyncio.to_thread(migrate, folder, urls[name])
        made = apps(tmp, urls, broker.bootstrap, smtp, args)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=2)
        try:
            controller.start()
            for svc in made.values():
                svc.start()
            await asyncio.gather(*(s.wait_ready() for s in made.values()), producer.start())
            placed, _, _ = await place_orders(
                made["order"].base,
                args.warmup + n_measured,
                uuid.uuid4().hex[:6],
                random.Random(f"downstream:{backend}"),
                args,
            )
            service_urls = {name: made[name].base for name in SERVICES}
            await phase(producer, mailbox, service_urls, placed[: args.warmup], args)
            await asyncio.sleep(args.pause)
            meter, before, after, load = await phase(
                producer, mailbox, service_urls, placed[args.warmup :], args
            )
            rows = per_order(meter, before, after, made, db_root(backend), n_measured)
        except Exception:
            for svc in made.values():
                out(f"--- {svc.name} log (tail) ---\n{svc.log_tail()}")
            raise
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
            for svc in made.values():
                svc.stop()
            with contextlib.suppress(Exception):
                controller.stop()
        notes = log_notes(list(made.values()))
    out(f"== {backend}: {n_measured} orders at {args.rate:g}/s, load average {load:.2f}")
    out(f"  {'':<10}{'cpu ms':>8}{'txns':>7}{'trips':>7}   (per order)")
    for name, row in rows.items():
        txns, trips = row.get("transactions"), row.get("round_trips")
        cells = f"{txns:>7.2f}{trips:>7.1f}" if txns is not None and trips is not None else ""
        out(f"  {name:<10}{row['cpu_ms']:>8.1f}{cells}")
    out(f"  window {meter.usage.wall:.1f}s", *notes, "")
    return {"backend": backend, "orders": n_measured, "load1": load, "per_order": rows}


def options(ap: argparse.ArgumentParser) -> None:
    cli.add_backends(ap, both_under_testenv=False)
    ap.add_argument("--rate", type=float, default=10.0, help="orders per second (10)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured publishing (20)")
    ap.add_argument("--warmup", type=int, default=20, help="orders before, unmeasured (20)")
    ap.add_argument("--gap-ms", type=float, default=100.0, help="between an order's events")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds after the warm-up")
    ap.add_argument("--timeout", type=float, default=60.0, help="drain after publishing")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for both services")
    ap.add_argument("--place-concurrency", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--zh-share", type=float, default=0.5, help=argparse.SUPPRESS)


async def run(args: argparse.Namespace) -> int:
    out = Output(args.results)
    pg = await server_version() if "postgresql" in args.backends else "-"
    await report.header(
        out,
        "dropship downstream benchmark: notify and metrics per order of a steady lifecycle",
        report.machine(postgresql=pg),
        f"  command: {report.command_line()}",
        f"  started: {report.now()}  uptime: {report.uptime()}",
    )
    results = [await run_backend(backend, args, out) for backend in args.backends]
    if args.json:
        out.json(report.machine(postgresql=pg), results)
    out.save()
    return 0


SCENARIO = Scenario("downstream", __doc__ or "", options, run)
