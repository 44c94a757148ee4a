"""After-sales request and response models: what a merchant sends and what it gets back."""

from __future__ import annotations

import unicodedata
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.order.aftersales.domain import Complaint, ItemQty, Refund, Return
from services.order.schemas import Text200, rfc3339
from shared.events import ComplaintTier, ReturnReason
from shared.money import format_amount


def _text(value: str) -> str:
    """Any script and line breaks are welcome; other control characters are not."""
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in value):
        raise ValueError("must not contain control characters")
    return value


_strict = ConfigDict(extra="forbid", str_strip_whitespace=True)
LineId = Annotated[str, Field(min_length=1, max_length=80)]
Quantity = Annotated[int, Field(ge=1, le=10_000, strict=True)]
Note = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_text)]
LongText = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_text)]


class ItemIn(BaseModel):
    model_config = _strict
    line_id: LineId
    quantity: Quantity

    def to_item(self) -> ItemQty:
        return ItemQty(self.line_id, self.quantity)


class ReturnIn(BaseModel):
    model_config = _strict
    lines: Annotated[list[ItemIn], Field(min_length=1, max_length=500)]
    reason: ReturnReason
    note: Note | None = None


class NoteIn(BaseModel):
    model_config = _strict
    note: Note | None = None


class RefundIn(BaseModel):
    model_config = _strict
    amount: Annotated[
        Decimal | None,
        Field(
            gt=0,
            le=Decimal("1000000000"),
            allow_inf_nan=False,
            description="in the order's currency; optional with lines (or a return): "
            "then their value",
        ),
    ] = None
    lines: Annotated[list[ItemIn], Field(max_length=500)] = Field(default_factory=list)
    reason: ReturnReason | None = Field(None, description="optional with return_id: its reason")
    return_id: Annotated[str | None, Field(min_length=1, max_length=64)] = Field(
        None, description="the return this refund closes (authorized or received)"
    )


class ComplaintIn(BaseModel):
    model_config = _strict
    order_id: Annotated[str, Field(min_length=1, max_length=64)]
    tier: ComplaintTier
    summary: LongText


class RespondIn(BaseModel):
    model_config = _strict
    by: Text200
    message: LongText


class ResolveIn(BaseModel):
    model_config = _strict
    by: Text200
    resolution: LongText


def render_return(ret: Return) -> dict[str, Any]:
    return {
        "id": ret.id,
        "order_id": ret.order_id,
        "status": ret.status.value,
        "reason": ret.reason.value,
        "supplier_id": ret.supplier_id,
        "lines": [
            {"line_id": ln.line_id, "sku": ln.sku, "quantity": ln.quantity} for ln in ret.lines
        ],
        "note": ret.note,
        "rma": ret.rma,
        "return_address": ret.return_address,
        "refund_id": ret.refund_id,
        "created_at": rfc3339(ret.created_at),
        "updated_at": rfc3339(ret.updated_at),
        "authorized_at": rfc3339(ret.authorized_at),
        "rejected_at": rfc3339(ret.rejected_at),
        "received_at": rfc3339(ret.received_at),
        "refunded_at": rfc3339(ret.refunded_at),
    }


def render_refund(r: Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "order_id": r.order_id,
        "return_id": r.return_id,
        "amount": format_amount(r.amount, r.currency),
        "currency": r.currency,
        "reason": r.reason.value,
        "lines": [ln.model_dump() for ln in r.lines],
        "cost_bearer": r.cost_bearer.value,
        "supplier_id": r.supplier_id,
        "channel": r.channel,
        "issued_at": rfc3339(r.issued_at),
    }


def render_complaint(c: Complaint) -> dict[str, Any]:
    return {
        "id": c.id,
        "order_id": c.order_id,
        "tier": c.tier.value,
        "summary": c.summary,
        "status": c.status,
        "filed_at": rfc3339(c.filed_at),
        "respond_by": rfc3339(c.respond_by),
        "resolve_by": rfc3339(c.resolve_by),
        "responded_at": rfc3339(c.responded_at),
        "responded_by": c.responded_by,
        "resolved_at": rfc3339(c.resolved_at),
        "resolved_by": c.resolved_by,
        "resolution": c.resolution,
        "responses": [{"by": r.by, "message": r.message, "at": rfc3339(r.at)} for r in c.responses],
    }


class ReturnOut(BaseModel):
    """Response schema (documentation); the body is built by `render_return`."""

    model_config = ConfigDict(extra="allow")
    id: str
    order_id: str
    status: str
    reason: str
    lines: list[dict[str, Any]]
    rma: str | None
    created_at: str


class ReturnPage(BaseModel):
    items: list[ReturnOut]
    next_cursor: str | None


class RefundOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    order_id: str
    amount: str
    currency: str
    reason: str
    cost_bearer: str


class RefundList(BaseModel):
    items: list[RefundOut]
    next_cursor: str | None


class ComplaintOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    order_id: str
    tier: str
    summary: str
    status: str
    respond_by: str
    resolve_by: str
    responded_at: str | None
    resolved_at: str | None


class ComplaintPage(BaseModel):
    items: list[ComplaintOut]
    next_cursor: str | None
