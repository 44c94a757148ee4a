"""Notify: shipment-delayed event -> delay notice e-mail in a local SMTP mailbox.

    python -m deploy.testenv -- .venv/bin/python -m bench notify
    .venv/bin/python -m bench notify --rates 10 --duration 5 --burst 200     # sqlite only

Per backend the order service and the notify service run as deployed (one uvicorn process
each) on a fresh tansu broker, with notify's SMTP pointing at an aiosmtpd server in this
process that notes when each message arrives. Orders are placed through the order
service's API first, then `shipment-delayed` events are published on a fixed timetable
(open model); latency runs from each event's scheduled publish time to its e-mail
arriving. A burst then measures the ceiling: first publish to last e-mail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

import aiokafka
import aiosmtpd
import aiosmtplib
import asyncpg
import fastapi
import sqlalchemy
import uvicorn
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller

from bench.harness import cli, kafka, profile, report
from bench.harness.cli import Scenario
from bench.harness.clock import perf
from bench.harness.dbs import WaitSampler, databases, db_root, pg_stats, server_version
from bench.harness.procs import UvicornApp, clean_env, log_notes
from bench.harness.report import Output
from bench.harness.stats import fmt_ms
from bench.scenarios._notify_rig import (
    STAGES,
    Mailbox,
    Order,
    Phase,
    Rig,
    Row,
    build_delays,
    confirmation,
    place_orders,
    run_phase,
    stage_breakdown,
    wait_for_facts,
)
from services.notify.app import MIGRATIONS as NOTIFY_MIGRATIONS
from services.order.app import MIGRATIONS as ORDER_MIGRATIONS
from shared.bus import ALL_TOPICS
from shared.crypto import generate_key
from shared.db import migrate
from shared.events import (
    DelayReason,
)
from shared.infra import free_port

COMPONENTS: profile.Rules = (
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


def table(out: Output, rows: list[Row], timeout: float) -> None:
    def line(r: Row) -> str:
        notify, db, c = r.cpu.get("notify", 0.0), r.cpu.get("db"), r.cpu
        per = f"{notify * c.get('wall', 0.0) / r.mailed * 1000:.2f}" if r.mailed else "-"
        offered = "burst" if r.offered is None else f"{r.offered:g}/s"
        lat = "".join(f"{fmt_ms(v, timeout):>8}" for v in r.latency.values())
        return (
            f"{r.load:<16}{offered:>8}{r.sent_per_s:>8.0f}{r.events:>7}{r.mailed:>7}"
            f"{r.mailed_per_s:>8.1f}{lat}{r.missing:>5}{r.duplicates:>4}"
            f"{notify:>7.2f}{c.get('order', 0.0):>6.2f}{c.get('broker', 0.0):>7.2f}"
            f"{'-' if db is None else f'{db:.2f}':>5}{c.get('bench', 0.0):>6.2f}"
            f"{c.get('other', 0.0):>6.2f}{per:>8}  {r.note}"
        )

    out.table(
        f"{'load':<16}{'offered':>8}{'sent/s':>8}{'events':>7}{'mailed':>7}{'mail/s':>8}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'miss':>5}{'dup':>4}"
        f"{'notify':>7}{'order':>6}{'broker':>7}{'db':>5}{'bench':>6}{'other':>6}"
        f"{'ms/mail':>8}  note",
        map(line, rows),
    )


def apps(
    folder: Path, urls: dict[str, str], bootstrap: str, smtp_port: int, args: argparse.Namespace
) -> tuple[UvicornApp, UvicornApp]:
    """The order and notify services, one process each, as deployed (not started)."""
    common = {
        "DROPSHIP_KAFKA_BOOTSTRAP": bootstrap,
        "DROPSHIP_MIGRATE_ON_START": "false",
        "DROPSHIP_LOG_LEVEL": "WARNING",
        "DROPSHIP_DATA_DIR": str(folder),
    }
    order = UvicornApp(
        "order service", "services.order.app:create_app", {}, 1, folder / "order.log"
    )
    order.env = clean_env(
        **common,
        DROPSHIP_ORDER_DATABASE_URL=urls["order"],
        DROPSHIP_ORDER_PORT=str(order.port),
        DROPSHIP_PII_KEY=generate_key(),
        DROPSHIP_CONSUMERS_ENABLED="true" if args.order_consumers else "false",
    )
    notify = UvicornApp(
        "notify service", "services.notify.app:create_app", {}, 1, folder / "notify.log"
    )
    notify.env = clean_env(
        **common,
        DROPSHIP_NOTIFY_DATABASE_URL=urls["notify"],
        DROPSHIP_NOTIFY_PORT=str(notify.port),
        DROPSHIP_ORDER_URL=order.base,
        DROPSHIP_SUPPLIER_URL="",  # no supplier service: breakers not watched
        DROPSHIP_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        DROPSHIP_DIGEST_WINDOW_S="0",
    )
    if args.concurrency is not None:
        notify.env["DROPSHIP_SENDER_CONCURRENCY"] = str(args.concurrency)
    if args.sender_poll is not None:
        notify.env["DROPSHIP_SENDER_POLL_S"] = str(args.sender_poll)
    return order, notify


async def measure(
    rig: Rig, placed: list[Order], notify_pid: int, folder: Path
) -> tuple[list[Phase], list[str], list[str]]:
    """Warm-up, the open rates, then the burst (py-spied with --profile)."""
    args, backend = rig.args, rig.backend
    n_warm, n_open = sizes(args)
    cursor = 0

    def take(n: int) -> list[Order]:
        nonlocal cursor
        cursor += n
        return placed[cursor - n : cursor]

    warm = await run_phase(rig, "warm-up", take(n_warm), args.warmup_rate, max(args.timeout, 20.0))
    notes = [
        f"  warm-up {args.warmup_rate:g}/s x {args.warmup:g}s: {warm.row.mailed}/{warm.row.events} "
        f"mailed, p50 {fmt_ms(warm.row.latency['p50'], args.timeout)} ms"
    ]
    if not warm.row.mailed:
        raise RuntimeError("no e-mail arrived during the warm-up")
    phases = []
    for rate, n in zip(args.rates, n_open, strict=True):
        phases.append(await run_phase(rig, f"open {rate:g}/s", take(n), rate, args.timeout))
    lines: list[str] = []
    if args.burst:
        spying: list[asyncio.Task[list[str]]] = []
        out = (args.profile or folder) / f"notify-{backend}-burst.folded"

        def spy() -> None:
            if args.profile is not None:
                job = profile.record(
                    notify_pid, args.profile_seconds, out, gil=args.profile_gil, delay=0.5
                )
                spying.append(asyncio.create_task(job))

        load = f"burst {args.burst}" + ("+py-spy" if args.profile else "")
        phases.append(await run_phase(rig, load, take(args.burst), None, args.burst_timeout, spy))
        for cmd in await asyncio.gather(*spying):
            lines = [
                f"where the time goes: notify service on {backend}, burst of {args.burst}",
                "  " + " ".join(cmd),
                *profile.summarise(out, COMPONENTS, gil=args.profile_gil),
            ]
    notes += [f"  {p.load}: {p.waits}" for p in phases if p.waits]
    notes += [
        f"  {p.load}: e-mails per second since the first publish: {p.timeline}"
        for p in phases
        if p.timeline
    ]
    return phases, notes, lines


def sizes(args: argparse.Namespace) -> tuple[int, list[int]]:
    """Orders for the warm-up and for each rate."""
    n_warm = max(1, round(args.warmup * args.warmup_rate))
    return n_warm, [max(1, round(r * args.duration)) for r in args.rates]


async def run_backend(
    backend: str, args: argparse.Namespace
) -> tuple[list[Phase], list[str], list[str]]:
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    rng = random.Random(f"notify:{backend}")
    run = uuid.uuid4().hex[:6]
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(kafka.broker(ALL_TOPICS, args.broker_log))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dropship-notify-")))
        urls = await stack.enter_async_context(databases(backend, ["order", "notify"]))
        await asyncio.to_thread(migrate, ORDER_MIGRATIONS, urls["order"])
        await asyncio.to_thread(migrate, NOTIFY_MIGRATIONS, urls["notify"])
        order, notify = apps(tmp, urls, broker.bootstrap, smtp_port, args)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=2)
        waits = WaitSampler(urls["notify"]) if backend == "postgresql" else None
        try:
            t0 = perf()
            controller.start()
            order.start()
            notify.start()
            await asyncio.gather(order.wait_ready(), notify.wait_ready(), producer.start())
            notes = [
                f"  ready in {perf() - t0:.1f}s; order pid {order.pid}, notify pid {notify.pid}, "
                f"aiosmtpd on 127.0.0.1:{smtp_port} (thread in the bench)"
            ]
            # orders through the API; notify learns them from order-placed
            n_warm, n_open = sizes(args)
            total = n_warm + sum(n_open) + args.burst
            t1 = perf()
            placed, placed_rate, errors = await place_orders(order.base, total, run, rng, args)
            await kafka.publish_all(
                producer, "supplier-confirmed", [confirmation(o) for o in placed]
            )
            known = await wait_for_facts(urls["notify"], total, args.setup_timeout)
            err = f" (retried: {dict(errors)})" if errors else ""
            notes.append(
                f"  set-up: {total} orders placed at {placed_rate:.0f}/s{err}, "
                f"supplier-confirmed published; notify knew all {known:.1f}s later "
                f"({perf() - t1:.1f}s in all)"
            )
            build_delays(placed, args.reason)
            if waits is not None:
                await waits.start()
            pids = {"notify": notify.pid, "order": order.pid, "broker": kafka.broker_pid(broker)}
            rig = Rig(backend, producer, mailbox, pids, db_root(backend), waits, args)
            rig.notify_url = notify.base
            phases, more, profile_lines = await measure(rig, placed, notify.pid or 0, tmp)
            await stage_breakdown(urls["notify"], phases, mailbox)
            notes += more + (
                [f"  postgresql (notify db): {await pg_stats(urls['notify'])}"] if waits else []
            )
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
        notes += log_notes([notify, order])
        if args.logs is not None:
            for svc in (notify, order):
                (args.logs / f"notify-{backend}-{svc.log.name}").write_bytes(svc.log.read_bytes())
    return phases, notes, profile_lines


def options(ap: argparse.ArgumentParser) -> None:
    cli.add_backends(ap, both_under_testenv=False)
    cli.add_rates(
        ap, rates="50", unit="events", duration=20.0, warmup=3.0, warmup_rate=20.0, timeout=30.0,
        timeout_help="seconds after an event's due time before its e-mail counts as missing",
    )  # fmt: skip
    ap.add_argument("--burst", type=int, default=2000, help="events in the ceiling burst (0: none)")
    ap.add_argument(
        "--burst-timeout", type=float, default=300.0, help="seconds for the burst's e-mails"
    )
    ap.add_argument(
        "--concurrency", type=int, default=None, help="DROPSHIP_SENDER_CONCURRENCY (16)"
    )
    ap.add_argument("--sender-poll", type=float, default=None, help="DROPSHIP_SENDER_POLL_S (1.0)")
    ap.add_argument(
        "--reason", type=DelayReason, default=DelayReason.AT_RISK, choices=list(DelayReason),
        help="delay reason; at_risk is severity normal (no ops alert), the others urgent",
    )  # fmt: skip
    ap.add_argument("--zh-share", type=float, default=0.5, help="share of zh-CN customers")
    ap.add_argument("--pause", type=float, default=1.0, help="quiet seconds before each phase")
    ap.add_argument("--drain", type=float, default=180.0, help="max seconds for earlier e-mails")
    ap.add_argument("--place-concurrency", type=int, default=16, help="orders placed at once")
    ap.add_argument("--setup-timeout", type=float, default=300.0, help="seconds to learn orders")
    ap.add_argument("--order-consumers", action="store_true", help="order service consumes too")
    cli.add_profile(ap, seconds=15, what="py-spy the notify service during the burst")
    ap.add_argument("--profile-gil", action="store_true", help="py-spy --gil (GIL holder only)")
    cli.add_logs(ap)


async def run(args: argparse.Namespace) -> int:
    cli.prepare_dirs(args)
    out = Output(args.results)
    pg = await server_version() if "postgresql" in args.backends else "-"
    libs = report.versions(uvicorn, fastapi, aiokafka, aiosmtpd, aiosmtplib, sqlalchemy, asyncpg)
    info = report.machine(**libs, postgresql=pg)
    await report.header(
        out,
        "dropship notify benchmark: shipment-delayed -> delay notice e-mail",
        info,
        f"  command: {report.command_line()}",
        f"  started: {report.now()}  uptime: {report.uptime()}",
        f"  rates={','.join(f'{r:g}' for r in args.rates)}/s duration={args.duration:g}s "
        f"burst={args.burst} reason={args.reason.value} zh-CN share={args.zh_share:g} "
        f"sender_concurrency={args.concurrency or 'default (16)'} "
        f"sender_poll_s={args.sender_poll or 'default (1)'} digest_window_s=0 "
        f"timeout={args.timeout:g}s partitions={kafka.PARTITIONS} "
        f"backends={','.join(args.backends)} "
        f"order consumers={'on' if args.order_consumers else 'off'}",
        "  one machine: notify (1 process), order service (1 process), broker, database, and "
        "this bench (publisher + aiosmtpd) share the cores; cpu columns are cores used",
    )
    rows: list[Row] = []
    profiles: list[str] = []
    for backend in args.backends:
        t0 = perf()
        phases, notes, prof = await run_backend(backend, args)
        backend_rows = [p.row for p in phases]
        rows += backend_rows
        out(f"== {backend}")
        table(out, backend_rows, args.timeout)
        report.stage_table(
            out, [(r.load, r.stages) for r in backend_rows], STAGES, label=16, cell=32
        )
        out(
            *notes,
            f"  ({backend} run took {perf() - t0:.1f}s incl. start-up, orders and warm-up)",
            "",
        )
        profiles += [*prof, ""] if prof else []
    if profiles:
        out(*profiles)
    for r in rows:
        if r.offered is None:
            out(
                f"ceiling on {r.backend}: {r.mailed_per_s:.1f} notices/s into the mailbox "
                f"({r.mailed}/{r.events} e-mails, first publish -> last e-mail)"
            )
        else:
            p50, p99 = (fmt_ms(r.latency[q], args.timeout) for q in ("p50", "p99"))
            out(f"{r.offered:g}/s on {r.backend}: p50 {p50} ms, p99 {p99} ms event -> mailbox")
    report.noisy_warning(out, (r.cpu for r in rows))
    out(
        f"  finished: {report.now()}  uptime: {report.uptime()}",
        "latency: from each shipment-delayed event's scheduled publish time (burst: its send) "
        "to its e-mail arriving at the SMTP server; nearest-rank; missing count as slowest",
    )
    if args.json:
        out.json(info, [asdict(r) for r in rows])
    out.save()
    return 0


SCENARIO = Scenario("notify", __doc__ or "", options, run)
