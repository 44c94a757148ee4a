"""Order tables, repository and unit of work (which also writes the outbox)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.order.domain import Order, OrderLine, Status
from shared.db import new_metadata
from shared.uow import UnitOfWork

metadata = new_metadata()

customer_order = Table(
    "customer_order",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("channel", String(32), nullable=False),
    Column("external_id", String(128), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("status", String(32), nullable=False),
    Column("delayed", Boolean, nullable=False, default=False),
    Column("shipping_country", String(2), nullable=False),
    Column("shipping_postal_code", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

order_line = Table(
    "order_line",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("order_id", String(64), ForeignKey("customer_order.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("sku", String(128), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Numeric(18, 4), nullable=False),
)


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, order: Order) -> None:
        await self.session.execute(
            insert(customer_order).values(
                id=order.id,
                channel=order.channel,
                external_id=order.external_id,
                currency=order.currency,
                status=order.status.value,
                delayed=order.delayed,
                shipping_country=order.shipping_country,
                shipping_postal_code=order.shipping_postal_code,
                created_at=order.created_at,
            )
        )
        await self.session.execute(
            insert(order_line),
            [
                {
                    "id": line.line_id,
                    "order_id": order.id,
                    "position": i,
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                }
                for i, line in enumerate(order.lines, start=1)
            ],
        )

    async def get(self, order_id: str) -> Order | None:
        row = (
            await self.session.execute(
                select(customer_order).where(customer_order.c.id == order_id)
            )
        ).first()
        if row is None:
            return None
        lines = (
            await self.session.execute(
                select(order_line)
                .where(order_line.c.order_id == order_id)
                .order_by(order_line.c.position)
            )
        ).all()
        return Order(
            id=row.id,
            channel=row.channel,
            external_id=row.external_id,
            currency=row.currency,
            shipping_country=row.shipping_country,
            shipping_postal_code=row.shipping_postal_code,
            lines=[OrderLine(ln.id, ln.sku, ln.quantity, Decimal(ln.unit_price)) for ln in lines],
            status=Status(row.status),
            delayed=row.delayed,
            created_at=row.created_at,
        )


class OrderUnitOfWork(UnitOfWork):
    orders: OrderRepository

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(sessions, on_commit)

    async def __aenter__(self) -> OrderUnitOfWork:
        await super().__aenter__()
        self.orders = OrderRepository(self.session)
        return self
