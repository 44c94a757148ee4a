"""Event handlers and alert rules: each turns facts into queued sends, in the inbox transaction.

Nothing is sent here. A handler only writes rows to the notification log in the same
transaction that records the event as processed; the sender delivers them later. So a
redelivered event finds its rows already queued (unique per dedupe key and channel)
and a crash mid-send leaves a leased row that is picked up again.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from services.notify.domain import (
    AlertKind,
    Kind,
    alert_severity_for_delay,
    escalate,
    notice_key,
    sms_worthy,
)
from services.notify.store import NotifyUnitOfWork
from shared.events import (
    Envelope,
    OrderCancelled,
    OrderPlaced,
    OrderRoutingFailed,
    Severity,
    ShipmentDelayed,
    ShipmentDispatched,
    SupplierConfirmed,
)

log = logging.getLogger(__name__)


# -- customer notices -----------------------------------------------------------------------


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
        queued |= await uow.queue(
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
        for row in await uow.pending_with_key(key):
            parts = list(row.details.get("parts", []))
            if part not in parts:
                await uow.set_details(row.id, {**row.details, "parts": [*parts, part]})
    return queued


async def on_order_placed(envelope: Envelope, data: OrderPlaced, uow: NotifyUnitOfWork) -> None:
    await uow.record_order(
        {
            "order_id": data.order_id,
            "external_id": data.external_id,
            "channel": data.channel,
            "currency": data.currency,
            "placed_at": data.placed_at,
            "lines": [
                {"line_id": line.line_id, "sku": line.sku, "quantity": line.quantity}
                for line in data.lines
            ],
        }
    )


async def on_supplier_confirmed(
    envelope: Envelope, data: SupplierConfirmed, uow: NotifyUnitOfWork
) -> None:
    await uow.record_share(
        data.order_id, data.supplier_id, [line.line_id for line in data.lines], data.ship_by
    )


async def on_shipment_delayed(
    envelope: Envelope, data: ShipmentDelayed, uow: NotifyUnitOfWork
) -> None:
    store = uow
    line_ids = await store.share_lines(data.order_id, data.supplier_id) or []
    expected = data.expected_by.isoformat() if data.expected_by else None
    part = {"supplier_id": data.supplier_id, "line_ids": line_ids, "expected_by": expected}
    await queue_notice(
        store, data.order_id, Kind.SHIPMENT_DELAYED, data.reason.value, part, digest=True
    )
    severity = alert_severity_for_delay(data.severity)
    if severity is not None:
        what = {
            "no_tracking_by_deadline": "has not shipped by its deadline",
            "carrier_exception": "hit a carrier exception",
            "supplier_backorder": "is on backorder with no other supplier",
            "at_risk": "is at risk of missing its deadline",
        }[data.reason.value]
        await raise_alert(
            store,
            dedupe_key=f"delay:{data.order_id}:{data.supplier_id}:{data.reason}:{severity}",
            kind=AlertKind.SHIPMENT_DELAYED,
            severity=severity,
            order_id=data.order_id,
            title=f"Order {data.order_id} {what}",
            lines=[
                f"Order: {data.order_id}",
                f"Supplier: {data.supplier_id}",
                f"Reason: {data.reason.value} ({data.severity.value})",
                f"Expected by: {expected or 'unknown'}",
                "The customer has been sent a delay notice. Chase the supplier, or cancel "
                "and refund if it cannot ship.",
            ],
        )


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


async def on_order_routing_failed(
    envelope: Envelope, data: OrderRoutingFailed, uow: NotifyUnitOfWork
) -> None:
    store = uow
    part = {"line_ids": data.line_ids, "routing_reason": data.reason.value}
    await queue_notice(store, data.order_id, Kind.ORDER_ROUTING_FAILED, "", part)
    await raise_alert(
        store,
        dedupe_key=f"routing:{data.order_id}:{data.reason}:{','.join(sorted(data.line_ids))}",
        kind=AlertKind.ROUTING_FAILED,
        severity=Severity.URGENT,
        order_id=data.order_id,
        title=f"Order {data.order_id} could not be routed ({data.reason.value})",
        lines=[
            f"Order: {data.order_id}",
            f"Lines: {', '.join(data.line_ids)}",
            f"Reason: {data.reason.value}",
            "The customer has been told and promised a refund for these lines. Add stock "
            "or an offer for the SKUs, or confirm the refund.",
        ],
    )


# -- ops alerts ------------------------------------------------------------------------------


async def raise_alert(
    uow: NotifyUnitOfWork,
    *,
    dedupe_key: str,
    kind: AlertKind,
    severity: Severity,
    title: str,
    lines: list[str],
    order_id: str | None = None,
) -> str | None:
    """Record an alert and queue it on every ops channel; None if it was raised before."""
    now = datetime.now(UTC)
    alert_id = str(uuid.uuid4())
    fresh = await uow.insert_alert(
        {
            "id": alert_id,
            "dedupe_key": dedupe_key[:200],
            "kind": kind.value,
            "severity": severity.value,
            "order_id": order_id,
            "title": title,
            "details": {"lines": lines},
            "raised_at": now,
            "due_at": now + uow.policy.targets.for_severity(severity),
            "escalations": 0,
        }
    )
    if not fresh:
        return None
    await _queue_alert(uow, alert_id, kind.value, severity, order_id, escalations=0)
    return alert_id


async def _queue_alert(
    uow: NotifyUnitOfWork,
    alert_id: str,
    kind: str,
    severity: Severity,
    order_id: str | None,
    *,
    escalations: int,
) -> None:
    for channel_kind, name in uow.policy.ops_channels:
        await uow.queue(
            dedupe_key=f"alert:{alert_id}:{escalations}",
            channel=channel_kind,
            target=name,
            recipient_kind="ops",
            order_id=order_id,
            kind=kind,
            reason=severity.value,
            template="ops_alert",
            details={"escalations": escalations},
            not_before=datetime.now(UTC),
            alert_id=alert_id,
            severity=severity.value,
        )


async def escalate_overdue(uow: NotifyUnitOfWork, now: datetime | None = None) -> int:
    """Re-fire every unacknowledged alert whose response target passed, one tier up."""
    now = now or datetime.now(UTC)
    async with uow:
        overdue = await uow.overdue_alerts(now)
        for row in overdue:
            severity = escalate(Severity(row.severity))
            level = row.escalations + 1
            due = now + uow.policy.targets.for_severity(severity)
            await uow.escalate_alert(row.id, severity.value, level, due)
            await _queue_alert(uow, row.id, row.kind, severity, row.order_id, escalations=level)
            log.warning(
                "alert unacknowledged past its target, escalated",
                extra={"alert_id": row.id, "severity": severity.value, "escalations": level},
            )
        await uow.commit()
    return len(overdue)


async def acknowledge(uow: NotifyUnitOfWork, alert_id: str, by: str) -> tuple[Any, bool]:
    """Acknowledge an alert (idempotent); returns the alert and whether this call acked it."""
    async with uow:
        row = await uow.alert(alert_id, lock=True)
        if row is None:
            return None, False
        acked = await uow.ack_alert(alert_id, by, datetime.now(UTC))
        await uow.commit()
    async with uow:
        return await uow.alert(alert_id), acked


async def record_dlq_depths(uow: NotifyUnitOfWork, depths: dict[str, int]) -> list[str]:
    """Compare DLQ depths with the last reading; raise an alert for each queue that grew."""
    raised: list[str] = []
    async with uow:
        before = await uow.watch_values()
        for topic, depth in sorted(depths.items()):
            previous = before.get(topic, 0)
            if depth > previous:
                alert_id = await raise_alert(
                    uow,
                    dedupe_key=f"dlq:{topic}:{depth}",
                    kind=AlertKind.DLQ_GROWTH,
                    severity=Severity.URGENT,
                    title=f"{depth - previous} new dead letter(s) in {topic}",
                    lines=[
                        f"Queue: {topic} now holds {depth} message(s) (was {previous}).",
                        "Events there were not processed. Inspect them with "
                        f"`python -m shared.dlq list --topic {topic.removesuffix('.dlq')}`, "
                        "fix the cause, then replay with `python -m shared.dlq replay`.",
                    ],
                )
                if alert_id:
                    raised.append(alert_id)
            if depth != previous or topic not in before:
                await uow.set_watch_value(topic, depth)
        await uow.commit()
    return raised


async def record_breakers(uow: NotifyUnitOfWork, states: dict[str, bool]) -> list[str]:
    """Raise an alert each time a supplier's circuit breaker goes from closed to open."""
    raised: list[str] = []
    async with uow:
        before = await uow.watch_values()  # the watch state table also keeps breaker states
        for supplier_id, is_open in sorted(states.items()):
            key = f"breaker:{supplier_id}"
            episode = before.get(key, 0)
            was_open = episode % 2 == 1
            if is_open and not was_open:
                episode += 1
                alert_id = await raise_alert(
                    uow,
                    dedupe_key=f"{key}:{episode}",
                    kind=AlertKind.SUPPLIER_BREAKER_OPEN,
                    severity=Severity.URGENT,
                    title=f"Supplier {supplier_id} is failing: its circuit breaker opened",
                    lines=[
                        f"Supplier: {supplier_id}",
                        "Most recent calls to its API failed; new orders fail over to other "
                        "suppliers until it recovers. Check the supplier's status and "
                        "`GET /v1/suppliers/{id}/scorecard`.",
                    ],
                )
                if alert_id:
                    raised.append(alert_id)
                await uow.set_watch_value(key, episode)
            elif not is_open and was_open:
                await uow.set_watch_value(key, episode + 1)
        await uow.commit()
    return raised
