"""Order service: CPU and SQL statements per supplier event applied (confirm, dispatch, deliver).

    .venv/bin/python -m bench order_events --orders 300                  # sqlite only
    python -m deploy.testenv -- .venv/bin/python -m bench order_events   # sqlite and postgresql

Per backend, on a fresh order database: `--orders` storefront orders of `--lines` lines each
are placed (not timed), every other one remembered as a registered shop's order (so its
dispatch also queues the shop's fulfilment write-back). Then, through the order service's
own consumer path (`MessageProcessor` over `services.order.consumers.CONSUMERS`, one event
per transaction as a batch of one), every order gets `supplier-confirmed` (all lines),
then `shipment-dispatched`, then `shipment-delivered`. Printed per event type: CPU
milliseconds of this process per event (`time.process_time`: all of SQLite's work, none of
PostgreSQL's server) and statements sent per event (a `before_cursor_execute` count,
transaction control included), and wall milliseconds per event.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import event

from bench.harness.cli import Scenario, add_backends
from bench.harness.clock import perf
from bench.harness.dbs import databases
from bench.harness.report import Output
from services.order.app import MIGRATIONS
from services.order.consumers import CONSUMERS
from services.order.domain import Address, Contact, LineInput, PlaceOrder
from services.order.handlers import Placed, place_order
from services.order.pii import PiiCipher, generate_key
from services.order.shops.handlers import origins
from services.order.store import OrderUnitOfWork
from shared.consumer import MessageProcessor
from shared.db import create_engine, migrate_async, session_factory
from shared.events import (
    ConfirmedLine,
    EventData,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    new_envelope,
)


def _command(i: int, lines: int) -> PlaceOrder:
    return PlaceOrder(
        channel="storefront",
        external_id=None,
        currency="USD",
        customer=Contact(f"Customer {i}", f"c{i}@example.com", "+1 212 555 0100", "en"),
        shipping=Address(f"{i} Main St", "Springfield", "10001", "US", "Apt 4", "NY"),
        lines=tuple(LineInput(f"SKU-{k}", 1, Decimal("5.00")) for k in range(lines)),
    )


def _events(order_id: str, line_ids: list[str]) -> list[EventData]:
    now = datetime.now(UTC)
    tracking = f"1Z{order_id[-10:]}"
    return [
        SupplierConfirmed(
            order_id=order_id,
            supplier_id="sup-a",
            supplier_order_ref=f"SO-{order_id[-10:]}",
            lines=[
                ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal("3.10")) for i in line_ids
            ],
            currency="USD",
            ship_by=now + timedelta(hours=48),
        ),
        ShipmentDispatched(
            order_id=order_id,
            supplier_id="sup-a",
            carrier="ups",
            tracking_number=tracking,
            line_ids=line_ids,
        ),
        ShipmentDelivered(order_id=order_id, tracking_number=tracking, delivered_at=now),
    ]


async def run_backend(out: Output, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": backend}
    async with databases(backend, ["order"]) as urls:
        await migrate_async(MIGRATIONS, urls["order"])
        engine = create_engine(urls["order"])
        sessions = session_factory(engine)
        cipher = PiiCipher(generate_key())

        def uow() -> OrderUnitOfWork:
            return OrderUnitOfWork(sessions, cipher=cipher)

        statements = [0]

        def count(*_: Any) -> None:
            statements[0] += 1

        try:
            streams: list[list[EventData]] = []
            for i in range(args.orders):
                placed = await place_order(_command(i, args.lines), uow())
                assert isinstance(placed, Placed)
                order = placed.order
                if i % 2 == 0:
                    async with uow() as u:
                        await origins(u).remember(order.id, "shop_bench", f"#{i}")
                        await u.commit()
                streams.append(_events(order.id, [ln.line_id for ln in order.lines]))
            processor = MessageProcessor("order", CONSUMERS, uow)
            event.listen(engine.sync_engine, "before_cursor_execute", count)
            for step in range(3):
                batch = [
                    (e.type, e.to_bytes()) for e in map(new_envelope, (s[step] for s in streams))
                ]
                kind = batch[0][0]
                statements[0] = 0
                started, cpu = perf(), time.process_time()
                for message in batch:
                    await processor.process_many([message])
                wall, cpu = perf() - started, time.process_time() - cpu
                n = len(batch)
                result[kind] = {
                    "cpu_ms": cpu * 1000 / n,
                    "statements": statements[0] / n,
                    "wall_ms": wall * 1000 / n,
                }
                r = result[kind]
                out(
                    f"{backend:10} {kind:20} {n:>6} events  CPU {r['cpu_ms']:6.2f} ms/event  "
                    f"{r['statements']:5.1f} statements/event  wall {r['wall_ms']:6.2f} ms/event"
                )
        finally:
            await engine.dispose()
    return result


def options(ap: argparse.ArgumentParser) -> None:
    add_backends(ap)
    ap.add_argument("--orders", type=int, default=300, help="orders (3 events each; default 300)")
    ap.add_argument("--lines", type=int, default=3, help="lines per order (default 3)")


async def run(args: argparse.Namespace) -> int:
    out = Output(args.results)
    out(f"order_events: {args.orders} orders of {args.lines} lines, one event per transaction", "")
    results = [await run_backend(out, backend, args) for backend in args.backends]
    if args.json:
        out.json({}, results)
    out.save()
    return 0


SCENARIO = Scenario("order_events", __doc__ or "", options, run)
