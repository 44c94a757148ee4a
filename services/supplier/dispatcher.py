"""The dispatcher: places and cancels supplier orders over HTTP, outside any transaction.

Routing commits new supplier orders as `sending` under this process's lease and hands
them over in memory once committed, so the common path costs no claim query. Anything
else that is due (cancellations, and orders whose lease expired because a process died
mid-call) is claimed with a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so replicas
share the work). Each call carries the supplier order id as the idempotency key, so an
order sent again is answered with the order the supplier already has: nothing is bought
twice. Orders the supplier took are recorded in batches, one statement per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from services.supplier.adapter import (
    OrderLine,
    PlaceOrderRequest,
    Received,
    SupplierClient,
    SupplierEndpoint,
)
from services.supplier.handlers import dispatch
from services.supplier.handlers.clocks import scan_clocks
from services.supplier.handlers.dispatch import Cancellation
from services.supplier.handlers.waiting import next_retry_at, retry_waiting
from services.supplier.ship_to import Redacted, ShipTo, ShipToBook
from services.supplier.store import NewSupplierOrder, SupplierDirectory, SupplierUnitOfWork
from shared.idle import Alarm, Backoff
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class Job:
    so_id: str
    supplier_id: str
    kind: Literal["place", "cancel"]
    order: NewSupplierOrder | None
    supplier_order_ref: str | None


class Wakeup:
    """Set by a unit of work that queued supplier work; the dispatcher waits on it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.dispatcher: Dispatcher | None = None

    def __call__(self) -> None:
        self.event.set()

    def hand_off(self, orders: list[NewSupplierOrder]) -> None:
        """Committed new supplier orders, leased to this process: send them now."""
        if self.dispatcher is not None:
            self.dispatcher.start([Job(o.id, o.supplier_id, "place", o, None) for o in orders])
        # no dispatcher running (it is restarting): the lease expires and they are claimed


