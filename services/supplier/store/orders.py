"""Routing requests, supplier orders and allocations, work queues, webhook deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, or_, select, update

from services.supplier.domain import Line
from services.supplier.store.base import (
    FAILED_STATES,
    UNDECIDED_STATES,
    NewSupplierOrder,
    UnitOfWorkBase,
)
from services.supplier.tables import (
    allocation,
    callback_delivery,
    order_cancellation,
    routing_request,
    supplier_order,
)


@dataclass(frozen=True, slots=True)
class _Allocation:
    line_id: str
    sku: str
    supplier_sku: str
    quantity: int
    unit_cost: Decimal
    currency: str


_SO_WITH_LINES = (
    select(
        supplier_order,
        allocation.c.line_id.label("a_line_id"),
        allocation.c.sku.label("a_sku"),
        allocation.c.supplier_sku.label("a_supplier_sku"),
        allocation.c.quantity.label("a_quantity"),
        allocation.c.unit_cost.label("a_unit_cost"),
        allocation.c.currency.label("a_currency"),
    )
    .outerjoin(allocation, allocation.c.supplier_order_id == supplier_order.c.id)
    .where(supplier_order.c.id == bindparam("so_id"))
    .order_by(allocation.c.id)
)


_MARK_RECEIVED = (
    update(supplier_order)
    .where(supplier_order.c.id == bindparam("so_id"), supplier_order.c.state == "sending")
    .values(
        state="received",
        supplier_order_ref=bindparam("ref"),
        sent_at=bindparam("sent"),
        lease_until=None,
        next_check_at=bindparam("check_at"),
    )
)


class OrderRepository(UnitOfWorkBase):
    # -- routing requests -----------------------------------------------------------------
    async def add_request(self, values: dict[str, Any]) -> bool:
        result = await self._run(
            self._insert()(routing_request).values(**values).on_conflict_do_nothing()
        )
        return getattr(result, "rowcount", 0) == 1

    async def request(self, order_id: str, *, for_update: bool = False) -> Any:
        query = select(routing_request).where(routing_request.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        return (await self._run(query)).first()

    @staticmethod
    def lines_of(request: Any) -> list[Line]:
        return [
            Line(x["line_id"], x["sku"], int(x["quantity"]), Decimal(x["unit_price"]))
            for x in request.lines
        ]

    async def remember_cancellation(self, order_id: str, reason: str) -> None:
        now = datetime.now(UTC)
        await self._run(
            self._insert()(order_cancellation)
            .values(order_id=order_id, reason=reason[:500], cancelled_at=now)
            .on_conflict_do_nothing()
        )
        await self._run(
            update(routing_request)
            .where(routing_request.c.order_id == order_id, routing_request.c.cancelled_at.is_(None))
            .values(cancelled_at=now)
        )

    async def was_cancelled(self, order_id: str) -> bool:
        found = await self._scalar(
            select(order_cancellation.c.order_id).where(order_cancellation.c.order_id == order_id)
        )
        return found is not None

    async def received_orders(self) -> list[str]:
        rows = await self._run(
            select(routing_request.c.order_id).order_by(routing_request.c.received_at)
        )
        return [r.order_id for r in rows]

    # -- supplier orders ------------------------------------------------------------------
    async def add_supplier_orders(
        self,
        orders: list[dict[str, Any]],
        allocations: list[dict[str, Any]],
        sends: list[NewSupplierOrder],
    ) -> None:
        """New supplier orders, leased to this process and handed to its dispatcher at commit."""
        if not orders:
            return
        now = datetime.now(UTC)
        await self._run(
            supplier_order.insert(),
            [
                {**o, "state": "sending", "attempts": 1, "lease_until": now + self.lease}
                for o in orders
            ],
        )
        await self._run(allocation.insert(), allocations)
        self.new_orders += sends

    async def drop_supplier_orders(self, ids: list[str]) -> None:
        """Undo `add_supplier_orders` within this transaction (their stock was not had)."""
        if not ids:
            return
        await self._run(delete(allocation).where(allocation.c.supplier_order_id.in_(ids)))
        await self._run(delete(supplier_order).where(supplier_order.c.id.in_(ids)))
        self.new_orders = [o for o in self.new_orders if o.id not in ids]

    async def supplier_order(self, so_id: str, *, for_update: bool = False) -> Any:
        """The supplier order (locked with `for_update`), its allocations read in the same
        statement and kept for `allocations_of`."""
        query = _SO_WITH_LINES.with_for_update(of=supplier_order) if for_update else _SO_WITH_LINES
        rows = list(await self._run(query, {"so_id": so_id}))
        if not rows:
            return None
        self._lines[so_id] = [
            _Allocation(
                r.a_line_id, r.a_sku, r.a_supplier_sku, r.a_quantity, r.a_unit_cost, r.a_currency
            )
            for r in rows
            if r.a_line_id is not None
        ]
        return rows[0]

    async def by_tracking(self, tracking_number: str) -> Any:
        query = (
            select(supplier_order)
            .where(supplier_order.c.tracking_number == tracking_number)
            .with_for_update()
        )
        return (await self._run(query)).first()

    async def set_state(self, so_id: str, **values: Any) -> None:
        await self._run(update(supplier_order).where(supplier_order.c.id == so_id).values(**values))
        if values.get("state") in ("to_send", "cancel_pending"):
            self.work_queued = True

    async def mark_received(self, sent: list[tuple[str, str]]) -> None:
        """(supplier order id, supplier_order_ref) placed at the supplier, in one batch.

        Only orders still `sending` change: a callback or a cancel may have got there
        first. On PostgreSQL a row a callback holds locked is skipped rather than waited
        for (that callback is deciding it), so one slow callback cannot hold up the batch
        and every callback behind it.
        """
        if self.dialect == "postgresql" and sent:
            free = {
                r.id
                for r in await self._run(
                    select(supplier_order.c.id)
                    .where(
                        supplier_order.c.id.in_([so_id for so_id, _ in sent]),
                        supplier_order.c.state == "sending",
                    )
                    .with_for_update(skip_locked=True)
                )
            }
            sent = [(so_id, ref) for so_id, ref in sent if so_id in free]
        if not sent:
            return
        now = datetime.now(UTC)
        await self._run(
            _MARK_RECEIVED,
            [
                {"so_id": so_id, "ref": ref, "sent": now, "check_at": now + self.check_after}
                for so_id, ref in sent
            ],
        )

    async def orders_of(self, order_id: str) -> list[Any]:
        rows = await self._run(
            select(supplier_order)
            .where(supplier_order.c.order_id == order_id)
            .order_by(supplier_order.c.created_at)
        )
        return list(rows)

    async def allocations_of(self, so_id: str) -> list[Any]:
        if so_id in self._lines:
            return list(self._lines[so_id])
        return list(
            await self._run(select(allocation).where(allocation.c.supplier_order_id == so_id))
        )

    async def allocations_for_order(self, order_id: str) -> list[Any]:
        rows = await self._run(
            select(
                allocation,
                supplier_order.c.state,
                supplier_order.c.supplier_id,
                supplier_order.c.supplier_order_ref,
            )
            .join(supplier_order, supplier_order.c.id == allocation.c.supplier_order_id)
            .where(allocation.c.order_id == order_id)
            .order_by(allocation.c.id)
        )
        return list(rows)

    async def failed_suppliers_by_line(self, order_id: str) -> dict[str, frozenset[str]]:
        rows = await self._run(
            select(allocation.c.line_id, supplier_order.c.supplier_id)
            .join(supplier_order, supplier_order.c.id == allocation.c.supplier_order_id)
            .where(
                allocation.c.order_id == order_id,
                supplier_order.c.state.in_(
                    (*FAILED_STATES, "backordered", "cancel_pending", "cancelled")
                ),
            )
        )
        out: dict[str, set[str]] = {}
        for line_id, supplier_id in rows:
            out.setdefault(line_id, set()).add(supplier_id)
        return {k: frozenset(v) for k, v in out.items()}

    async def claim_work(self, states: tuple[str, ...], lease: timedelta, limit: int) -> list[Any]:
        """Take due work (rows in `states`, or whose lease expired) for this dispatcher."""
        now = datetime.now(UTC)
        query = (
            select(supplier_order)
            .where(
                or_(
                    supplier_order.c.state.in_(states)
                    & (
                        supplier_order.c.lease_until.is_(None)
                        | (supplier_order.c.lease_until < now)
                    ),
                    (supplier_order.c.state.in_(("sending", "cancelling")))
                    & (supplier_order.c.lease_until < now),
                )
            )
            .order_by(supplier_order.c.created_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(await self._run(query))
        for row in rows:
            busy = "cancelling" if row.state in ("cancel_pending", "cancelling") else "sending"
            await self._run(
                update(supplier_order)
                .where(supplier_order.c.id == row.id)
                .values(state=busy, lease_until=now + lease, attempts=supplier_order.c.attempts + 1)
            )
        return rows

    async def due_checks(self, limit: int) -> list[Any]:
        """Take undecided supplier orders whose check is due, and push their next check back."""
        now = datetime.now(UTC)
        query = (
            select(supplier_order)
            .where(
                supplier_order.c.state.in_(UNDECIDED_STATES),
                supplier_order.c.next_check_at.is_not(None),
                supplier_order.c.next_check_at <= now,
            )
            .order_by(supplier_order.c.next_check_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(await self._run(query))
        if rows:
            await self._run(
                update(supplier_order)
                .where(supplier_order.c.id.in_([r.id for r in rows]))
                .values(next_check_at=now + self.check_after)
            )
        return rows

    async def sla_due(self, now: datetime, limit: int = 500) -> list[Any]:
        query = (
            select(supplier_order)
            .where(supplier_order.c.state == "accepted", supplier_order.c.major_sent.is_(False))
            .order_by(supplier_order.c.ship_by)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return list(await self._run(query))

    # -- webhooks -------------------------------------------------------------------------
    async def first_delivery(self, source: str, delivery_id: str) -> bool:
        stmt = (
            self._insert()(callback_delivery)
            .values(source=source, delivery_id=delivery_id, received_at=datetime.now(UTC))
            .on_conflict_do_nothing()
        )
        result = await self._run(stmt)
        return getattr(result, "rowcount", 0) == 1
