"""After-sales repositories on the order unit of work's session: returns, refunds, complaints.

Customer and ops text (a return's note, a complaint's summary, messages and resolution) is
sealed with the order service's PII cipher, bound to its column. Nothing here commits.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.aftersales.domain import (
    Complaint,
    ComplaintResponse,
    Refund,
    Return,
    ReturnedLine,
    ReturnStatus,
)
from services.order.aftersales.tables import complaint, order_return, refund
from services.order.pii import PiiCipher
from services.order.repository.orders import decode_cursor, encode_cursor
from services.order.tables import customer_order, idempotency_key
from shared.db import aware
from shared.events import ComplaintTier, CostBearer, RefundLine, ReturnReason


def _at(value: datetime | None) -> datetime | None:
    return aware(value)


def _moment(value: datetime) -> datetime:
    return aware(value) or value


async def _page(
    session: AsyncSession,
    table: Table,
    time_column: str,
    conditions: list[ColumnElement[bool]],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """Rows newest first after `cursor`, and the next page's cursor (or None)."""
    col, ids = table.c[time_column], table.c.id
    if cursor:
        at, last_id = decode_cursor(cursor)
        conditions.append(or_(col < at, and_(col == at, ids < last_id)))
    query = select(table).order_by(col.desc(), ids.desc()).limit(limit + 1)
    if conditions:
        query = query.where(*conditions)
    rows = list((await session.execute(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return rows, (encode_cursor(_moment(getattr(last, time_column)), last.id) if last else None)


class Returns:
    """`Return` aggregates in `order_return`."""

    def __init__(self, session: AsyncSession, cipher: PiiCipher) -> None:
        self.session = session
        self.cipher = cipher

    def _values(self, ret: Return) -> dict[str, Any]:
        return {
            "order_id": ret.order_id,
            "supplier_id": ret.supplier_id,
            "reason": ret.reason.value,
            "status": ret.status.value,
            "lines": [
                {"line_id": ln.line_id, "sku": ln.sku, "quantity": ln.quantity} for ln in ret.lines
            ],
            "note": self.cipher.encrypt(ret.note, "order_return.note"),
            "rma": ret.rma,
            "return_address": ret.return_address,
            "created_at": ret.created_at,
            "updated_at": ret.updated_at,
            "authorized_at": ret.authorized_at,
            "rejected_at": ret.rejected_at,
            "received_at": ret.received_at,
            "refunded_at": ret.refunded_at,
            "refund_id": ret.refund_id,
        }

    def _load(self, row: Any) -> Return:
        return Return(
            id=row.id,
            order_id=row.order_id,
            supplier_id=row.supplier_id,
            reason=ReturnReason(row.reason),
            lines=[ReturnedLine(ln["line_id"], ln["sku"], int(ln["quantity"])) for ln in row.lines],
            status=ReturnStatus(row.status),
            created_at=_moment(row.created_at),
            updated_at=_moment(row.updated_at),
            note=self.cipher.decrypt(row.note, "order_return.note"),
            rma=row.rma,
            return_address=row.return_address,
            authorized_at=_at(row.authorized_at),
            rejected_at=_at(row.rejected_at),
            received_at=_at(row.received_at),
            refunded_at=_at(row.refunded_at),
            refund_id=row.refund_id,
        )

    async def add(self, ret: Return) -> None:
        await self.session.execute(order_return.insert(), {"id": ret.id, **self._values(ret)})

    async def save(self, ret: Return) -> None:
        await self.session.execute(
            update(order_return).where(order_return.c.id == ret.id).values(**self._values(ret))
        )

    async def get(self, return_id: str, *, for_update: bool = False) -> Return | None:
        query = select(order_return).where(order_return.c.id == return_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else self._load(row)

    async def of_order(self, order_id: str) -> list[Return]:
        rows = await self.session.execute(
            select(order_return)
            .where(order_return.c.order_id == order_id)
            .order_by(order_return.c.created_at, order_return.c.id)
        )
        return [self._load(r) for r in rows]

    async def page(
        self, status: str | None, order_id: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Return], str | None]:
        conditions: list[ColumnElement[bool]] = []
        if status:
            conditions.append(order_return.c.status == status)
        if order_id:
            conditions.append(order_return.c.order_id == order_id)
        rows, next_cursor = await _page(
            self.session, order_return, "created_at", conditions, limit, cursor
        )
        return [self._load(r) for r in rows], next_cursor


class Refunds:
    """Refunds in `refund`, and the order's running `refunded_total`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _load(row: Any) -> Refund:
        return Refund(
            id=row.id,
            order_id=row.order_id,
            return_id=row.return_id,
            amount=Decimal(row.amount),
            currency=row.currency,
            reason=ReturnReason(row.reason),
            lines=tuple(RefundLine.model_validate(ln) for ln in row.lines),
            cost_bearer=CostBearer(row.cost_bearer),
            supplier_id=row.supplier_id,
            channel=row.channel,
            issued_at=_moment(row.issued_at),
        )

    async def add(self, r: Refund) -> None:
        await self.session.execute(
            refund.insert(),
            {
                "id": r.id,
                "order_id": r.order_id,
                "return_id": r.return_id,
                "amount": r.amount,
                "currency": r.currency,
                "reason": r.reason.value,
                "lines": [ln.model_dump() for ln in r.lines],
                "cost_bearer": r.cost_bearer.value,
                "supplier_id": r.supplier_id,
                "channel": r.channel,
                "issued_at": r.issued_at,
            },
        )
        await self.session.execute(
            update(customer_order)
            .where(customer_order.c.id == r.order_id)
            .values(refunded_total=customer_order.c.refunded_total + r.amount)
        )

    async def of_order(self, order_id: str) -> list[Refund]:
        rows = await self.session.execute(
            select(refund)
            .where(refund.c.order_id == order_id)
            .order_by(refund.c.issued_at, refund.c.id)
        )
        return [self._load(r) for r in rows]

    async def earlier_key(self, scope: str, key: str) -> tuple[str, Any] | None:
        """The request hash and result an Idempotency-Key was first used with, if it was."""
        row = (
            await self.session.execute(
                select(idempotency_key.c.request_hash, idempotency_key.c.response).where(
                    idempotency_key.c.scope == scope, idempotency_key.c.key == key
                )
            )
        ).first()
        return None if row is None else (row.request_hash, row.response)


class Complaints:
    """`Complaint`s in `complaint`; summary, messages and resolution sealed."""

    def __init__(self, session: AsyncSession, cipher: PiiCipher) -> None:
        self.session = session
        self.cipher = cipher

    def _values(self, c: Complaint) -> dict[str, Any]:
        seal = self.cipher.encrypt
        return {
            "order_id": c.order_id,
            "tier": c.tier.value,
            "status": c.status,
            "summary": seal(c.summary, "complaint.summary"),
            "responses": [
                {
                    "by": r.by,
                    "at": r.at.isoformat(),
                    "message": seal(r.message, "complaint.message"),
                }
                for r in c.responses
            ],
            "filed_at": c.filed_at,
            "respond_by": c.respond_by,
            "resolve_by": c.resolve_by,
            "responded_at": c.responded_at,
            "resolved_at": c.resolved_at,
            "resolved_by": c.resolved_by,
            "resolution": seal(c.resolution, "complaint.resolution"),
        }

    def _load(self, row: Any) -> Complaint:
        open_ = self.cipher.decrypt
        return Complaint(
            id=row.id,
            order_id=row.order_id,
            tier=ComplaintTier(row.tier),
            summary=open_(row.summary, "complaint.summary") or "",
            filed_at=_moment(row.filed_at),
            respond_by=_moment(row.respond_by),
            resolve_by=_moment(row.resolve_by),
            responses=[
                ComplaintResponse(
                    r["by"],
                    open_(r["message"], "complaint.message") or "",
                    datetime.fromisoformat(r["at"]),
                )
                for r in row.responses
            ],
            resolved_at=_at(row.resolved_at),
            resolved_by=row.resolved_by,
            resolution=open_(row.resolution, "complaint.resolution"),
        )

    async def add(self, c: Complaint) -> None:
        await self.session.execute(complaint.insert(), {"id": c.id, **self._values(c)})

    async def save(self, c: Complaint) -> None:
        await self.session.execute(
            update(complaint).where(complaint.c.id == c.id).values(**self._values(c))
        )

    async def get(self, complaint_id: str, *, for_update: bool = False) -> Complaint | None:
        query = select(complaint).where(complaint.c.id == complaint_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else self._load(row)

    async def page(
        self, open_only: bool | None, order_id: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Complaint], str | None]:
        conditions: list[ColumnElement[bool]] = []
        if open_only is True:
            conditions.append(complaint.c.status != "resolved")
        elif open_only is False:
            conditions.append(complaint.c.status == "resolved")
        if order_id:
            conditions.append(complaint.c.order_id == order_id)
        rows, next_cursor = await _page(
            self.session, complaint, "filed_at", conditions, limit, cursor
        )
        return [self._load(r) for r in rows], next_cursor
