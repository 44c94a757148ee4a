"""Supplier service tables and unit of work."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Integer, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import new_metadata
from shared.uow import UnitOfWork

metadata = new_metadata()

order_request = Table(
    "order_request",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("line_count", Integer, nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


class OrderRequests:
    """Orders the supplier service has been asked to fulfil."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        order_id: str,
        event_id: str,
        currency: str,
        line_count: int,
        placed_at: datetime,
        received_at: datetime,
    ) -> None:
        await self.session.execute(
            insert(order_request).values(
                order_id=order_id,
                event_id=event_id,
                currency=currency,
                line_count=line_count,
                placed_at=placed_at,
                received_at=received_at,
            )
        )

    async def all(self) -> list[str]:
        rows = await self.session.execute(
            select(order_request.c.order_id).order_by(order_request.c.received_at)
        )
        return [r.order_id for r in rows]


class SupplierUnitOfWork(UnitOfWork):
    requests: OrderRequests

    async def __aenter__(self) -> SupplierUnitOfWork:
        await super().__aenter__()
        self.requests = OrderRequests(self.session)
        return self
