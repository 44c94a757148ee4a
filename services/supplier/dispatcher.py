"""The dispatcher: places and cancels supplier orders over HTTP, outside any transaction.

It claims due supplier orders with a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so
replicas share the work), calls the supplier with the supplier order id as the
idempotency key, and records the outcome in a new unit of work. A crash mid-call
leaves the lease to expire; the order is then sent again with the same key, and the
supplier answers with the order it already has: nothing is bought twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.supplier import handlers
from services.supplier.adapter import OrderLine, PlaceOrderRequest, SupplierClient, SupplierEndpoint
from services.supplier.store import SupplierUnitOfWork
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class Job:
    so_id: str
    kind: str  # "place" | "cancel"
    endpoint: SupplierEndpoint
    request: PlaceOrderRequest | None
    supplier_order_ref: str | None


class Wakeup:
    """Set by a unit of work that queued supplier work; the dispatcher waits on it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()


class Dispatcher:
    def __init__(
        self,
        runtime: ServiceRuntime[SupplierUnitOfWork],
        client: SupplierClient,
        wakeup: Wakeup,
        *,
        callback_base: str,
        poll_s: float,
        concurrency: int,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.wakeup = wakeup
        self.callback_base = callback_base.rstrip("/")
        self.poll_s = poll_s
        self.limit = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                self.wakeup.event.clear()
                free = self.concurrency - len(self._inflight)
                jobs = await self._claim(free) if free > 0 else []
                for job in jobs:
                    task = asyncio.create_task(self._perform(job))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                if len(jobs) < free or free == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wakeup.event.wait(), self.poll_s)
        finally:
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _claim(self, limit: int) -> list[Job]:
        jobs: list[Job] = []
        async with self.runtime.uow() as uow:
            rows = await uow.claim_work(("to_send", "cancel_pending"), LEASE, limit)
            for so in rows:
                jobs.append(await self._job(uow, so))
            await uow.commit()
        return jobs

    async def _job(self, uow: SupplierUnitOfWork, so: Any) -> Job:
        row = await uow.supplier_row(so.supplier_id)
        creds = uow.sealer.load(row.credentials)
        endpoint = SupplierEndpoint(row.id, row.api_base_url, creds.api_key, row.rate_limit_per_s)
        if so.state in ("cancel_pending", "cancelling"):
            return Job(so.id, "cancel", endpoint, None, so.supplier_order_ref)
        request = await uow.request(so.order_id)
        allocs = await uow.allocations_of(so.id)
        return Job(
            so.id,
            "place",
            endpoint,
            PlaceOrderRequest(
                idempotency_key=so.id,
                reference=so.id,
                order_id=so.order_id,
                lines=[OrderLine(a.supplier_sku, a.quantity) for a in allocs],
                ship_country=request.ship_country,
                ship_postal_code=request.ship_postal_code,
                callback_url=f"{self.callback_base}/v1/webhooks/suppliers/{row.id}",
            ),
            None,
        )

    async def _perform(self, job: Job) -> None:
        async with self.limit:
            try:
                if job.kind == "place":
                    assert job.request is not None
                    outcome = await self.client.place_order(job.endpoint, job.request)
                    await handlers.record_send(self.runtime.uow(), job.so_id, outcome)
                else:
                    done = True
                    if job.supplier_order_ref:
                        done = await self.client.cancel_order(job.endpoint, job.supplier_order_ref)
                    await handlers.record_cancel(self.runtime.uow(), job.so_id, done)
            except Exception:
                # the lease expires and the job is retried with the same idempotency key
                log.exception("supplier job failed", extra={"supplier_order": job.so_id})


async def sla_clock(runtime: ServiceRuntime[SupplierUnitOfWork], interval_s: float) -> None:
    """Scan for late supplier orders every `interval_s` (deadlines live in the database)."""
    while True:
        fired = await handlers.scan_sla(runtime.uow())
        if fired:
            log.info("SLA events emitted", extra={"count": fired})
        await asyncio.sleep(interval_s)
