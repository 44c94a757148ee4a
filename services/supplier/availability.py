"""Supplier availability: circuit breaker moves become `supplier-status-changed`, via the outbox.

The breaker calls `AvailabilityReporter` synchronously on every move (it never awaits);
the reporter sets the `dropship_supplier_breaker_open` gauge, logs, and queues the event
the move means (`services.supplier.domain.availability`). `run` writes the queue through
the outbox in order, one unit of work per change, retrying while the database is away:
each change of this process is written once, and nothing is published directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Gauge

from services.supplier.breaker import BreakerState
from services.supplier.domain import status_change
from services.supplier.handlers.dispatch import record_availability
from services.supplier.store import SupplierUnitOfWork
from shared.events import SupplierStatusChanged

log = logging.getLogger(__name__)
BREAKER_OPEN = Gauge(
    "dropship_supplier_breaker_open",
    "1 while a supplier's circuit breaker is open.",
    ["supplier_id"],
)
RETRY_S = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class AvailabilityReporter:
    """The breaker's `on_change` hook, and the task that writes what it queued."""

    def __init__(self, clock: Callable[[], datetime] = _now) -> None:
        self._clock = clock
        self._queue: asyncio.Queue[SupplierStatusChanged] = asyncio.Queue()

    def __call__(self, supplier_id: str, old: BreakerState, new: BreakerState) -> None:
        BREAKER_OPEN.labels(supplier_id).set(1 if new is BreakerState.OPEN else 0)
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(
            level, "supplier circuit breaker %s -> %s", old, new, extra={"supplier_id": supplier_id}
        )
        change = status_change(supplier_id, old.value, new.value, self._clock())
        if change is not None:
            self._queue.put_nowait(change)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def run(self, new_uow: Callable[[], SupplierUnitOfWork]) -> None:
        """Write queued changes through the outbox, oldest first, until cancelled."""
        while True:
            change = await self._queue.get()
            while True:
                try:
                    await record_availability(new_uow(), change)
                    break
                except Exception:
                    log.exception(
                        "recording a supplier status change failed; retrying",
                        extra={"supplier_id": change.supplier_id},
                    )
                    await asyncio.sleep(RETRY_S)
