"""Shop repositories on the order unit of work's session: shops, order origins, write-backs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.pii import PiiCipher
from services.order.shops.domain import Credentials, Platform, Shop, WritebackKind, WritebackTask
from services.order.shops.tables import marketplace_shop, marketplace_writeback, order_shop
from shared.db import aware, dialect_insert

_SECRETS = ("webhook_secret", "access_token", "consumer_key", "consumer_secret")


class ShopRepository:
    """Shops with every secret sealed by the PII cipher (bound to its column name)."""

    def __init__(self, session: AsyncSession, dialect: str, cipher: PiiCipher) -> None:
        self.session = session
        self.dialect = dialect
        self.cipher = cipher

    def _sealed(self, creds: Credentials) -> dict[str, str | None]:
        return {
            name: self.cipher.encrypt(getattr(creds, name), f"shop.{name}") for name in _SECRETS
        }

    def _shop(self, row: Any) -> Shop:
        opened = {
            name: self.cipher.decrypt(getattr(row, name), f"shop.{name}") for name in _SECRETS
        }
        return Shop(
            id=row.id,
            platform=row.platform,
            domain=row.domain,
            api_base_url=row.api_base_url,
            credentials=Credentials(
                webhook_secret=opened["webhook_secret"] or "",
                access_token=opened["access_token"],
                consumer_key=opened["consumer_key"],
                consumer_secret=opened["consumer_secret"],
            ),
            notify_customer=row.notify_customer,
            active=row.active,
            created_at=aware(row.created_at),
        )

    async def reseal_stale(self) -> int:
        """Seal again, under the active key, every shop whose secrets are sealed under an
        older one (the PII key rotation); returns how many shops changed."""
        changed = 0
        for row in (await self.session.execute(select(marketplace_shop))).all():
            if not any(self.cipher.needs_rotation(getattr(row, name)) for name in _SECRETS):
                continue
            await self.session.execute(
                update(marketplace_shop)
                .where(marketplace_shop.c.id == row.id)
                .values(**self._sealed(self._shop(row).credentials))
            )
            changed += 1
        return changed

    async def add(self, shop: Shop) -> bool:
        """Insert; False when the platform already has a shop with this domain."""
        now = datetime.now(UTC)
        stmt = (
            dialect_insert(self.dialect)(marketplace_shop)
            .values(
                id=shop.id,
                platform=shop.platform,
                domain=shop.domain,
                api_base_url=shop.api_base_url,
                notify_customer=shop.notify_customer,
                active=shop.active,
                created_at=shop.created_at or now,
                updated_at=now,
                **self._sealed(shop.credentials),
            )
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        return getattr(result, "rowcount", 0) == 1

    async def save(self, shop: Shop) -> None:
        await self.session.execute(
            update(marketplace_shop)
            .where(marketplace_shop.c.id == shop.id)
            .values(
                api_base_url=shop.api_base_url,
                notify_customer=shop.notify_customer,
                active=shop.active,
                updated_at=datetime.now(UTC),
                **self._sealed(shop.credentials),
            )
        )

    async def get(self, shop_id: str) -> Shop | None:
        row = (
            await self.session.execute(
                select(marketplace_shop).where(marketplace_shop.c.id == shop_id)
            )
        ).first()
        return self._shop(row) if row else None

    async def by_domain(self, platform: Platform, domain: str) -> Shop | None:
        row = (
            await self.session.execute(
                select(marketplace_shop).where(
                    marketplace_shop.c.platform == platform, marketplace_shop.c.domain == domain
                )
            )
        ).first()
        return self._shop(row) if row else None

    async def all(self) -> list[Shop]:
        rows = await self.session.execute(
            select(marketplace_shop).order_by(marketplace_shop.c.created_at, marketplace_shop.c.id)
        )
        return [self._shop(r) for r in rows]


class OrderShops:
    """Which registered shop each marketplace order came from."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def remember(self, order_id: str, shop_id: str, external_id: str) -> None:
        await self.session.execute(
            dialect_insert(self.dialect)(order_shop)
            .values(
                order_id=order_id,
                shop_id=shop_id,
                external_id=external_id,
                created_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing()
        )

    async def of(self, order_id: str) -> tuple[str, str] | None:
        """(shop id, the shop's order id) of an order, None if it came from no shop."""
        row = (
            await self.session.execute(
                select(order_shop.c.shop_id, order_shop.c.external_id).where(
                    order_shop.c.order_id == order_id
                )
            )
        ).first()
        return (row.shop_id, row.external_id) if row else None


class WritebackQueue:
    """The durable queue of write-backs; `key` makes each one happen once."""

    def __init__(
        self, session: AsyncSession, dialect: str, queued: Callable[[], None] = lambda: None
    ) -> None:
        self.session = session
        self.dialect = dialect
        self._queued = queued
        """Called when a task becomes due now (the worker is woken once this commits)."""

    async def put(
        self,
        key: str,
        kind: WritebackKind,
        order_id: str,
        shop_id: str,
        external_id: str,
        payload: dict[str, Any],
    ) -> bool:
        now = datetime.now(UTC)
        stmt = (
            dialect_insert(self.dialect)(marketplace_writeback)
            .values(
                key=key,
                kind=kind,
                order_id=order_id,
                shop_id=shop_id,
                external_id=external_id,
                payload=payload,
                status="pending",
                attempts=0,
                next_at=now,
                created_at=now,
            )
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        if getattr(result, "rowcount", 0) != 1:
            return False
        self._queued()
        return True

    async def next_due(self) -> datetime | None:
        """When the earliest pending task is due (None: the queue is empty)."""
        t = marketplace_writeback.c
        at = await self.session.scalar(select(func.min(t.next_at)).where(t.status == "pending"))
        return aware(at)

    async def due(self, limit: int) -> list[int]:
        now = datetime.now(UTC)
        rows = await self.session.execute(
            select(marketplace_writeback.c.id)
            .where(
                marketplace_writeback.c.status == "pending",
                marketplace_writeback.c.next_at <= now,
            )
            .order_by(marketplace_writeback.c.next_at, marketplace_writeback.c.id)
            .limit(limit)
        )
        return [r.id for r in rows]

    async def claim(self, task_id: int, lease: timedelta) -> WritebackTask | None:
        """Lease a due task to this worker (compare-and-set, so two replicas never share one)."""
        now = datetime.now(UTC)
        t = marketplace_writeback.c
        result = await self.session.execute(
            update(marketplace_writeback)
            .where(t.id == task_id, t.status == "pending", t.next_at <= now)
            .values(next_at=now + lease, attempts=t.attempts + 1)
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
        row = (
            await self.session.execute(select(marketplace_writeback).where(t.id == task_id))
        ).one()
        return WritebackTask(
            row.id,
            row.key,
            row.kind,
            row.order_id,
            row.shop_id,
            row.external_id,
            row.payload,
            row.attempts,
        )

    async def finish(self, task_id: int) -> None:
        await self._set(task_id, status="done", done_at=datetime.now(UTC), last_error=None)

    async def retry_at(self, task_id: int, at: datetime, error: str) -> None:
        await self._set(task_id, next_at=at, last_error=error[:500])

    async def give_up(self, task_id: int, error: str) -> None:
        await self._set(task_id, status="failed", last_error=error[:500])

    async def _set(self, task_id: int, **values: Any) -> None:
        await self.session.execute(
            update(marketplace_writeback)
            .where(marketplace_writeback.c.id == task_id)
            .values(**values)
        )

    async def listed(self, status: str, limit: int) -> list[dict[str, Any]]:
        """Write-backs in `status`, newest first (the ops inbox reads the failed ones)."""
        t = marketplace_writeback.c
        rows = await self.session.execute(
            select(marketplace_writeback)
            .where(t.status == status)
            .order_by(t.created_at.desc(), t.id.desc())
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]

    async def status_of(self, task_id: int) -> str | None:
        t = marketplace_writeback.c
        row = (await self.session.execute(select(t.status).where(t.id == task_id))).first()
        return None if row is None else str(row.status)

    async def try_again(self, task_id: int) -> bool:
        """A failed write-back back in the queue with fresh attempts; False unless it failed."""
        t = marketplace_writeback.c
        result = await self.session.execute(
            update(marketplace_writeback)
            .where(t.id == task_id, t.status == "failed")
            .values(status="pending", attempts=0, next_at=datetime.now(UTC))
        )
        if getattr(result, "rowcount", 0) != 1:
            return False
        self._queued()
        return True

    async def of_order(self, order_id: str) -> list[dict[str, Any]]:
        rows = await self.session.execute(
            select(marketplace_writeback)
            .where(marketplace_writeback.c.order_id == order_id)
            .order_by(marketplace_writeback.c.id)
        )
        return [dict(r._mapping) for r in rows]
