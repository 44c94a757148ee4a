"""Routing requests (orders kept from `order-placed`), cancellations, callback deliveries."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CTE, Row, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.supplier.domain import Line, RoutingRequest
from services.supplier.store.base import Sql, rowcount
from services.supplier.tables import callback_delivery, order_cancellation, routing_request
from shared.db import aware

# Read for every batch of events: built once, the ids one expanding parameter.
_CANCELLED_OF = select(order_cancellation.c.order_id).where(
    order_cancellation.c.order_id.in_(bindparam("p_order_ids", expanding=True))
)


class RoutingRequests:
    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    async def add(self, request: RoutingRequest) -> bool:
        """Keep the order; False if it was already kept (a redelivered `order-placed`)."""
        stmt = self._sql.insert()(routing_request).values(**_row(request)).on_conflict_do_nothing()
        return rowcount(await self._sql.run(stmt)) == 1

    async def add_many(self, requests: list[RoutingRequest]) -> set[str]:
        """Keep orders (distinct ids) in one statement; the ids not kept before."""
        if not requests:
            return set()
        stmt = self._sql.prebuilt("routing_requests.add_many", _add_many)
        return {r.order_id for r in await self._sql.run(stmt, [_row(r) for r in requests])}

    async def get(self, order_id: str, *, for_update: bool = False) -> RoutingRequest | None:
        query = select(routing_request).where(routing_request.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._sql.run(query)).first()
        return _request(row) if row is not None else None

    async def lock_order(self, order_id: str) -> None:
        """Serialise the placing and the cancelling of one order (PostgreSQL: a transaction
        advisory lock; SQLite's transactions already take the one write lock at BEGIN).

        Without it an `order-placed` and an `order-cancelled` consumed at the same moment
        would each miss the other's uncommitted row, and the order would be routed."""
        if self._sql.dialect == "postgresql":
            await self._sql.run(
                select(func.pg_advisory_xact_lock(func.hashtext("order:" + order_id)))
            )

    async def lock_orders(self, order_ids: list[str]) -> None:
        """`lock_order` for many orders in one statement, in id order (two transactions
        locking overlapping sets cannot deadlock on them)."""
        if self._sql.dialect == "postgresql" and order_ids:
            await self._sql.run(
                select(
                    *(
                        func.pg_advisory_xact_lock(func.hashtext("order:" + order_id))
                        for order_id in sorted(set(order_ids))
                    )
                )
            )

    async def cancelled_of(self, order_ids: list[str]) -> set[str]:
        """Which of these orders were cancelled (`was_cancelled` for many)."""
        if not order_ids:
            return set()
        rows = await self._sql.run(_CANCELLED_OF, {"p_order_ids": sorted(set(order_ids))})
        return {r.order_id for r in rows}

    async def remember_cancellation(self, order_id: str, reason: str) -> None:
        """Remembered even before the order arrives: an order-placed consumed later is never
        routed (topics are per event type, so their order is not guaranteed)."""
        now = datetime.now(UTC)
        await self._sql.run(
            self._sql.insert()(order_cancellation)
            .values(order_id=order_id, reason=reason[:500], cancelled_at=now)
            .on_conflict_do_nothing()
        )
        await self._sql.run(
            update(routing_request)
            .where(routing_request.c.order_id == order_id, routing_request.c.cancelled_at.is_(None))
            .values(cancelled_at=now)
        )

    async def was_cancelled(self, order_id: str) -> bool:
        found = await self._sql.scalar(
            select(order_cancellation.c.order_id).where(order_cancellation.c.order_id == order_id)
        )
        return found is not None

    async def received_orders(self) -> list[str]:
        rows = await self._sql.run(
            select(routing_request.c.order_id).order_by(routing_request.c.received_at)
        )
        return [r.order_id for r in rows]


def _add_many(insert: Any) -> Any:
    """Executed with a list of rows: SQLAlchemy writes them as multi-row `VALUES` from one
    compiled statement (a `.values([...])` of the rows is compiled again for every call)."""
    return insert(routing_request).on_conflict_do_nothing().returning(routing_request.c.order_id)


def _first_many(insert: Any) -> Any:
    """Executed with a list of rows, as `_add_many`: the keys inserted come back."""
    c = callback_delivery.c
    return insert(callback_delivery).on_conflict_do_nothing().returning(c.source, c.delivery_id)


def _row(request: RoutingRequest) -> dict[str, Any]:
    lines = [
        {
            "line_id": ln.line_id,
            "sku": ln.sku,
            "quantity": ln.quantity,
            "unit_price": str(ln.unit_price),
            **({} if ln.external_ids is None else {"external_ids": list(ln.external_ids)}),
        }
        for ln in request.lines
    ]
    return {
        "order_id": request.order_id,
        "currency": request.currency,
        "lines": lines,
        "ship_country": request.ship_country,
        "ship_postal_code": request.ship_postal_code,
        "placed_at": request.placed_at,
        "received_at": request.received_at,
    }


def _request(row: Row[Any]) -> RoutingRequest:
    placed, received = aware(row.placed_at), aware(row.received_at)
    assert placed is not None and received is not None
    return RoutingRequest(
        order_id=row.order_id,
        currency=row.currency,
        lines=[
            Line(
                x["line_id"],
                x["sku"],
                int(x["quantity"]),
                Decimal(x["unit_price"]),
                None if x.get("external_ids") is None else tuple(x["external_ids"]),
            )
            for x in row.lines
        ],
        ship_country=row.ship_country,
        ship_postal_code=row.ship_postal_code,
        placed_at=placed,
        received_at=received,
        cancelled_at=aware(row.cancelled_at),
    )


TRACKING = "tracking"
"""The delivery-id source of carriers' tracking updates (suppliers': `supplier:<id>`)."""


def first_delivery() -> CTE:
    """`CallbackDeliveries.first` as a PostgreSQL data-modifying CTE named `fresh`, for a
    statement that goes on only for a new id: it returns the id if new, no row for a
    redelivery (parameters: `first_delivery_params`)."""
    return (
        pg_insert(callback_delivery)
        .values(
            source=bindparam("d_source"),
            delivery_id=bindparam("d_id"),
            received_at=bindparam("d_now"),
        )
        .on_conflict_do_nothing()
        .returning(callback_delivery.c.delivery_id)
        .cte("fresh")
    )


def first_delivery_params(source: str, delivery_id: str) -> dict[str, Any]:
    """`first_delivery`'s parameters."""
    return {"d_source": source, "d_id": delivery_id, "d_now": datetime.now(UTC)}


class CallbackDeliveries:
    """Delivery ids of signed callbacks already handled: a redelivery changes nothing."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    async def first_many(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """`first` for many (source, delivery id) keys in one statement: the keys that were
        new (a key given twice is recorded once)."""
        if not keys:
            return set()
        stmt = self._sql.prebuilt("delivery.first_many", _first_many)
        now = datetime.now(UTC)
        rows = [{"source": s, "delivery_id": d, "received_at": now} for s, d in dict.fromkeys(keys)]
        return {(r.source, r.delivery_id) for r in await self._sql.run(stmt, rows)}

    async def first(self, source: str, delivery_id: str) -> bool:
        stmt = self._sql.prebuilt(
            "delivery.first", lambda insert: insert(callback_delivery).on_conflict_do_nothing()
        )
        row = {"source": source, "delivery_id": delivery_id, "received_at": datetime.now(UTC)}
        return rowcount(await self._sql.run(stmt, row)) == 1
