"""Supplier unit of work: the transaction, what it hands over at commit, shared SQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.supplier.directory import SupplierDirectory
from services.supplier.tables import (
    supplier_tally,
)
from shared.db import dialect_insert
from shared.uow import UnitOfWork

ACTIVE_STATES = ("to_send", "sending", "received", "accepted", "backordered", "dispatched")
FAILED_STATES = ("rejected", "out_of_stock", "unavailable")
UNDECIDED_STATES = ("received", "backordered")
COUNTERS = ("decided", "accepted", "shipped", "shipped_on_time", "exceptions")
"""Placed at the supplier, waiting for its decision: checked on if no callback comes."""


@dataclass(frozen=True)
class NewSupplierOrder:
    """A supplier order committed as `sending` under this process's lease: the dispatcher
    places it straight from memory (no claim round trip); if this process dies, the lease
    expires and any replica sends it again with the same idempotency key."""

    id: str
    order_id: str
    supplier_id: str
    lines: tuple[tuple[str, int], ...]  # (supplier_sku, quantity)
    ship_country: str
    ship_postal_code: str


@dataclass
class _Tally:
    """Supplier counter increments, written last and in supplier order at commit (hot rows)."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, supplier_id: str, increments: dict[str, int]) -> None:
        self.counts.setdefault(supplier_id, Counter()).update(increments)


class StockConflict(Exception):
    """Stock read for planning was taken by a concurrent order; plan again."""


class UnitOfWorkBase(UnitOfWork):
    """The transaction, its hand-offs and hot-row buffers; repositories build on it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: Callable[[], None] | None = None,
        notify_others: Callable[[], bool] = lambda: True,
        *,
        directory: SupplierDirectory,
        hand_off: Callable[[list[NewSupplierOrder]], None] = lambda _: None,
        wake_dispatcher: Callable[[], None] = lambda: None,
        lease: timedelta = timedelta(seconds=60),
        check_after: timedelta = timedelta(seconds=30),
    ) -> None:
        super().__init__(sessions, on_commit, notify_others)
        self.directory = directory
        self.sealer = directory.sealer
        self.lease = lease
        self.check_after = check_after
        self._hand_off = hand_off
        self._wake_dispatcher = wake_dispatcher
        self.work_queued = False
        self.new_orders: list[NewSupplierOrder] = []
        self._tally = _Tally()
        self._lines: dict[str, list[Any]] = {}  # allocations read with their supplier order

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.work_queued = False
        self.new_orders = []
        self._tally = _Tally()
        self._lines = {}
        return self

    async def commit(self) -> None:
        if self._tally.counts:  # appended, not updated: the supplier row is not locked
            await self._run(
                supplier_tally.insert(),
                [
                    {**dict.fromkeys(COUNTERS, 0), **increments, "supplier_id": supplier_id}
                    for supplier_id, increments in sorted(self._tally.counts.items())
                ],
            )
        self._tally = _Tally()
        await super().commit()
        if self.new_orders:
            fresh, self.new_orders = self.new_orders, []
            self._hand_off(fresh)
        if self.work_queued:
            self._wake_dispatcher()

    async def rollback(self) -> None:
        self.new_orders = []
        self._tally = _Tally()
        await super().rollback()

    async def _run(self, statement: Any, params: Any = None) -> Any:
        """Execute on the transaction's connection: Core, without the ORM session's overhead."""
        conn = await self.session.connection()
        if params is None:
            return await conn.execute(statement)
        return await conn.execute(statement, params)

    async def _scalar(self, statement: Any) -> Any:
        return (await self._run(statement)).scalar()

    def _insert(self) -> Any:
        return dialect_insert(self.dialect)
