"""Consumed events: each turns a fact into queued sends, in the event's inbox transaction.

Nothing is sent here. A handler only writes rows to the notification log in the same
transaction that records the event as processed; the sender delivers them later. So a
redelivered event finds its rows already queued (unique per dedupe key and channel)
and a crash mid-send leaves a leased row that is picked up again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.notify.domain import (
    OPS_ONLY_DELAYS,
    FactLine,
    Kind,
    OrderFact,
    notice_key,
    sms_worthy,
)
from services.notify.handlers import alerts
from services.notify.store import NotifyUnitOfWork
from shared.events import (
    Envelope,
    OrderCancelled,
    OrderLinesWaiting,
    OrderPlaced,
    OrderRoutingFailed,
    ShipmentDelayed,
    ShipmentDispatched,
    SupplierConfirmed,
    SupplierStatusChanged,
)


async def queue_notice(
    uow: NotifyUnitOfWork,
    order_id: str,
    kind: Kind,
    reason: str,
    part: dict[str, Any],
    *,
    digest: bool = False,
) -> bool:
    """Queue a notice on e-mail (and SMS when it warrants one); merge into a waiting digest.

    `part` describes what happened (a supplier's delayed lines, a tracking number...).
    A notice still waiting out its digest window absorbs later parts of the same
    (order, kind, reason) so the customer gets one message listing every delayed line.
    """
    key = notice_key(order_id, kind, reason)
    now = datetime.now(UTC)
    not_before = now + uow.policy.digest_window if digest else now
    channels = ["email"]
    if uow.policy.sms_enabled and sms_worthy(kind, reason):
        channels.append("sms")
    queued = False
    for channel in channels:
        queued |= await uow.notifications.queue(
            dedupe_key=key,
            channel=channel,
            target="customer",
            recipient_kind="customer",
            order_id=order_id,
            kind=kind.value,
            reason=reason,
            template=kind.value,
            details={"parts": [part]},
            not_before=not_before,
        )
    if not queued and digest:
        for waiting in await uow.notifications.waiting_with_key(key):
            parts = list(waiting.details.get("parts", []))
            if part not in parts:
                details = {**waiting.details, "parts": [*parts, part]}
                await uow.notifications.set_details(waiting.id, details)
    return queued


async def on_order_placed(envelope: Envelope, data: OrderPlaced, uow: NotifyUnitOfWork) -> None:
    await uow.orders.add(
        OrderFact(
            order_id=data.order_id,
            external_id=data.external_id,
            channel=data.channel,
            currency=data.currency,
            placed_at=data.placed_at,
            lines=[FactLine(line.line_id, line.sku, line.quantity) for line in data.lines],
        )
    )


async def on_supplier_confirmed(
    envelope: Envelope, data: SupplierConfirmed, uow: NotifyUnitOfWork
) -> None:
    await uow.orders.record_share(
        data.order_id, data.supplier_id, [line.line_id for line in data.lines], data.ship_by
    )
    await uow.waiting.clear(data.order_id, [line.line_id for line in data.lines])


async def on_order_lines_waiting(
    envelope: Envelope, data: OrderLinesWaiting, uow: NotifyUnitOfWork
) -> None:
    """Watch the lines: ops are paged if they wait too long (see `alerts.waiting_too_long`)."""
    await uow.waiting.add(data.order_id, data.line_ids, data.since)


async def on_shipment_delayed(
    envelope: Envelope, data: ShipmentDelayed, uow: NotifyUnitOfWork
) -> None:
    expected = data.expected_by.isoformat() if data.expected_by else None
    if data.reason not in OPS_ONLY_DELAYS:
        line_ids = await uow.orders.share_lines(data.order_id, data.supplier_id) or []
        part = {"supplier_id": data.supplier_id, "line_ids": line_ids, "expected_by": expected}
        await queue_notice(
            uow, data.order_id, Kind.SHIPMENT_DELAYED, data.reason.value, part, digest=True
        )
    await alerts.shipment_delayed(uow, data, expected)


async def on_shipment_dispatched(
    envelope: Envelope, data: ShipmentDispatched, uow: NotifyUnitOfWork
) -> None:
    part = {
        "supplier_id": data.supplier_id,
        "line_ids": data.line_ids,
        "carrier": data.carrier,
        "tracking_number": data.tracking_number,
    }
    await queue_notice(uow, data.order_id, Kind.SHIPMENT_DISPATCHED, data.tracking_number, part)


async def on_order_cancelled(
    envelope: Envelope, data: OrderCancelled, uow: NotifyUnitOfWork
) -> None:
    await queue_notice(uow, data.order_id, Kind.ORDER_CANCELLED, "", {"cancel_reason": data.reason})
    await uow.waiting.clear(data.order_id)


async def on_order_routing_failed(
    envelope: Envelope, data: OrderRoutingFailed, uow: NotifyUnitOfWork
) -> None:
    await uow.waiting.clear(data.order_id, data.line_ids)
    part = {"line_ids": data.line_ids, "routing_reason": data.reason.value}
    await queue_notice(uow, data.order_id, Kind.ORDER_ROUTING_FAILED, "", part)
    await alerts.routing_failed(uow, data)


async def on_supplier_status_changed(
    envelope: Envelope, data: SupplierStatusChanged, uow: NotifyUnitOfWork
) -> None:
    """Track the supplier's availability; page ops when an outage begins (once per outage)."""
    watch = await uow.suppliers.get(data.supplier_id)
    if watch.record(data.status, data.changed_at):
        await alerts.supplier_unavailable(uow, watch, data.reason)
    await uow.suppliers.save(watch)
