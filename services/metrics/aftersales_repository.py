"""After-sales facts of a KPI window, loaded as `aftersales.AfterSalesFacts` (never commits)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, func, select, type_coerce, union
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics import aftersales as a
from services.metrics import tables as t
from services.metrics.domain import UNKNOWN
from services.metrics.repository import aware


def _at(moment: datetime | str | None) -> datetime:
    value = aware(moment)
    assert value is not None
    return value


class AfterSalesRepository:
    """Shipments, returns, refunds and complaints whose KPI day falls in a window."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    def _moment(self, column: Any, name: str) -> Any:
        """As `FactRepository._moment`: SQLite's raw text, parsed by `aware`."""
        if self.dialect == "sqlite":
            column = type_coerce(column, String)
        return column.label(name)

    async def load(self, start: datetime, end: datetime) -> a.AfterSalesFacts:
        facts = a.AfterSalesFacts()

        def within(column: Any) -> Any:
            return and_(column >= start, column < end)

        await self._shipments(facts, within)
        await self._returns(facts, within)
        await self._refunds(facts, within)
        await self._complaints(facts, within)
        return facts

    async def _shipments(self, facts: a.AfterSalesFacts, within: Any) -> None:
        d, s = t.dispatch, t.sale
        first = (
            select(d.c.order_id, d.c.supplier_id, func.min(d.c.dispatched_at).label("at"))
            .group_by(d.c.order_id, d.c.supplier_id)
            .having(within(func.min(d.c.dispatched_at)))
            .subquery()
        )
        for r in await self.session.execute(
            select(
                first.c.order_id, first.c.supplier_id, self._moment(first.c.at, "at"), s.c.channel
            ).join(s, s.c.order_id == first.c.order_id, isouter=True)
        ):
            facts.shipments.append(
                a.Shipment(r.order_id, r.supplier_id, r.channel or UNKNOWN, _at(r.at))
            )

    async def _returns(self, facts: a.AfterSalesFacts, within: Any) -> None:
        rr, s = t.return_request, t.sale
        ids = select(rr.c.return_id).where(within(rr.c.requested_at))
        suppliers: dict[str, set[str]] = defaultdict(set)
        steps: dict[str, set[str]] = defaultdict(set)
        for line in await self.session.execute(
            select(t.return_line.c.return_id, t.return_line.c.supplier_id).where(
                t.return_line.c.return_id.in_(ids), t.return_line.c.supplier_id.is_not(None)
            )
        ):
            suppliers[line.return_id].add(line.supplier_id)
        rs = t.return_step
        for st in await self.session.execute(
            select(rs.c.return_id, rs.c.step, rs.c.supplier_id).where(rs.c.return_id.in_(ids))
        ):
            steps[st.return_id].add(st.step)
            if st.supplier_id is not None:
                suppliers[st.return_id].add(st.supplier_id)
        for refunded in await self.session.execute(
            select(t.refund.c.return_id).where(t.refund.c.return_id.in_(ids)).distinct()
        ):
            steps[refunded.return_id].add("refunded")
        for r in await self.session.execute(
            select(
                rr.c.return_id,
                rr.c.order_id,
                rr.c.reason,
                rr.c.units,
                self._moment(rr.c.requested_at, "requested_at"),
                s.c.channel,
            )
            .join(s, s.c.order_id == rr.c.order_id, isouter=True)
            .where(within(rr.c.requested_at))
        ):
            facts.returns.append(
                a.Return(
                    r.return_id,
                    r.order_id,
                    r.channel or UNKNOWN,
                    r.reason,
                    r.units,
                    _at(r.requested_at),
                    frozenset(suppliers.get(r.return_id, ())),
                    frozenset(steps.get(r.return_id, ())),
                )
            )

    async def _refunds(self, facts: a.AfterSalesFacts, within: Any) -> None:
        f = t.refund
        for r in await self.session.execute(
            select(
                f.c.refund_id,
                f.c.order_id,
                f.c.channel,
                f.c.currency,
                f.c.amount_micros,
                f.c.reason,
                f.c.cost_bearer,
                f.c.supplier_id,
                self._moment(f.c.issued_at, "issued_at"),
            ).where(within(f.c.issued_at))
        ):
            facts.refunds.append(
                a.Refund(
                    r.refund_id,
                    r.order_id,
                    r.channel,
                    r.currency,
                    r.amount_micros,
                    r.reason,
                    r.cost_bearer,
                    r.supplier_id,
                    _at(r.issued_at),
                )
            )

    async def _complaints(self, facts: a.AfterSalesFacts, within: Any) -> None:
        c, cs, s = t.complaint, t.complaint_step, t.sale
        ids = union(
            select(c.c.complaint_id).where(within(c.c.filed_at)),
            select(cs.c.complaint_id).where(within(cs.c.filed_at)),
        ).subquery()
        filed: dict[str, Any] = {}
        for r in await self.session.execute(
            select(
                c.c.complaint_id,
                c.c.order_id,
                c.c.tier,
                self._moment(c.c.filed_at, "filed_at"),
                self._moment(c.c.respond_by, "respond_by"),
                self._moment(c.c.resolve_by, "resolve_by"),
                s.c.channel,
            )
            .join(s, s.c.order_id == c.c.order_id, isouter=True)
            .where(c.c.complaint_id.in_(select(ids.c.complaint_id)))
        ):
            filed[r.complaint_id] = r
        seen: dict[str, Any] = {}
        done: dict[tuple[str, str], datetime] = {}
        for r in await self.session.execute(
            select(
                cs.c.complaint_id,
                cs.c.order_id,
                cs.c.step,
                cs.c.tier,
                self._moment(cs.c.filed_at, "filed_at"),
                self._moment(cs.c.at, "at"),
                s.c.channel,
            )
            .join(s, s.c.order_id == cs.c.order_id, isouter=True)
            .where(cs.c.complaint_id.in_(select(ids.c.complaint_id)))
        ):
            seen.setdefault(r.complaint_id, r)
            at = _at(r.at)
            step = (r.complaint_id, r.step)
            if step not in done or at < done[step]:  # the earliest, whatever the arrival order
                done[step] = at
        for complaint_id in sorted(filed.keys() | seen.keys()):
            row = filed.get(complaint_id)
            base = row if row is not None else seen[complaint_id]
            facts.complaints.append(
                a.Complaint(
                    complaint_id,
                    base.order_id,
                    base.channel or UNKNOWN,
                    base.tier,
                    _at(base.filed_at),
                    aware(row.respond_by) if row is not None else None,
                    aware(row.resolve_by) if row is not None else None,
                    done.get((complaint_id, "responded")),
                    done.get((complaint_id, "resolved")),
                )
            )
