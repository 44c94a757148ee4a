"""Webhook-delivery repository: marketplace delivery ids already processed, and tombstones of
orders cancelled before they arrived."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.tables import marketplace_tombstone, webhook_delivery
from shared.db import dialect_insert


class WebhookDeliveries:
    """One row per (source, shop, delivery id) whose effect has committed: each shop numbers
    its deliveries alone (shop "" is the default, env-secret shop)."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def first_time(
        self, source: str, shop_id: str | None, delivery_id: str, topic: str
    ) -> bool:
        """Record a delivery id; False when it was seen before (a redelivery)."""
        stmt = (
            dialect_insert(self.dialect)(webhook_delivery)
            .values(
                source=source,
                shop_id=shop_id or "",
                delivery_id=delivery_id,
                topic=topic,
                received_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        return getattr(result, "rowcount", 0) == 1

    async def seen(self, source: str, shop_id: str | None, delivery_id: str) -> bool:
        found = await self.session.scalar(
            select(webhook_delivery.c.delivery_id).where(
                webhook_delivery.c.source == source,
                webhook_delivery.c.shop_id == (shop_id or ""),
                webhook_delivery.c.delivery_id == delivery_id,
            )
        )
        return found is not None

    async def bury(self, channel: str, shop_id: str | None, external_id: str, reason: str) -> None:
        """Remember that the shop cancelled its order `external_id` before we received it."""
        await self.session.execute(
            dialect_insert(self.dialect)(marketplace_tombstone)
            .values(
                channel=channel,
                shop_id=shop_id or "",
                external_id=external_id,
                reason=reason[:200],
                cancelled_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing()
        )

    async def buried(self, channel: str, shop_id: str | None, external_id: str) -> str | None:
        """The reason the shop's order `external_id` was cancelled before it arrived, or None."""
        reason = await self.session.scalar(
            select(marketplace_tombstone.c.reason).where(
                marketplace_tombstone.c.channel == channel,
                marketplace_tombstone.c.shop_id == (shop_id or ""),
                marketplace_tombstone.c.external_id == external_id,
            )
        )
        return None if reason is None else str(reason)
