"""Metrics handlers: a batch of fresh events becomes fact rows and rollup deltas, set-based.

The platform consumer hands over the events of one partition that the inbox has not
seen (claimed in bulk), and `apply_batch` turns them into rows (one small function per
event type, wired in `FACTS`) and writes each table with one statement (`bulk`).
Nothing here depends on the order events arrive in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar, cast

from services.metrics import aftersales_facts as after_sales
from services.metrics import exposition
from services.metrics import tables as t
from services.metrics.rows import Rows, micros, utc
from services.metrics.store import MetricsUnitOfWork
from shared.consumer import PermanentError
from shared.events import (
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    Envelope,
    EventData,
    MarketplaceSyncFailed,
    NotificationSent,
    OrderCancelled,
    OrderHeld,
    OrderPlaced,
    OrderReleased,
    OrderRoutingFailed,
    RefundIssued,
    ReturnAuthorized,
    ReturnReceived,
    ReturnRejected,
    ReturnRequested,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)

E = TypeVar("E", bound=EventData)

FactRows = Callable[[Envelope, E, Rows], None]
"""Appends the fact rows of one event of type `E` to `rows` (by table)."""


def _sale(envelope: Envelope, data: OrderPlaced, rows: Rows) -> None:
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
            "event_id": envelope.id,
            "channel": data.channel,
            "currency": data.currency,
            "total_micros": total,
            "units": sum(line.quantity for line in data.lines),
            "placed_at": utc(data.placed_at),
        }
    )


def _confirmation(envelope: Envelope, data: SupplierConfirmed, rows: Rows) -> None:
    rows[t.confirmation].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "supplier_id": data.supplier_id,
            "currency": data.currency,
            "confirmed_at": utc(envelope.time),
            "ship_by": utc(data.ship_by),
        }
    )
    for cl in data.lines:
        rows[t.confirmation_line].append(
            {
                "event_id": envelope.id,
                "line_id": cl.line_id,
                "order_id": data.order_id,
                "quantity": cl.quantity,
                "unit_cost_micros": micros(cl.unit_cost, f"lines[{cl.line_id}].unit_cost"),
            }
        )


def _dispatch(envelope: Envelope, data: ShipmentDispatched, rows: Rows) -> None:
    rows[t.dispatch].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "supplier_id": data.supplier_id,
            "tracking_number": data.tracking_number,
            "dispatched_at": utc(envelope.time),
        }
    )


def _delay(envelope: Envelope, data: ShipmentDelayed, rows: Rows) -> None:
    rows[t.delay].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "supplier_id": data.supplier_id,
            "reason": data.reason.value,
            "severity": data.severity.value,
            "delayed_at": utc(envelope.time),
        }
    )


def _delivery(envelope: Envelope, data: ShipmentDelivered, rows: Rows) -> None:
    rows[t.delivery].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "tracking_number": data.tracking_number,
            "delivered_at": utc(data.delivered_at),
        }
    )


def _cancellation(envelope: Envelope, data: OrderCancelled, rows: Rows) -> None:
    rows[t.cancellation].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "reason": data.reason[:200],
            "cancelled_at": utc(envelope.time),
        }
    )


def _routing_failure(envelope: Envelope, data: OrderRoutingFailed, rows: Rows) -> None:
    rows[t.routing_failure].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "reason": data.reason.value,
            "lines": len(data.line_ids),
            "failed_at": utc(envelope.time),
        }
    )


def _hold(envelope: Envelope, data: OrderHeld, rows: Rows) -> None:
    rows[t.hold].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "reason": data.reason.value,
            "held_at": utc(data.held_at),
        }
    )


def _release(envelope: Envelope, data: OrderReleased, rows: Rows) -> None:
    rows[t.hold_release].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "released_at": utc(data.released_at),
        }
    )


def _notice(envelope: Envelope, data: NotificationSent, rows: Rows) -> None:
    rows[t.notice].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "kind": data.kind,
            "channel": data.channel,
            "recipient_kind": data.recipient_kind,
            "status": data.status,
            "sent_at": utc(envelope.time),
        }
    )


def _sync_failure(envelope: Envelope, data: MarketplaceSyncFailed, rows: Rows) -> None:
    rows[t.marketplace_sync_failure].append(
        {
            "event_id": envelope.id,
            "order_id": data.order_id,
            "platform": data.platform,
            "operation": data.operation.value,
            "failed_at": utc(data.failed_at),
        }
    )


def _facts(model: type[E], rows_of: FactRows[E]) -> tuple[type[EventData], FactRows[EventData]]:
    # sound: `fact_rows` looks the function up by the event's exact type, so it is only
    # ever called with an instance of `model`
    return model, cast(FactRows[EventData], rows_of)


FACTS: Mapping[type[EventData], FactRows[EventData]] = dict(
    (
        _facts(OrderPlaced, _sale),
        _facts(SupplierConfirmed, _confirmation),
        _facts(ShipmentDispatched, _dispatch),
        _facts(ShipmentDelayed, _delay),
        _facts(ShipmentDelivered, _delivery),
        _facts(OrderCancelled, _cancellation),
        _facts(OrderRoutingFailed, _routing_failure),
        _facts(NotificationSent, _notice),
        _facts(OrderHeld, _hold),
        _facts(OrderReleased, _release),
        _facts(ReturnRequested, after_sales.return_requested),
        _facts(ReturnAuthorized, after_sales.return_authorized),
        _facts(ReturnRejected, after_sales.return_rejected),
        _facts(ReturnReceived, after_sales.return_received),
        _facts(RefundIssued, after_sales.refund_issued),
        _facts(ComplaintFiled, after_sales.complaint_filed),
        _facts(ComplaintResponded, after_sales.complaint_responded),
        _facts(ComplaintResolved, after_sales.complaint_resolved),
        _facts(MarketplaceSyncFailed, _sync_failure),
    )
)
"""Event model -> the function that turns one such event into fact rows."""


def fact_rows(envelope: Envelope, data: EventData, rows: Rows) -> None:
    """Append the fact rows of one event to `rows` (by table)."""
    rows_of = FACTS.get(type(data))
    if rows_of is None:
        raise PermanentError(f"no facts are kept for {envelope.type}")
    rows_of(envelope, data, rows)


async def apply_batch(events: Sequence[tuple[Envelope, EventData]], uow: MetricsUnitOfWork) -> None:
    """Write the facts of a batch of fresh events and what they change in the KPI rollups
    (the unit of work commits both, with the inbox rows that claim the events)."""
    rows: Rows = defaultdict(list)
    for envelope, data in events:
        fact_rows(envelope, data, rows)
    await uow.rollups.apply(rows)  # before the insert: it compares with the facts stored
    await uow.facts.add(rows)
    uow.after_commit(lambda: exposition.observe(rows))


async def apply_one(envelope: Envelope, data: EventData, uow: MetricsUnitOfWork) -> None:
    await apply_batch([(envelope, data)], uow)


async def reset(consumer: str, uow: MetricsUnitOfWork) -> None:
    """Forget every fact and every applied event, for a rebuild from the topics."""
    async with uow:
        await uow.facts.clear()
        await uow.rollups.clear()
        await uow.applied.forget(consumer)
        await uow.commit()
