"""Notify unit of work: the notification log, alerts, facts and outbox, in one transaction."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notify.domain import Policy
from services.notify.handoff import HandOff
from services.notify.repository import (
    Alerts,
    ComplaintWatches,
    DlqDepths,
    Notifications,
    OrderFacts,
    SupplierWatches,
    WaitingWatches,
)
from services.notify.tables import metadata
from shared import faults
from shared.uow import CommitHook, UnitOfWork

__all__ = ["NotifyUnitOfWork", "metadata"]


class NotifyUnitOfWork(UnitOfWork):
    """The notify service's transaction; a commit that queued sends wakes the sender, and
    hands it the sends it claimed while queueing them (see `handoff`)."""

    notifications: Notifications
    alerts: Alerts
    orders: OrderFacts
    dlq: DlqDepths
    suppliers: SupplierWatches
    waiting: WaitingWatches
    complaints: ComplaintWatches

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: CommitHook | None = None,
        notify_others: Callable[[], bool] = lambda: True,
        *,
        policy: Policy | None = None,
        wake_sender: Callable[[], None] | None = None,
        hand_off: HandOff | None = None,
    ) -> None:
        super().__init__(sessions, on_commit=on_commit, notify_others=notify_others)
        self.policy = policy or Policy()
        self._wake_sender = wake_sender
        self._hand_off = hand_off
        self._queued = False

    async def __aenter__(self) -> NotifyUnitOfWork:
        await super().__aenter__()
        self._queued = False
        dialect = self.dialect
        hand_off = self._hand_off
        if hand_off is not None and hand_off.enabled:
            self.notifications = Notifications(
                self.session, dialect, self._mark_queued, hand_off.room, hand_off.lease
            )
        else:
            self.notifications = Notifications(self.session, dialect, self._mark_queued)
        self.alerts = Alerts(self.session, dialect)
        self.orders = OrderFacts(self.session, dialect)
        self.dlq = DlqDepths(self.session, dialect)
        self.suppliers = SupplierWatches(self.session, dialect)
        self.waiting = WaitingWatches(self.session, dialect)
        self.complaints = ComplaintWatches(self.session, dialect)
        return self

    def _mark_queued(self) -> None:
        self._queued = True

    def defer_writes(self) -> None:
        """Order facts, supplier shares and cleared waiting watches are kept and written at
        the commit, one statement per table (or before their repository next reads them):
        a consumed chunk's events write each of those tables once."""
        self.orders.defer_writes()
        self.waiting.defer_writes()

    async def commit(self) -> None:
        await self.orders.write_kept()
        await self.waiting.write_kept()
        await super().commit()
        claimed = list(self.notifications.claimed.values())
        self.notifications.claimed.clear()
        if claimed and self._hand_off is not None:
            faults.crash_point("notify.before_handoff")  # claimed and committed, not handed
            self._hand_off.give(claimed)
        if self._queued and self._wake_sender is not None:
            self._wake_sender()
        self._queued = False

    async def rollback(self) -> None:
        self.notifications.claimed.clear()  # rolled back with the rows: nothing to hand over
        self._queued = False
        await super().rollback()
