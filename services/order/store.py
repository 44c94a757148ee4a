"""Order service unit of work: orders, timeline, idempotency keys, outbox: one transaction."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.order.pii import PiiCipher
from services.order.repository import IdempotencyKeys, OrderRepository, Timeline, WebhookDeliveries
from services.order.tables import metadata
from shared.uow import UnitOfWork

__all__ = ["OrderUnitOfWork", "metadata"]


class OrderUnitOfWork(UnitOfWork):
    """The order service's transaction: orders, timeline, idempotency keys, webhook log."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: Callable[[], None] | None = None,
        notify_others: Callable[[], bool] = lambda: True,
        *,
        cipher: PiiCipher,
    ) -> None:
        super().__init__(sessions, on_commit, notify_others)
        self.cipher = cipher

    async def __aenter__(self) -> OrderUnitOfWork:
        await super().__aenter__()
        self.orders = OrderRepository(self.session, self.cipher, self.dialect)
        self.timeline = Timeline(self.session)
        self.idempotency = IdempotencyKeys(self.session, self.dialect)
        self.webhooks = WebhookDeliveries(self.session, self.dialect)
        return self
