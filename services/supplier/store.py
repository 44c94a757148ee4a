"""Supplier service unit of work and repositories (suppliers, offers, supplier orders)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.supplier.domain import Line, Offer, SupplierInfo, Track
from services.supplier.tables import (
    allocation,
    callback_delivery,
    metadata,
    offer,
    order_cancellation,
    routing_request,
    supplier,
    supplier_order,
)
from shared.uow import UnitOfWork

__all__ = ["SupplierUnitOfWork", "metadata"]

ACTIVE_STATES = ("to_send", "sending", "received", "accepted", "backordered", "dispatched")
FAILED_STATES = ("rejected", "out_of_stock", "unavailable")


def aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class Credentials:
    api_key: str
    webhook_secret: str


class Sealer:
    """Encrypts supplier credentials at rest (AES-GCM); the key comes from settings."""

    def __init__(self, seal: Callable[[str], str], unseal: Callable[[str], str]) -> None:
        self.seal, self.unseal = seal, unseal

    def dump(self, creds: Credentials) -> str:
        return self.seal(
            json.dumps({"api_key": creds.api_key, "webhook_secret": creds.webhook_secret})
        )

    def load(self, token: str | None) -> Credentials:
        data = json.loads(self.unseal(token)) if token else {}
        return Credentials(data.get("api_key", ""), data.get("webhook_secret", ""))


class SupplierUnitOfWork(UnitOfWork):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: Callable[[], None] | None = None,
        notify_others: Callable[[], bool] = lambda: True,
        *,
        sealer: Sealer,
        wake_dispatcher: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(sessions, on_commit, notify_others)
        self.sealer = sealer
        self._wake_dispatcher = wake_dispatcher
        self.work_queued = False

    async def __aenter__(self) -> SupplierUnitOfWork:
        await super().__aenter__()
        self.work_queued = False
        return self

    async def commit(self) -> None:
        await super().commit()
        if self.work_queued:
            self._wake_dispatcher()

    def _insert(self) -> Any:
        return (postgresql if self.dialect == "postgresql" else sqlite).insert

    # -- suppliers and offers -------------------------------------------------------------
    async def supplier_row(self, supplier_id: str) -> Any:
        return (
            await self.session.execute(select(supplier).where(supplier.c.id == supplier_id))
        ).first()

    async def supplier_infos(self, ids: set[str]) -> dict[str, SupplierInfo]:
        rows = await self.session.execute(select(supplier).where(supplier.c.id.in_(ids)))
        return {
            r.id: SupplierInfo(
                r.id,
                r.active,
                r.priority,
                Track(r.decided, r.accepted, r.shipped, r.shipped_on_time),
            )
            for r in rows
        }

    async def offers_for(self, skus: set[str], currency: str) -> list[Offer]:
        rows = await self.session.execute(
            select(offer).where(offer.c.sku.in_(skus), offer.c.currency == currency)
        )
        return [
            Offer(
                r.supplier_id,
                r.sku,
                r.supplier_sku,
                Decimal(r.unit_cost),
                r.currency,
                r.stock,
                r.lead_time_hours,
            )
            for r in rows
        ]

    async def adjust_stock(self, supplier_id: str, sku: str, delta: int) -> None:
        await self.session.execute(
            update(offer)
            .where(offer.c.supplier_id == supplier_id, offer.c.sku == sku)
            .values(
                stock=func.max(offer.c.stock + delta, 0)
                if self.dialect == "sqlite"
                else func.greatest(offer.c.stock + delta, 0)
            )
        )

    async def set_stock(self, supplier_id: str, skus: list[str], stock: int) -> None:
        await self.session.execute(
            update(offer)
            .where(offer.c.supplier_id == supplier_id, offer.c.sku.in_(skus))
            .values(stock=stock)
        )

    async def count(self, supplier_id: str, **increments: int) -> None:
        await self.session.execute(
            update(supplier)
            .where(supplier.c.id == supplier_id)
            .values({supplier.c[k]: supplier.c[k] + v for k, v in increments.items()})
        )

    # -- routing requests -----------------------------------------------------------------
    async def add_request(self, values: dict[str, Any]) -> bool:
        result = await self.session.execute(
            self._insert()(routing_request).values(**values).on_conflict_do_nothing()
        )
        return getattr(result, "rowcount", 0) == 1

    async def request(self, order_id: str, *, for_update: bool = False) -> Any:
        query = select(routing_request).where(routing_request.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).first()

    @staticmethod
    def lines_of(request: Any) -> list[Line]:
        return [
            Line(x["line_id"], x["sku"], int(x["quantity"]), Decimal(x["unit_price"]))
            for x in request.lines
        ]

    async def remember_cancellation(self, order_id: str, reason: str) -> None:
        now = datetime.now(UTC)
        await self.session.execute(
            self._insert()(order_cancellation)
            .values(order_id=order_id, reason=reason[:500], cancelled_at=now)
            .on_conflict_do_nothing()
        )
        await self.session.execute(
            update(routing_request)
            .where(routing_request.c.order_id == order_id, routing_request.c.cancelled_at.is_(None))
            .values(cancelled_at=now)
        )

    async def was_cancelled(self, order_id: str) -> bool:
        found = await self.session.scalar(
            select(order_cancellation.c.order_id).where(order_cancellation.c.order_id == order_id)
        )
        return found is not None

    async def received_orders(self) -> list[str]:
        rows = await self.session.execute(
            select(routing_request.c.order_id).order_by(routing_request.c.received_at)
        )
        return [r.order_id for r in rows]

    # -- supplier orders ------------------------------------------------------------------
    async def add_supplier_order(
        self, values: dict[str, Any], allocations: list[dict[str, Any]]
    ) -> None:
        await self.session.execute(supplier_order.insert().values(**values))
        await self.session.execute(allocation.insert(), allocations)
        self.work_queued = True

    async def supplier_order(self, so_id: str, *, for_update: bool = False) -> Any:
        query = select(supplier_order).where(supplier_order.c.id == so_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).first()

    async def by_tracking(self, tracking_number: str) -> Any:
        query = (
            select(supplier_order)
            .where(supplier_order.c.tracking_number == tracking_number)
            .with_for_update()
        )
        return (await self.session.execute(query)).first()

    async def set_state(self, so_id: str, **values: Any) -> None:
        await self.session.execute(
            update(supplier_order).where(supplier_order.c.id == so_id).values(**values)
        )
        if values.get("state") in ("to_send", "cancel_pending"):
            self.work_queued = True

    async def orders_of(self, order_id: str) -> list[Any]:
        rows = await self.session.execute(
            select(supplier_order)
            .where(supplier_order.c.order_id == order_id)
            .order_by(supplier_order.c.created_at)
        )
        return list(rows)

    async def allocations_of(self, so_id: str) -> list[Any]:
        return list(
            await self.session.execute(
                select(allocation).where(allocation.c.supplier_order_id == so_id)
            )
        )

    async def allocations_for_order(self, order_id: str) -> list[Any]:
        rows = await self.session.execute(
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
        rows = await self.session.execute(
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
        rows = list(await self.session.execute(query))
        for row in rows:
            busy = "cancelling" if row.state in ("cancel_pending", "cancelling") else "sending"
            await self.session.execute(
                update(supplier_order)
                .where(supplier_order.c.id == row.id)
                .values(state=busy, lease_until=now + lease, attempts=supplier_order.c.attempts + 1)
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
        return list(await self.session.execute(query))

    # -- webhooks -------------------------------------------------------------------------
    async def first_delivery(self, source: str, delivery_id: str) -> bool:
        stmt = (
            self._insert()(callback_delivery)
            .values(source=source, delivery_id=delivery_id, received_at=datetime.now(UTC))
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        return getattr(result, "rowcount", 0) == 1
