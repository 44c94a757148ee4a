"""What supplier calls came to (placing, cancelling, availability), the SLA clock, housekeeping.

The dispatcher and the reconciler make the calls outside any transaction; each outcome
is recorded here in a unit of work of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from services.supplier.adapter import Outcome, OutOfStock, Received, Rejected, Unavailable
from services.supplier.directory import SupplierEntry
from services.supplier.domain import Action, State
from services.supplier.routing import fail_over, to_send
from services.supplier.store import NewSupplierOrder, StatusCheck, SupplierUnitOfWork
from shared.db import READ_ONLY
from shared.events import (
    OrderRoutingFailed,
    RoutingFailureReason,
    SupplierAvailability,
    SupplierStatusChanged,
    WaitingReason,
)

log = logging.getLogger(__name__)
SLA_SCANS = Counter("dropship_supplier_sla_scans", "SLA clock scans run by this process.")


@dataclass(frozen=True)
class Cancellation:
    """A supplier order to call off at its supplier (no ref: it never got there)."""

    so_id: str
    supplier_id: str
    supplier_order_ref: str | None


Work = NewSupplierOrder | Cancellation


async def claim_work(uow: SupplierUnitOfWork, limit: int) -> list[Work]:
    """Due work for this process's dispatcher, taken under a lease."""
    work: list[Work] = []
    async with uow:
        for so in await uow.supplier_orders.claim(limit):
            if so.state is State.CANCELLING:
                work.append(Cancellation(so.id, so.supplier_id, so.supplier_order_ref))
                continue
            request = await uow.routing_requests.get(so.order_id)
            if request is None:  # cannot happen: routing kept it; left for its lease to expire
                log.error("supplier order without its order", extra={"supplier_order": so.id})
                continue
            work.append(to_send(so, request))
        await uow.commit()
    return work


async def record_sent(uow: SupplierUnitOfWork, sent: list[tuple[str, str]]) -> None:
    """Supplier orders the suppliers took (id, their ref), recorded in one statement."""
    async with uow:
        await uow.single_statement()
        await uow.supplier_orders.mark_received(sent, uow.check_after)
        await uow.commit()


async def record_send(uow: SupplierUnitOfWork, so_id: str, outcome: Outcome) -> None:
    """The dispatcher's result of placing a supplier order."""
    if isinstance(outcome, Received):
        await record_sent(uow, [(so_id, outcome.supplier_order_ref)])
        return
    if isinstance(outcome, Rejected) and outcome.reason.startswith("bad_address"):
        await record_undeliverable(uow, so_id, outcome.reason)
        return
    failed = {OutOfStock: State.OUT_OF_STOCK, Rejected: State.REJECTED}.get(
        type(outcome), State.UNAVAILABLE
    )
    async with uow:
        so = await uow.supplier_orders.get(so_id, for_update=True)
        if so is None or not so.can(Action.FAIL):
            return  # a callback or a cancel got there first
        so.placing_failed(failed, _describe(outcome))
        await uow.supplier_orders.save(so)
        if isinstance(outcome, OutOfStock):
            # learn: the supplier has none of these (its stock is set to 0, not given back)
            empty = [(so.supplier_id, a.sku) for a in so.lines if a.supplier_sku in outcome.skus]
            await uow.offers.move_stock(empty=empty)
        waiting = waiting_reason(outcome.reason) if isinstance(outcome, Unavailable) else None
        await fail_over(
            uow,
            so,
            restock=not isinstance(outcome, OutOfStock),
            waiting=waiting or WaitingReason.SERVER_ERROR,
        )
        await uow.commit()


def waiting_reason(unavailable: str) -> WaitingReason:
    """Why a supplier gave no usable answer, as `order-lines-waiting` names it."""
    if unavailable.startswith("breaker open"):
        return WaitingReason.BREAKER_OPEN
    if unavailable.startswith(("timeout", "transport error")):
        return WaitingReason.TIMEOUT
    if unavailable.startswith("http 429"):
        return WaitingReason.RATE_LIMITED
    return WaitingReason.SERVER_ERROR


async def record_undeliverable(uow: SupplierUnitOfWork, so_id: str, why: str) -> None:
    """The order cannot be shipped where it is going (an incomplete address, an erased
    customer): no supplier can fix that, so its lines need a human (`bad_address`)."""
    async with uow:
        so = await uow.supplier_orders.get(so_id, for_update=True)
        if so is None or not so.can(Action.FAIL):
            return  # a callback or a cancel got there first
        so.placing_failed(State.REJECTED, why)
        so.tally.clear()  # not the supplier's fault
        await uow.supplier_orders.save(so)
        await uow.offers.move_stock(give=[(so.supplier_id, a.sku, a.quantity) for a in so.lines])
        uow.emit(
            OrderRoutingFailed(
                order_id=so.order_id,
                line_ids=[a.line_id for a in so.lines],
                reason=RoutingFailureReason.BAD_ADDRESS,
            )
        )
        log.warning(
            "supplier order not placed: %s",
            why[:80],
            extra={"supplier_order": so.id, "order_id": so.order_id},
        )
        await uow.commit()


