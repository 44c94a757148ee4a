"""Fact rows of the after-sales events: returns and their steps, refunds, complaints.

Each row is keyed so that a replayed event adds nothing: a return request by its return
id, a refund by its refund id (a refund re-announced under a new event id still counts
once), a filing by its complaint id, every later step by its event id. A step carries
what its KPIs need (a complaint's response carries its tier and filing time), so the
figures come out the same whatever order the events arrive in.
"""

from __future__ import annotations

from services.metrics import tables as t
from services.metrics.rows import Rows, micros, utc
from shared.consumer import PermanentError
from shared.events import (
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    Envelope,
    RefundIssued,
    ReturnAuthorized,
    ReturnReceived,
    ReturnRejected,
    ReturnRequested,
)

MAX_ID = 64


def key(value: str | None, field: str, limit: int = MAX_ID) -> str | None:
    """An id as stored (at most `limit` characters); a longer one is a malformed event,
    refused rather than cut (two cut ids could collide)."""
    if value is not None and len(value) > limit:
        raise PermanentError(f"{field} is longer than {limit} characters")
    return value


def _key(value: str, field: str, limit: int = MAX_ID) -> str:
    checked = key(value, field, limit)
    assert checked is not None
    return checked


def return_requested(envelope: Envelope, data: ReturnRequested, rows: Rows) -> None:
    return_id = _key(data.return_id, "return_id")
    for line in data.lines:
        rows[t.return_line].append(
            {
                "return_id": return_id,
                "line_id": _key(line.line_id, "lines[].line_id", 80),
                "quantity": line.quantity,
                "supplier_id": key(line.supplier_id, f"lines[{line.line_id}].supplier_id"),
            }
        )
    rows[t.return_request].append(
        {
            "return_id": return_id,
            "event_id": envelope.id,
            "order_id": data.order_id,
            "reason": data.reason.value,
            "units": sum(line.quantity for line in data.lines),
            "requested_at": utc(data.requested_at),
        }
    )


def return_authorized(envelope: Envelope, data: ReturnAuthorized, rows: Rows) -> None:
    rows[t.return_step].append(
        {
            "event_id": envelope.id,
            "return_id": _key(data.return_id, "return_id"),
            "step": "authorized",
            "supplier_id": key(data.supplier_id, "supplier_id"),
            "at": utc(data.authorized_at),
        }
    )


def return_rejected(envelope: Envelope, data: ReturnRejected, rows: Rows) -> None:
    rows[t.return_step].append(
        {
            "event_id": envelope.id,
            "return_id": _key(data.return_id, "return_id"),
            "step": "rejected",
            "supplier_id": None,
            "at": utc(data.rejected_at),
        }
    )


def return_received(envelope: Envelope, data: ReturnReceived, rows: Rows) -> None:
    rows[t.return_step].append(
        {
            "event_id": envelope.id,
            "return_id": _key(data.return_id, "return_id"),
            "step": "received",
            "supplier_id": None,
            "at": utc(data.received_at),
        }
    )


def refund_supplier(data: RefundIssued) -> str | None:
    """Whom a refund is attributed to: the supplier charged back, else the one supplier
    its lines came from (None: no single supplier)."""
    if data.supplier_id is not None:
        return data.supplier_id
    suppliers = {line.supplier_id for line in data.lines if line.supplier_id is not None}
    return suppliers.pop() if len(suppliers) == 1 else None


def refund_issued(envelope: Envelope, data: RefundIssued, rows: Rows) -> None:
    rows[t.refund].append(
        {
            "refund_id": _key(data.refund_id, "refund_id"),
            "event_id": envelope.id,
            "order_id": data.order_id,
            "return_id": key(data.return_id, "return_id"),
            "currency": data.currency,
            "amount_micros": micros(data.amount, "amount"),
            "reason": data.reason.value,
            "cost_bearer": data.cost_bearer.value,
            "supplier_id": key(refund_supplier(data), "supplier_id"),
            "channel": _key(data.channel, "channel"),
            "issued_at": utc(data.issued_at),
        }
    )


def complaint_filed(envelope: Envelope, data: ComplaintFiled, rows: Rows) -> None:
    rows[t.complaint].append(
        {
            "complaint_id": _key(data.complaint_id, "complaint_id"),
            "event_id": envelope.id,
            "order_id": data.order_id,
            "tier": data.tier.value,
            "filed_at": utc(data.filed_at),
            "respond_by": utc(data.respond_by),
            "resolve_by": utc(data.resolve_by),
        }
    )


def complaint_responded(envelope: Envelope, data: ComplaintResponded, rows: Rows) -> None:
    rows[t.complaint_step].append(
        {
            "event_id": envelope.id,
            "complaint_id": _key(data.complaint_id, "complaint_id"),
            "order_id": data.order_id,
            "step": "responded",
            "tier": data.tier.value,
            "filed_at": utc(data.filed_at),
            "at": utc(data.responded_at),
        }
    )


def complaint_resolved(envelope: Envelope, data: ComplaintResolved, rows: Rows) -> None:
    rows[t.complaint_step].append(
        {
            "event_id": envelope.id,
            "complaint_id": _key(data.complaint_id, "complaint_id"),
            "order_id": data.order_id,
            "step": "resolved",
            "tier": data.tier.value,
            "filed_at": utc(data.filed_at),
            "at": utc(data.resolved_at),
        }
    )
