"""The reconciler: asks suppliers about orders whose next step they never reported.

A supplier's decision arrives as a callback; if every delivery of it failed (we were
down, or answered 503 while overloaded, past the supplier's own retries), the supplier
order would stay `received` forever: never confirmed, no SLA clock. So an undecided
order (`received` or `backordered`) whose `next_check_at` has passed is claimed (its
next check pushed back by `DROPSHIP_SUPPLIER_CHECK_AFTER_S`; `FOR UPDATE SKIP LOCKED` on
PostgreSQL, so replicas share the work), its status is fetched with
`GET {api_base_url}/orders/{ref}` and applied through the callback handler, whose state
guards make a late callback and a check racing each other decide exactly once. An order
still `received` `DROPSHIP_SUPPLIER_DECISION_TIMEOUT_S` after the supplier took it is
called off and its lines fail over.

Decided orders are asked about too (with `check_max`): an accepted order not reported
dispatched, or a dispatched one not reported delivered, `DROPSHIP_SUPPLIER_CHECK_AFTER_S`
after its last step and then at growing gaps (at most `DROPSHIP_SUPPLIER_CHECK_MAX_S`),
so what a supplier (or carrier) could not tell us, because every delivery of its
callback failed, is still learnt.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from services.supplier.adapter import SupplierClient, SupplierEndpoint, SupplierStatus
from services.supplier.handlers import callbacks, dispatch
from services.supplier.store import SupplierUnitOfWork
from shared.idle import Alarm
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        runtime: ServiceRuntime[SupplierUnitOfWork],
        client: SupplierClient,
        *,
        interval_s: float,
        max_sleep_s: float | None = None,
        decision_timeout: timedelta | None = None,
        check_max: timedelta | None = None,
        batch: int = 100,
        concurrency: int = 8,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.interval_s = interval_s
        self.max_sleep_s = interval_s if max_sleep_s is None else max_sleep_s
        self.decision_timeout = decision_timeout
        self.check_max = check_max
        self.batch = batch
        self.limit = asyncio.Semaphore(concurrency)

    async def run(self) -> None:
        """Check what is due; then sleep until the next check is due (at least
        `interval_s`, at most `max_sleep_s`: an order sent or moving on meanwhile is first
        due `check_after` later, so it is never missed while that is the longer)."""
        alarm = Alarm(self.interval_s, self.max_sleep_s)
        while True:
            checked = await self.check_due()
            if checked < self.batch:
                due = await dispatch.next_status_check(self.runtime.uow(), self.check_max)
                await alarm.sleep(due)

    async def check_due(self) -> int:
        """Check one batch of due orders; returns how many were claimed."""
        due = await dispatch.due_status_checks(self.runtime.uow(), self.batch, self.check_max)
        checks = []
        for check, entry in due:
            if entry is None or not check.supplier_order_ref:
                continue
            endpoint = SupplierEndpoint(
                entry.id, entry.api_base_url, entry.credentials.api_key, entry.rate_limit_per_s
            )
            checks.append(self._check(endpoint, check.so_id, check.supplier_order_ref))
        await asyncio.gather(*checks)
        return len(due)

    async def _check(self, endpoint: SupplierEndpoint, so_id: str, ref: str) -> None:
        async with self.limit:
            try:
                status = await self.client.order_status(endpoint, ref)
                if not isinstance(status, SupplierStatus):
                    log.warning(
                        "supplier order status unavailable: %s",
                        getattr(status, "reason", status),
                        extra={"supplier_id": endpoint.supplier_id, "supplier_order": so_id},
                    )
                    return  # checked again after DROPSHIP_SUPPLIER_CHECK_AFTER_S
                outcome = await callbacks.record_status(
                    self.runtime.uow(), endpoint.supplier_id, so_id, status
                )
                undecided = outcome is callbacks.Outcome.UNDECIDED
                if undecided and status.status == "received" and self.decision_timeout:
                    await dispatch.give_up_undecided(
                        self.runtime.uow(), so_id, self.decision_timeout
                    )
                quiet = undecided or outcome is callbacks.Outcome.IGNORED  # nothing new
                level = logging.INFO if quiet else logging.WARNING
                log.log(
                    level,
                    "supplier order %s is %s at the supplier: %s",
                    so_id,
                    status.status,
                    outcome,
                    extra={"supplier_id": endpoint.supplier_id, "supplier_order": so_id},
                )
            except Exception:
                log.exception("supplier order check failed", extra={"supplier_order": so_id})