def _describe(outcome: Outcome) -> str:
    detail = outcome.skus if isinstance(outcome, OutOfStock) else getattr(outcome, "reason", "")
    return f"{type(outcome).__name__}: {str(detail)[:180]}"


async def record_cancel(uow: SupplierUnitOfWork, so_id: str, cancelled: bool) -> None:
    """The outcome of calling a supplier order off: done, or tried again later."""
    async with uow:
        so = await uow.supplier_orders.get(so_id, for_update=True)
        if so is None or not so.can(Action.FINISH_CANCEL):
            return  # another replica recorded it first
        if cancelled:
            so.cancel_confirmed()
        else:
            so.cancel_refused(datetime.now(UTC))
        await uow.supplier_orders.save(so)
        await uow.commit()


async def due_status_checks(
    uow: SupplierUnitOfWork, limit: int, check_max: timedelta | None = None
) -> list[tuple[StatusCheck, SupplierEntry | None]]:
    """Supplier orders to ask their supplier about (their next check pushed back): the
    undecided ones and, with `check_max`, those whose next step is overdue; with who to
    ask (None: the supplier is gone)."""
    async with uow:
        checks = await uow.supplier_orders.due_checks(limit, uow.check_after, check_max)
        suppliers = await uow.suppliers.entries({c.supplier_id for c in checks})
        await uow.commit()
    return [(c, suppliers.get(c.supplier_id)) for c in checks]


async def supplier_entry(uow: SupplierUnitOfWork, supplier_id: str) -> SupplierEntry | None:
    """The supplier's directory entry, read without SQLite's write lock: a job's supplier
    missing from the directory cache must not queue behind every write to read it."""
    async with uow:
        await uow.session.connection(execution_options={READ_ONLY: True})
        return await uow.suppliers.entry(supplier_id)


async def next_status_check(
    uow: SupplierUnitOfWork, check_max: timedelta | None = None
) -> datetime | None:
    """When `due_status_checks` next has an order to take (None: none now)."""
    async with uow:
        await uow.single_statement(reads=True)  # no SQLite write lock to read one row
        return await uow.supplier_orders.next_check(uow.check_after, check_max)


async def scan_sla(uow: SupplierUnitOfWork, now: datetime | None = None, page: int = 500) -> int:
    """Emit at_risk / no_tracking_by_deadline / major for untracked accepted orders, once each.

    Every accepted order is looked at, a page of `page` per transaction: orders already
    overdue (waiting for their `major` at twice the window) stay first in deadline order,
    so one page alone would starve every later order."""
    now = now or datetime.now(UTC)
    fired = 0
    SLA_SCANS.inc()
    after: tuple[datetime, str] | None = None
    while True:
        async with uow:
            batch = await uow.supplier_orders.sla_due(page, after)
            for so in batch:
                missed = so.deadline_sent
                fired += so.check_sla(now)
                if so.deadline_sent and not missed:  # its ship-by date passed untracked
                    await uow.suppliers.mark(so.supplier_id, "missed_deadline", now)
                await uow.supplier_orders.save(so)
            await uow.commit()
        if len(batch) < page:
            return fired
        last = batch[-1]
        assert last.ship_by is not None
        after = (last.ship_by, last.id)


async def fold_tallies(uow: SupplierUnitOfWork) -> int:
    """Fold supplier counter increments into the suppliers' rows (housekeeping)."""
    async with uow:
        folded = await uow.suppliers.fold_tallies()
        await uow.commit()
    return folded


async def record_availability(uow: SupplierUnitOfWork, change: SupplierStatusChanged) -> None:
    """A supplier became unavailable or available again: `supplier-status-changed`, via the
    outbox. A supplier back means lines waiting for one are routed again at once."""
    async with uow:
        uow.emit(change)
        if change.status is SupplierAvailability.AVAILABLE:
            await uow.waiting.retry_now(datetime.now(UTC))
        await uow.commit()


async def give_up_undecided(
    uow: SupplierUnitOfWork, so_id: str, decide_within: timedelta, now: datetime | None = None
) -> bool:
    """A supplier that has neither accepted nor rejected within `decide_within` of taking the
    order is called off (cancelled at the supplier under the cancel's own idempotency key)
    and its lines fail over; a late acceptance is then called off too, so nothing is
    bought twice. True if it was given up."""
    now = now or datetime.now(UTC)
    async with uow:
        so = await uow.supplier_orders.get(so_id, for_update=True)
        if so is None or so.state is not State.RECEIVED:
            return False  # decided (or being sent) meanwhile
        if (so.sent_at or so.created_at) + decide_within > now:
            return False
        so.call_off()
        so.failure = "no decision in time"
        await uow.supplier_orders.save(so)
        await fail_over(uow, so)
        log.warning(
            "supplier gave no decision in time: called off, lines failed over",
            extra={"supplier_order": so.id, "order_id": so.order_id},
        )
        await uow.commit()
    return True
