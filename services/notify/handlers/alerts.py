"""Alert rules: when ops are paged and what they read, and escalation of unacknowledged alerts.

An alert is raised once per dedupe key and queued on every ops channel in the caller's
transaction; the sender delivers it. Rules called from event handlers run in the event's
unit of work; `escalate_overdue` and `record_dlq_depths` run their own.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from services.notify.domain import Alert, AlertKind, SupplierWatch, alert_severity_for_delay
from services.notify.domain import escalate as next_tier
from services.notify.store import NotifyUnitOfWork
from shared.events import OrderRoutingFailed, Severity, ShipmentDelayed

log = logging.getLogger(__name__)

_DELAY_WHAT = {
    "no_tracking_by_deadline": "has not shipped by its deadline",
    "carrier_exception": "hit a carrier exception",
    "supplier_backorder": "is on backorder with no other supplier",
    "at_risk": "is at risk of missing its deadline",
    "not_accepted_in_time": "was not accepted by a supplier in time",
    "lost_in_transit": "may be lost in transit (no tracking movement)",
}

_DELAY_ACTION = {
    "not_accepted_in_time": "The customer has not been told. Chase the supplier for a "
    "decision, or route the line elsewhere (POST /v1/orders/{id}/lines/{line}/route).",
    "lost_in_transit": "The customer has been told. Open a trace with the carrier; if the "
    "parcel is not found, reship or refund.",
}


async def raise_alert(
    uow: NotifyUnitOfWork,
    *,
    dedupe_key: str,
    kind: AlertKind,
    severity: Severity,
    title: str,
    lines: list[str],
    order_id: str | None = None,
    due_at: datetime | None = None,
) -> Alert | None:
    """Record an alert and queue it on every ops channel; None if it was raised before.

    It escalates when unacknowledged at `due_at` (by default its severity's response target).
    """
    now = datetime.now(UTC)
    alert = Alert(
        id=str(uuid.uuid4()),
        dedupe_key=dedupe_key[:200],
        kind=kind,
        severity=severity,
        order_id=order_id,
        title=title,
        lines=lines,
        raised_at=now,
        due_at=due_at or now + uow.policy.targets.for_severity(severity),
    )
    if not await uow.alerts.add(alert):
        return None
    await _queue(uow, alert)
    return alert


async def _queue(uow: NotifyUnitOfWork, alert: Alert) -> None:
    """One send per ops channel; each escalation level is a new send."""
    for channel_kind, name in uow.policy.ops_channels:
        await uow.notifications.queue(
            dedupe_key=f"alert:{alert.id}:{alert.escalations}",
            channel=channel_kind,
            target=name,
            recipient_kind="ops",
            order_id=alert.order_id,
            kind=alert.kind.value,
            reason=alert.severity.value,
            template="ops_alert",
            details={"escalations": alert.escalations},
            not_before=datetime.now(UTC),
            alert_id=alert.id,
            severity=alert.severity.value,
        )


# -- rules ----------------------------------------------------------------------------------


async def shipment_delayed(
    uow: NotifyUnitOfWork, data: ShipmentDelayed, expected: str | None
) -> Alert | None:
    """Urgent and major delays page ops; a normal one (at risk) is the customer's only."""
    severity = alert_severity_for_delay(data.severity)
    if severity is None:
        return None
    return await raise_alert(
        uow,
        dedupe_key=f"delay:{data.order_id}:{data.supplier_id}:{data.reason}:{severity}",
        kind=AlertKind.SHIPMENT_DELAYED,
        severity=severity,
        order_id=data.order_id,
        title=f"Order {data.order_id} {_DELAY_WHAT[data.reason.value]}",
        lines=[
            f"Order: {data.order_id}",
            f"Supplier: {data.supplier_id}",
            f"Reason: {data.reason.value} ({data.severity.value})",
            f"Expected by: {expected or 'unknown'}",
            _DELAY_ACTION.get(
                data.reason.value,
                "The customer has been sent a delay notice. Chase the supplier, or cancel "
                "and refund if it cannot ship.",
            ),
        ],
    )


async def routing_failed(uow: NotifyUnitOfWork, data: OrderRoutingFailed) -> Alert | None:
    """Lines no supplier can take: ops add stock or confirm the refund."""
    return await raise_alert(
        uow,
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


async def supplier_unavailable(
    uow: NotifyUnitOfWork, watch: SupplierWatch, reason: str
) -> Alert | None:
    """Page ops once per outage (`watch.outages` numbers it): a redelivery finds it raised."""
    sid = watch.supplier_id
    because = "its circuit breaker opened" if reason in ("", "breaker_open") else reason
    since = watch.changed_at.isoformat() if watch.changed_at else "unknown"
    return await raise_alert(
        uow,
        dedupe_key=f"supplier-outage:{sid}:{watch.outages}",
        kind=AlertKind.SUPPLIER_BREAKER_OPEN,
        severity=Severity.URGENT,
        title=f"Supplier {sid} is failing: {because}",
        lines=[
            f"Supplier: {sid}",
            f"Unavailable since: {since}",
            "Most recent calls to its API failed; new orders fail over to other "
            "suppliers until it recovers. Check the supplier's status and "
            "`GET /v1/suppliers/{id}/scorecard`.",
        ],
    )


@dataclass(frozen=True)
class DlqReading:
    """A dead-letter queue read now: messages it holds, and letters ever written to it (the
    sum of its end offsets, which only grows: retention or a purge lowers `depth`)."""

    depth: int
    written: int


async def record_dlq_depths(uow: NotifyUnitOfWork, readings: dict[str, DlqReading]) -> list[Alert]:
    """Compare DLQ readings with the last; raise an alert for each queue new letters reached.

    Deduped on the letters ever written, not the depth: a queue emptied by retention that
    fills to the same depth again is new letters, and pages again."""
    raised: list[Alert] = []
    async with uow:
        before = await uow.dlq.all()
        for topic, reading in sorted(readings.items()):
            depth, previous = reading.depth, before.get(topic, (0, 0))[1]
            if reading.written > previous:
                alert = await raise_alert(
                    uow,
                    dedupe_key=f"dlq:{topic}:{reading.written}",
                    kind=AlertKind.DLQ_GROWTH,
                    severity=Severity.URGENT,
                    title=f"{reading.written - previous} new dead letter(s) in {topic}",
                    lines=[
                        f"Queue: {topic} now holds {depth} message(s); "
                        f"{reading.written - previous} arrived since the last reading.",
                        "Events there were not processed. Inspect them with "
                        f"`python -m shared.dlq list --topic {topic.removesuffix('.dlq')}`, "
                        "fix the cause, then replay with `python -m shared.dlq replay`.",
                    ],
                )
                if alert is not None:
                    raised.append(alert)
            if before.get(topic) != (depth, reading.written):
                await uow.dlq.set(topic, depth, reading.written)
        await uow.commit()
    return raised


# -- escalation -----------------------------------------------------------------------------


async def escalate_overdue(uow: NotifyUnitOfWork, now: datetime | None = None) -> int:
    """Re-fire every unacknowledged alert whose response target passed, one tier up."""
    now = now or datetime.now(UTC)
    async with uow:
        overdue = await uow.alerts.overdue(now)
        for alert in overdue:
            severity = next_tier(alert.severity)
            escalated = replace(
                alert,
                severity=severity,
                escalations=alert.escalations + 1,
                due_at=now + uow.policy.targets.for_severity(severity),
            )
            await uow.alerts.save_escalation(escalated)
            await _queue(uow, escalated)
            log.warning(
                "alert unacknowledged past its target, escalated",
                extra={
                    "alert_id": alert.id,
                    "severity": severity.value,
                    "escalations": escalated.escalations,
                },
            )
        await uow.commit()
    return len(overdue)


async def waiting_too_long(uow: NotifyUnitOfWork, after: timedelta) -> int:
    """Ops hear once per order when lines wait for a supplier longer than `after`."""
    now = datetime.now(UTC)
    raised = 0
    async with uow:
        for order_id, (line_ids, since) in (await uow.waiting.overdue(now - after)).items():
            alert = await raise_alert(
                uow,
                dedupe_key=f"waiting:{order_id}:{','.join(sorted(line_ids))}",
                kind=AlertKind.LINES_WAITING,
                severity=Severity.URGENT,
                order_id=order_id,
                title=f"Order {order_id} has lines waiting for a supplier since {since:%H:%M} UTC",
                lines=[
                    f"Order: {order_id}",
                    f"Lines: {', '.join(sorted(line_ids))}",
                    f"Waiting since: {since.isoformat()}",
                    "Every supplier that could ship them is unreachable; they are retried "
                    "by themselves. Check the suppliers, or route them by hand "
                    "(POST /v1/orders/{id}/lines/{line}/route).",
                ],
            )
            raised += alert is not None
        await uow.commit()
    return raised
