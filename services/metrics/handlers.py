"""Metrics consumer: a batch of fresh events becomes fact rows, written set-based in one go.

The platform consumer hands over the events of one partition that the inbox has not
seen (claimed in bulk), and `apply_batch` turns them into rows and writes each table
with one statement (`bulk`). Nothing here depends on the order events arrive in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table

from services.metrics import exposition
from services.metrics import tables as t
from services.metrics.store import MetricsUnitOfWork
from shared.consumer import PermanentError
from shared.events import (
    Envelope,
    EventData,
    NotificationSent,
    OrderCancelled,
    OrderPlaced,
    OrderRoutingFailed,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)

MICROS = 6
_MAX_MICROS = 2**63 - 1


def micros(amount: Decimal, field: str) -> int:
    """An amount as integer micro-units; refuses what cannot be stored exactly."""
    scaled = amount.scaleb(MICROS)
    if scaled != scaled.to_integral_value():
        raise PermanentError(f"{field}={amount:f} has more than {MICROS} decimals")
    value = int(scaled)
    if abs(value) > _MAX_MICROS:
        raise PermanentError(f"{field}={amount:f} is out of range")
    return value


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


Rows = dict[Table, list[dict[str, Any]]]


def fact_rows(envelope: Envelope, data: EventData, rows: Rows) -> None:
    """Append the fact rows of one event to `rows` (by table)."""
    when = utc(envelope.time)
    eid = envelope.id
    if isinstance(data, OrderPlaced):
        total = 0
        for line in data.lines:
            price = micros(line.unit_price, f"lines[{line.line_id}].unit_price")
            total += price * line.quantity
            rows[t.sale_line].append(
                {
                    "order_id": data.order_id,
                    "line_id": line.line_id,
                    "quantity": line.quantity,
                    "unit_price_micros": price,
                }
            )
        rows[t.sale].append(
            {
                "order_id": data.order_id,
                "event_id": eid,
                "channel": data.channel,
                "currency": data.currency,
                "total_micros": total,
                "units": sum(line.quantity for line in data.lines),
                "placed_at": utc(data.placed_at),
            }
        )
    elif isinstance(data, SupplierConfirmed):
        rows[t.confirmation].append(
            {
                "event_id": eid,
                "order_id": data.order_id,
                "supplier_id": data.supplier_id,
                "currency": data.currency,
                "confirmed_at": when,
                "ship_by": utc(data.ship_by),
            }
        )
        for cl in data.lines:
            rows[t.confirmation_line].append(
                {
                    "event_id": eid,
                    "line_id": cl.line_id,
                    "order_id": data.order_id,
                    "quantity": cl.quantity,
                    "unit_cost_micros": micros(cl.unit_cost, f"lines[{cl.line_id}].unit_cost"),
                }
            )
    elif isinstance(data, ShipmentDispatched):
        rows[t.dispatch].append(
            {
                "event_id": eid,
                "order_id": data.order_id,
                "supplier_id": data.supplier_id,
                "tracking_number": data.tracking_number,
                "dispatched_at": when,
            }
        )
    elif isinstance(data, ShipmentDelayed):
        rows[t.delay].append(
            {
                "event_id": eid,
                "order_id": data.order_id,
                "supplier_id": data.supplier_id,
                "reason": data.reason.value,
                "severity": data.severity.value,
                "delayed_at": when,
            }
        )
    elif isinstance(data, ShipmentDelivered):
        rows[t.delivery].append(
            {
                "event_id": eid,
                "order_id": data.order_id,
                "tracking_number": data.tracking_number,
                "delivered_at": utc(data.delivered_at),
            }
        )
    elif isinstance(data, OrderCancelled):
        rows[t.cancellation].append(
            {
                "event_id": eid,
                "order_id": data.order_id,
                "reason": data.reason[:200],
                "cancelled_at": when,
            }
        )
    elif isinstance(data, OrderRoutingFailed):
        rows[t.routing_failure].append(
            {
                "event_id": eid,
                "order_id": data.order_id,
                "reason": data.reason.value,
                "lines": len(data.line_ids),
                "failed_at": when,
            }
        )
    elif isinstance(data, NotificationSent):
        rows[t.notice].append(
            {
                "event_id": eid,
                "order_id": data.order_id,
                "kind": data.kind,
                "channel": data.channel,
                "recipient_kind": data.recipient_kind,
                "status": data.status,
                "sent_at": when,
            }
        )


async def apply_batch(events: Sequence[tuple[Envelope, EventData]], uow: MetricsUnitOfWork) -> None:
    """Write the facts of a batch of fresh events (the unit of work commits)."""
    rows: Rows = defaultdict(list)
    for envelope, data in events:
        fact_rows(envelope, data, rows)
    await uow.add_facts(rows)
    uow.after_commit(lambda: exposition.observe(rows))


async def apply_one(envelope: Envelope, data: EventData, uow: MetricsUnitOfWork) -> None:
    await apply_batch([(envelope, data)], uow)
