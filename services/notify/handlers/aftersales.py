"""Returns and refunds become customer notices: one per return (or refund) and kind, e-mail only.

Each notice is keyed by (order, kind, return id or refund id), so a redelivered event, or
the same fact in a new envelope, finds its notice queued and sends nothing more. These are
transactional (about goods and money the customer is owed): the daily cap never applies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.notify.domain import Kind, notice_key
from services.notify.store import NotifyUnitOfWork
from shared.events import (
    Envelope,
    RefundIssued,
    ReturnAuthorized,
    ReturnLine,
    ReturnRejected,
    ReturnRequested,
)


def _items(lines: list[ReturnLine]) -> list[dict[str, Any]]:
    return [{"sku": line.sku, "quantity": line.quantity} for line in lines]


async def _queue(
    uow: NotifyUnitOfWork, order_id: str, kind: Kind, reason: str, part: dict[str, Any]
) -> bool:
    return await uow.notifications.queue(
        dedupe_key=notice_key(order_id, kind, reason),
        channel="email",
        target="customer",
        recipient_kind="customer",
        order_id=order_id,
        kind=kind.value,
        reason=reason,
        template=kind.value,
        details={"parts": [part]},
        not_before=datetime.now(UTC),
    )


async def on_return_requested(
    envelope: Envelope, data: ReturnRequested, uow: NotifyUnitOfWork
) -> None:
    """The customer hears their request arrived and that instructions follow."""
    part = {"return_reason": data.reason.value, "items": _items(data.lines)}
    await _queue(uow, data.order_id, Kind.RETURN_REQUESTED, data.return_id, part)


async def on_return_authorized(
    envelope: Envelope, data: ReturnAuthorized, uow: NotifyUnitOfWork
) -> None:
    """The return instructions: the RMA, the supplier's returns address and the lines."""
    part = {
        "return_reason": data.reason.value,
        "items": _items(data.lines),
        "rma": data.rma,
        "return_address": data.return_address,
    }
    await _queue(uow, data.order_id, Kind.RETURN_AUTHORIZED, data.return_id, part)


async def on_return_rejected(
    envelope: Envelope, data: ReturnRejected, uow: NotifyUnitOfWork
) -> None:
    await _queue(uow, data.order_id, Kind.RETURN_REJECTED, data.return_id, {"note": data.note})


async def on_refund_issued(envelope: Envelope, data: RefundIssued, uow: NotifyUnitOfWork) -> None:
    """The amount, exact and in the order's currency; the lines when the refund names them."""
    part = {
        "return_reason": data.reason.value,
        "amount": format(data.amount, "f"),
        "currency": data.currency,
        "lines": [{"line_id": ln.line_id, "quantity": ln.quantity} for ln in data.lines],
    }
    await _queue(uow, data.order_id, Kind.REFUND_ISSUED, data.refund_id, part)
