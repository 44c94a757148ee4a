"""Order service unit of work: orders, timeline, idempotency keys, outbox: one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.order.domain import Order
from services.order.intake import IntakePolicy
from services.order.pii import PiiCipher
from services.order.repository import IdempotencyKeys, OrderRepository, Timeline, WebhookDeliveries
from services.order.repository.one_trip import INTAKE, intake_parameters
from services.order.repository.rows import line_values, order_values
from services.order.tables import metadata
from shared.uow import CommitHook, UnitOfWork

__all__ = ["OrderUnitOfWork", "metadata"]


class OrderUnitOfWork(UnitOfWork):
    """The order service's transaction; its repositories are bound when it is entered."""

    orders: OrderRepository
    timeline: Timeline
    idempotency: IdempotencyKeys
    webhooks: WebhookDeliveries

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: CommitHook | None = None,
        notify_others: Callable[[], bool] = lambda: True,
        *,
        cipher: PiiCipher,
        intake: IntakePolicy | None = None,
        wake_writeback: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(sessions, on_commit, notify_others)
        self._wake_writeback = wake_writeback
        self._writeback_queued = False
        self.cipher = cipher
        self.intake = intake or IntakePolicy()
        """Which holds a new order starts with (address rules, high-value limits)."""

    async def __aenter__(self) -> OrderUnitOfWork:
        await super().__aenter__()
        session, dialect = self.session, self.dialect
        self.orders = OrderRepository(session, dialect, cipher=self.cipher)
        self.timeline = Timeline(session, dialect)
        self.idempotency = IdempotencyKeys(session, dialect)
        self.webhooks = WebhookDeliveries(session, dialect)
        self._writeback_queued = False
        return self

    def writeback_queued(self) -> None:
        """A marketplace write-back is due now: wake the worker once this commits."""
        self._writeback_queued = True

    async def create_in_one_trip(
        self, claims: Sequence[tuple[str, str, str, dict[str, Any]]], orders: Sequence[Order]
    ) -> bool:
        """PostgreSQL: new `orders` with their `(scope, key, request_hash, result)` idempotency
        claims, lines, the timeline entries added so far and the events emitted so far, in one
        statement (`one_trip.INTAKE`), where they took one each. False if a key was taken
        already: what was written must not be committed then (the caller rolls back)."""
        await self.orders.flush()
        outbox = self.take_outbox()
        found = (
            await self.session.execute(
                INTAKE,
                intake_parameters(
                    claims,
                    [order_values(o, self.cipher) for o in orders],
                    [v for o in orders for v in line_values(o)],
                    self.timeline.take(),
                    outbox.arrays(),
                    datetime.now(UTC),
                ),
            )
        ).one()
        outbox.written(found.ids)
        return int(found.claimed) == len(claims)

    async def commit(self) -> None:
        await self.orders.flush(timeline=self.timeline.take())
        await super().commit()
        if self._writeback_queued:
            self._writeback_queued = False
            self._wake_writeback()
