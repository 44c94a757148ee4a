"""Complaint clocks for ops: a response alert due at the tier's target, and a resolution alert.

`complaint-filed` opens an ops alert at once whose response target is the complaint's
`respond_by` (24 h / 4 h / 1 h by tier): unanswered by then, it escalates like every alert
(`alerts.escalate_overdue`: one tier up, re-sent, then again at that tier's target; a major
complaint starts at the top and re-fires fastest). `complaint-responded` (or resolved)
acknowledges it, which stops the escalation. A scan beside the escalation loop raises one
resolution alert for a complaint still unresolved at `resolve_by`; `complaint-resolved`
acknowledges that one. Alerts name the order, the complaint and the tier, never the
summary (it may hold the customer's words and stays in the order service).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from services.notify.domain import (
    Alert,
    AlertKind,
    ComplaintWatch,
    complaint_resolution_key,
    complaint_response_key,
)
from services.notify.handlers.alerts import raise_alert
from services.notify.store import NotifyUnitOfWork
from shared.events import (
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    Envelope,
    Severity,
)

log = logging.getLogger(__name__)

_RESPOND = "POST /v1/complaints/{id}/respond on the order service"
_RESOLVE = "POST /v1/complaints/{id}/resolve on the order service"


def _facts(watch: ComplaintWatch) -> list[str]:
    def at(value: datetime | None) -> str:
        return value.isoformat() if value else "unknown"

    return [
        f"Order: {watch.order_id}",
        f"Complaint: {watch.complaint_id}",
        f"Tier: {watch.tier.value if watch.tier else 'unknown'}",
        f"Filed at: {at(watch.filed_at)}",
        f"Respond by: {at(watch.respond_by)}",
        f"Resolve by: {at(watch.resolve_by)}",
    ]


async def on_complaint_filed(
    envelope: Envelope, data: ComplaintFiled, uow: NotifyUnitOfWork
) -> None:
    watch = await uow.complaints.lock(data.complaint_id)
    tier = Severity(data.tier.value)
    watch.file(data.order_id, tier, data.filed_at, data.respond_by, data.resolve_by)
    await uow.complaints.save(watch)
    if not watch.awaiting_response:
        return  # answered (or resolved) before its filing was consumed here
    await raise_alert(
        uow,
        dedupe_key=complaint_response_key(data.complaint_id),
        kind=AlertKind.COMPLAINT_RESPONSE,
        severity=tier,
        order_id=data.order_id,
        title=(
            f"New {tier.value} complaint {data.complaint_id} on order {data.order_id}: "
            f"respond by {data.respond_by:%Y-%m-%d %H:%M} UTC"
        ),
        lines=[
            *_facts(watch),
            f"Read it and answer the customer ({_RESPOND}); this alert escalates until then.",
        ],
        due_at=data.respond_by,
    )


async def on_complaint_responded(
    envelope: Envelope, data: ComplaintResponded, uow: NotifyUnitOfWork
) -> None:
    """The response target is met: its alert is acknowledged by whoever responded."""
    watch = await uow.complaints.lock(data.complaint_id)
    watch.respond(data.responded_at)
    await uow.complaints.save(watch)
    await uow.alerts.acknowledge_key(
        complaint_response_key(data.complaint_id), data.by, data.responded_at
    )


async def on_complaint_resolved(
    envelope: Envelope, data: ComplaintResolved, uow: NotifyUnitOfWork
) -> None:
    """Resolved: nothing about the complaint escalates any more."""
    watch = await uow.complaints.lock(data.complaint_id)
    watch.resolve(data.resolved_at)
    await uow.complaints.save(watch)
    for key in (complaint_response_key, complaint_resolution_key):
        await uow.alerts.acknowledge_key(key(data.complaint_id), data.by, data.resolved_at)


async def resolution_missed(uow: NotifyUnitOfWork, now: datetime | None = None) -> list[Alert]:
    """Raise one alert per complaint unresolved past its resolution target."""
    now = now or datetime.now(UTC)
    raised: list[Alert] = []
    async with uow:
        for watch in await uow.complaints.unresolved_past(now):
            if not watch.resolution_missed(now):
                continue
            tier = watch.tier or Severity.NORMAL
            alert = await raise_alert(
                uow,
                dedupe_key=complaint_resolution_key(watch.complaint_id),
                kind=AlertKind.COMPLAINT_UNRESOLVED,
                severity=tier,
                order_id=watch.order_id,
                title=(
                    f"{tier.value.capitalize()} complaint {watch.complaint_id} on order "
                    f"{watch.order_id} missed its resolution target"
                ),
                lines=[
                    *_facts(watch),
                    f"Responded: {'yes' if watch.responded_at else 'no'}",
                    f"Resolve it ({_RESOLVE}), or agree the next step with the customer.",
                ],
            )
            watch.resolution_alerted_at = now
            await uow.complaints.save(watch)
            if alert is not None:
                raised.append(alert)
        await uow.commit()
    return raised


async def complaint_loop(uows: Callable[[], NotifyUnitOfWork], interval_s: float) -> None:
    while True:
        try:
            raised = await resolution_missed(uows())
        except Exception:
            log.warning("could not scan complaints", exc_info=True)
        else:
            if raised:
                log.info("alerted ops about unresolved complaints", extra={"count": len(raised)})
        await asyncio.sleep(interval_s)
