"""Supplier service unit of work: one transaction, its repositories, what it hands on at commit.

    uow.suppliers         suppliers (cached entries for hot paths, counters, tallies)
    uow.offers            offers and their stock
    uow.supplier_orders   the `SupplierOrder` aggregate, its allocations, work queues
    uow.routing_requests  orders kept from `order-placed`, cancellations
    uow.deliveries        callback delivery ids (dedupe)
    uow.quality           returns and chargebacks against suppliers (after-sales)

Only the unit of work commits. At commit it appends the supplier counter increments
(last: those rows are hot), then, once committed, hands new supplier orders to this
process's dispatcher and wakes it for queued work.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.supplier.directory import Sealer, SupplierDirectory, SupplierEntry
from services.supplier.store import one_trip
from services.supplier.store.base import AfterCommit, NewSupplierOrder, Sql, StockConflict
from services.supplier.store.catalogue import OfferRepository, SupplierRepository
from services.supplier.store.orders import (
    AllocationView,
    GroupCall,
    StatusCheck,
    SupplierOrderRepository,
)
from services.supplier.store.quality import QualityRepository
from services.supplier.store.requests import TRACKING, CallbackDeliveries, RoutingRequests
from services.supplier.store.waiting import Clocks, ClockScans, Holds, WaitingLine, WaitingLines
from services.supplier.tables import metadata
from shared.uow import CommitHook, UnitOfWork

__all__ = [
    "TRACKING",
    "AllocationView",
    "GroupCall",
    "NewSupplierOrder",
    "Sealer",
    "StatusCheck",
    "StockConflict",
    "SupplierDirectory",
    "SupplierEntry",
    "SupplierUnitOfWork",
    "WaitingLine",
    "metadata",
]


class SupplierUnitOfWork(UnitOfWork):
    """One transaction over the supplier service's database, with its repositories."""

    suppliers: SupplierRepository
    offers: OfferRepository
    supplier_orders: SupplierOrderRepository
    routing_requests: RoutingRequests
    deliveries: CallbackDeliveries
    waiting: WaitingLines
    clocks: Clocks
    clock_scans: ClockScans
    holds: Holds
    quality: QualityRepository
    _sql: Sql

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: CommitHook | None = None,
        notify_others: Callable[[], bool] = lambda: True,
        *,
        directory: SupplierDirectory,
        hand_off: Callable[[list[NewSupplierOrder]], None] = lambda _: None,
        wake_dispatcher: Callable[[], None] = lambda: None,
        wake_waiting: Callable[[], None] = lambda: None,
        lease: timedelta = timedelta(seconds=60),
        check_after: timedelta = timedelta(seconds=30),
        retry_waiting_s: float = 5.0,
        retry_waiting_max_s: float = 60.0,
    ) -> None:
        super().__init__(sessions, on_commit, notify_others)
        self.retry_waiting_s = retry_waiting_s
        self.retry_waiting_max_s = retry_waiting_max_s
        self.directory = directory
        self.lease = lease
        self.check_after = check_after
        self._hand_off = hand_off
        self._wake_dispatcher = wake_dispatcher
        self._wake_waiting = wake_waiting
        self._after = AfterCommit()

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._after = AfterCommit()
        sql = self._sql = Sql(self.session, self.dialect)
        self.suppliers = SupplierRepository(sql, self.directory)
        self.offers = OfferRepository(sql)
        self.supplier_orders = SupplierOrderRepository(sql, self._after, self.emit, self.lease)
        self.routing_requests = RoutingRequests(sql)
        self.deliveries = CallbackDeliveries(sql)
        self.waiting = WaitingLines(sql, self._after)
        self.clocks = Clocks(sql)
        self.clock_scans = ClockScans(sql)
        self.holds = Holds(sql)
        self.quality = QualityRepository(sql)
        return self

    def dispatch_after_commit(self, orders: list[NewSupplierOrder]) -> None:
        """Hand these (committed as `sending` under this process's lease) to the dispatcher."""
        self._after.new_orders += orders

    def forget_after_commit(self, supplier_id: str) -> None:
        """Drop the supplier's cached entry once this transaction commits (not before: a
        read in between would cache the row as it was, for the cache's whole TTL)."""
        self._after.forget.add(supplier_id)

    def withdraw(self, so_ids: list[str]) -> None:
        """Take back orders not to be sent after all (their stock was not had)."""
        self._after.new_orders = [o for o in self._after.new_orders if o.id not in so_ids]

    async def commit(self) -> None:
        after = self._after.take()
        if not await self._write_in_one_trip(after):
            await self._sql.flush()  # supplier orders' saves held back (`defer_saves`)
            await self.suppliers.append_tallies(after.tally)
        await super().commit()
        for supplier_id in after.forget:
            self.directory.invalidate(supplier_id)
        if after.new_orders:
            self._hand_off(after.new_orders)
        if after.wake_dispatcher:
            self._wake_dispatcher()
        if after.wake_waiting:
            self._wake_waiting()

    async def _write_in_one_trip(self, after: AfterCommit) -> bool:
        """PostgreSQL: the held saves, the counter increments and the outbox rows in one
        statement (`one_trip`) where more than one of them has rows; whether it was sent."""
        if self.dialect != "postgresql" or self._single:
            return False
        held = self.supplier_orders.held
        parts = bool(held) + bool(after.tally) + bool(self.emitted)
        if parts < 2 or not one_trip.settable(held):
            return False
        held = self.supplier_orders.take_held()
        outbox = self.take_outbox() if self.emitted else None
        params = one_trip.parameters(held, after.tally, outbox, datetime.now(UTC))
        ids = (await self._sql.run(one_trip.STATEMENT, params)).scalar_one()
        if outbox is not None:
            outbox.written(ids)
        return True

    async def rollback(self) -> None:
        self._after.take()
        await super().rollback()