class Dispatcher:
    def __init__(
        self,
        runtime: ServiceRuntime[SupplierUnitOfWork],
        client: SupplierClient,
        wakeup: Wakeup,
        directory: SupplierDirectory,
        ship_to: ShipToBook,
        *,
        callback_base: str,
        poll_s: float,
        concurrency: int,
        lease: timedelta = LEASE,
        idle_backoff: float = 8.0,
    ) -> None:
        self.runtime = runtime
        self.lease = lease
        self.client = client
        self.wakeup = wakeup
        self.directory = directory
        self.ship_to = ship_to
        self.callback_base = callback_base.rstrip("/")
        self.poll_s = poll_s
        self.idle_backoff = idle_backoff
        self.limit = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._received: list[tuple[str, str]] = []
        self._recorded = asyncio.Event()

    async def run(self) -> None:
        self.wakeup.dispatcher = self
        recorder = asyncio.create_task(self._record_received(), name="supplier:record-received")
        poll = Backoff(self.poll_s, self.idle_backoff)
        try:
            while True:
                self.wakeup.event.clear()
                # hand-offs may put more in flight than `concurrency` (they queue on the
                # semaphore), so `free` can be negative: then there is nothing to claim
                free = self.concurrency - len(self._inflight)
                jobs = await self._claim(free) if free > 0 else []
                self.start(jobs)
                if free <= 0 or len(jobs) < free:  # else more may be due: claim again at once
                    wait = poll.found(bool(jobs or self._inflight))
                    with contextlib.suppress(TimeoutError):  # 3.11 wait_for can lose a cancel
                        async with asyncio.timeout(wait):
                            await self.wakeup.event.wait()
                    if self.wakeup.event.is_set():
                        poll.woken()
        finally:
            self.wakeup.dispatcher = None
            for task in [*self._inflight, recorder]:
                task.cancel()
            await asyncio.gather(*self._inflight, recorder, return_exceptions=True)

    def start(self, jobs: list[Job]) -> None:
        for job in jobs:
            task = asyncio.create_task(self._perform(job))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _claim(self, limit: int) -> list[Job]:
        return [
            Job(w.so_id, w.supplier_id, "cancel", None, w.supplier_order_ref)
            if isinstance(w, Cancellation)
            else Job(w.id, w.supplier_id, "place", w, None)
            for w in await dispatch.claim_work(self.runtime.uow(), limit)
        ]

    async def _endpoint(self, supplier_id: str) -> SupplierEndpoint:
        hit, entry = self.directory.cached(supplier_id)
        if not hit:
            entry = await dispatch.supplier_entry(self.runtime.uow(), supplier_id)
        if entry is None:
            raise LookupError(f"supplier {supplier_id} is gone")
        return SupplierEndpoint(
            entry.id, entry.api_base_url, entry.credentials.api_key, entry.rate_limit_per_s
        )

    def _request(self, order: NewSupplierOrder, ship_to: ShipTo) -> PlaceOrderRequest:
        return PlaceOrderRequest(
            idempotency_key=order.id,
            reference=order.id,
            order_id=order.order_id,
            lines=[OrderLine(sku, quantity) for sku, quantity in order.lines],
            ship_country=order.ship_country,
            ship_postal_code=order.ship_postal_code,
            callback_url=f"{self.callback_base}/v1/webhooks/suppliers/{order.supplier_id}",
            ship_to=ship_to.to_json(),
        )

    async def _perform(self, job: Job) -> None:
        async with self.limit:
            try:
                endpoint = await self._endpoint(job.supplier_id)
                if job.kind == "place":
                    assert job.order is not None
                    # read at call time, never stored; unreachable: the lease expires, retried
                    ship_to = await self.ship_to.fetch(
                        job.order.order_id,
                        country=job.order.ship_country,
                        postal_code=job.order.ship_postal_code,
                    )
                    if isinstance(ship_to, Redacted):
                        log.warning(
                            "order not sent: the customer's details were erased",
                            extra={"supplier_order": job.so_id, "order_id": job.order.order_id},
                        )
                        await dispatch.record_undeliverable(
                            self.runtime.uow(), job.so_id, "customer redacted"
                        )
                        return
                    request = self._request(job.order, ship_to)
                    outcome = await self.client.place_order(endpoint, request)
                    if isinstance(outcome, Received):
                        self._received.append((job.so_id, outcome.supplier_order_ref))
                        self._recorded.set()
                    else:
                        await dispatch.record_send(self.runtime.uow(), job.so_id, outcome)
                else:
                    done = True
                    if job.supplier_order_ref:
                        done = await self.client.cancel_order(endpoint, job.supplier_order_ref)
                    await dispatch.record_cancel(self.runtime.uow(), job.so_id, done)
            except Exception:
                # the lease expires and the job is retried with the same idempotency key
                log.exception("supplier job failed", extra={"supplier_order": job.so_id})

    async def _record_received(self) -> None:
        """Record the orders suppliers took, as many per transaction as have come in."""
        while True:
            await self._recorded.wait()
            self._recorded.clear()
            batch, self._received = self._received, []
            try:
                await dispatch.record_sent(self.runtime.uow(), batch)
            except Exception:
                # still `sending`: the lease expires, they are sent again with the same key
                # and the supplier answers with the orders it already has
                log.exception("recording placed supplier orders failed")


async def sla_clock(
    runtime: ServiceRuntime[SupplierUnitOfWork],
    interval_s: float,
    *,
    handling: timedelta = timedelta(hours=2),
    silence: timedelta = timedelta(hours=120),
) -> None:
    """Scan for late supplier orders, orders not accepted in time and silent parcels every
    `interval_s` (deadlines live in the database); then fold the suppliers' counter
    increments into their rows."""
    while True:
        fired = await dispatch.scan_sla(runtime.uow())
        if fired:
            log.info("SLA events emitted", extra={"count": fired})
        await scan_clocks(runtime.uow(), handling=handling, silence=silence)
        await dispatch.fold_tallies(runtime.uow())
        await asyncio.sleep(interval_s)


async def waiting_clock(runtime: ServiceRuntime[SupplierUnitOfWork], alarm: Alarm) -> None:
    """Route lines waiting for a supplier again when their next try is due: sleeps until
    the earliest next try, woken when a commit parks a line or brings its try forward."""
    while True:
        try:
            await retry_waiting(runtime.uow())
            due = await next_retry_at(runtime.uow())
        except Exception:
            log.exception("routing waiting lines again failed; trying again")
            due = alarm.now()
        await alarm.sleep(due)
