"""Webhook-delivery repository: the marketplace delivery ids already processed."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.tables import webhook_delivery
from shared.db import dialect_insert


class WebhookDeliveries:
    """One row per (source, delivery id) whose effect has committed."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def first_time(self, source: str, delivery_id: str, topic: str) -> bool:
        """Record a delivery id; False when it was seen before (a redelivery)."""
        stmt = (
            dialect_insert(self.dialect)(webhook_delivery)
            .values(
                source=source, delivery_id=delivery_id, topic=topic, received_at=datetime.now(UTC)
            )
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        return getattr(result, "rowcount", 0) == 1

    async def seen(self, source: str, delivery_id: str) -> bool:
        found = await self.session.scalar(
            select(webhook_delivery.c.delivery_id).where(
                webhook_delivery.c.source == source, webhook_delivery.c.delivery_id == delivery_id
            )
        )
        return found is not None
