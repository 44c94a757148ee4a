"""Supplier and carrier callbacks, and the reconciler's status checks, applied to supplier orders.

A callback the supplier order's lifecycle does not allow (a late or repeated one) is
answered `ignored` and changes nothing; routes verify signatures and parse bodies first.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from prometheus_client import Counter

from services.supplier.adapter import SupplierStatus
from services.supplier.domain import Action, IllegalTransition, SupplierOrder
from services.supplier.handlers.waiting import live_lines
from services.supplier.routing import fail_over
from services.supplier.store import TRACKING, GroupCall, StockConflict, SupplierUnitOfWork

STATUS_CHECKS = Counter(
    "dropship_supplier_status_checks",
    "Undecided supplier orders whose status was fetched from the supplier, by what it said.",
    ["outcome"],
)
DEFAULT_SLA_HOURS = 48.0
CallbackType = Literal["accepted", "rejected", "backordered", "dispatched"]


class Outcome(StrEnum):
    """What a callback came to, as the caller is told."""

    DUPLICATE = "duplicate"
    UNKNOWN_ORDER = "unknown_order"
    UNKNOWN_TRACKING_NUMBER = "unknown_tracking_number"
    IGNORED = "ignored"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    BACKORDERED = "backordered"
    FAILED_OVER = "failed_over"
    DISPATCHED = "dispatched"
    CANCELLING_LATE_ACCEPTANCE = "cancelling_late_acceptance"
    EXCEPTION = "exception"
    DELIVERED = "delivered"
    RECORDED = "recorded"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class SupplierCallback:
    type: CallbackType
    reference: str  # our supplier order id
    supplier_order_ref: str | None = None
    reason: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None


@dataclass(frozen=True)
class TrackingUpdate:
    tracking_number: str
    status: Literal["in_transit", "exception", "delivered"]
    occurred_at: datetime | None = None


async def supplier_callback(
    uow: SupplierUnitOfWork, supplier_id: str, delivery_id: str, callback: SupplierCallback
) -> Outcome:
    """A supplier's signed callback, once per delivery id (the id recorded and the order
    loaded in one round trip on PostgreSQL)."""
    async with uow:
        uow.supplier_orders.defer_saves()  # written with the commit's other writes
        outcome = await _supplier_once(uow, supplier_id, delivery_id, callback)
        if outcome is not Outcome.DUPLICATE:
            await uow.commit()
    return outcome


async def _supplier_once(
    uow: SupplierUnitOfWork, supplier_id: str, delivery_id: str, callback: SupplierCallback
) -> Outcome:
    first, so = await uow.supplier_orders.get_once(
        callback.reference, f"supplier:{supplier_id}", delivery_id
    )
    if not first:
        return Outcome.DUPLICATE
    return await _apply_to(uow, supplier_id, so, callback)


@dataclass(frozen=True)
class Recorded:
    """A verified, parsed callback: a supplier's (with its supplier id) or a carrier's
    tracking update (`supplier_id` None), with the context of the request that brought it
    (its trace; the journal's entries have the journal's)."""

    delivery_id: str
    supplier_id: str | None
    callback: SupplierCallback | TrackingUpdate
    context: contextvars.Context = field(
        default_factory=contextvars.copy_context, compare=False, repr=False
    )


async def apply_one(uow: SupplierUnitOfWork, r: Recorded) -> Outcome:
    """`r` alone in its unit of work (`supplier_callback` or `tracking_update`), in its
    request's context."""
    if isinstance(r.callback, TrackingUpdate):
        coro = tracking_update(uow, r.delivery_id, r.callback)
    else:
        assert r.supplier_id is not None
        coro = supplier_callback(uow, r.supplier_id, r.delivery_id, r.callback)
    return await _in_context(r, coro)


async def apply_recorded(uow: SupplierUnitOfWork, batch: Sequence[Recorded]) -> list[Outcome]:
    """Callbacks applied in order in one unit of work, each once per delivery id and in
    its request's context: what each would answer alone, one write transaction for all
    (the journal's batches, which let a busy SQLite database catch up; a group of
    concurrent callbacks, `webhooks.callback_groups`)."""
    async with uow:
        calls = _group_calls(batch)
        if len(calls) > 1:  # alone, `_once`'s own statement records it and loads its order
            await uow.supplier_orders.take_group(calls)
        uow.supplier_orders.defer_saves()  # together, and with the commit's other writes
        outcomes = [await _in_context(r, _once(uow, r)) for r in batch]
        await uow.commit()
    return outcomes


def _group_calls(batch: Sequence[Recorded]) -> list[GroupCall]:
    """What `take_group` records and loads ahead of a group: every callback but a
    parcel's movement (`Clocks.moved_once` records its own delivery id with it), and but
    one sharing a movement's delivery id (whichever comes first is the new one)."""
    calls, moves = [], set()
    for r in batch:
        if isinstance(r.callback, TrackingUpdate):
            if r.callback.status == "in_transit":
                moves.add(r.delivery_id)
            else:
                calls.append(GroupCall(TRACKING, r.delivery_id, None, r.callback.tracking_number))
        else:
            source = f"supplier:{r.supplier_id}"
            calls.append(GroupCall(source, r.delivery_id, r.callback.reference))
    return [c for c in calls if c.source != TRACKING or c.delivery_id not in moves]


async def _in_context(r: Recorded, applying: Coroutine[Any, Any, Outcome]) -> Outcome:
    """`applying` run in the context of the request that brought `r` (its trace)."""
    return await asyncio.get_running_loop().create_task(applying, context=r.context)


async def _once(uow: SupplierUnitOfWork, r: Recorded) -> Outcome:
    if isinstance(r.callback, TrackingUpdate):
        return await _tracking_once(uow, r.delivery_id, r.callback)
    assert r.supplier_id is not None
    return await _supplier_once(uow, r.supplier_id, r.delivery_id, r.callback)


async def apply_callback(
    uow: SupplierUnitOfWork, supplier_id: str, callback: SupplierCallback
) -> Outcome:
    """Apply one supplier decision inside the caller's unit of work."""
    so = await uow.supplier_orders.get(callback.reference, for_update=True)
    return await _apply_to(uow, supplier_id, so, callback)


async def _apply_to(
    uow: SupplierUnitOfWork,
    supplier_id: str,
    so: SupplierOrder | None,
    callback: SupplierCallback,
) -> Outcome:
    """`apply_callback` to the order it names, loaded locked (None: not known)."""
    if so is None or so.supplier_id != supplier_id:
        return Outcome.UNKNOWN_ORDER
    try:
        return await _decide(uow, so, callback)
    except IllegalTransition:
        return Outcome.IGNORED


async def _decide(
    uow: SupplierUnitOfWork, so: SupplierOrder, callback: SupplierCallback
) -> Outcome:
    ref, now, orders = callback.supplier_order_ref, datetime.now(UTC), uow.supplier_orders
    if callback.type in ("accepted", "dispatched") and so.given_up:
        if await _taken_after_all(uow, so, ref):
            return await _decide(uow, so, callback)
        # we gave up on this supplier (timeouts) or the customer cancelled, yet it took the
        # order after all, and its lines went elsewhere: call it off, so the goods are never
        # bought twice
        so.call_off_late_acceptance(ref)
        await orders.save(so)
        return Outcome.CANCELLING_LATE_ACCEPTANCE
    if callback.type == "accepted":
        so.accept(ref, await _sla_hours(uow, so), now)
        await orders.save(so)
        await _no_longer_waiting(uow, so)
        return Outcome.ACCEPTED
    if callback.type == "rejected":
        so.reject(callback.reason or "")
        await orders.save(so)
        await fail_over(uow, so)
        return Outcome.REJECTED
    if callback.type == "backordered":
        so.ensure(Action.BACKORDER)
        moved = await fail_over(uow, so, all_or_nothing=True)  # someone else takes every line?
        so.backorder(ref, now + uow.check_after, moved=moved)
        await orders.save(so)
        return Outcome.FAILED_OVER if moved else Outcome.BACKORDERED
    so.dispatch(
        callback.carrier or "unknown",
        callback.tracking_number or "",
        ref,
        await _sla_hours(uow, so),
        now,
    )
    await orders.save(so)
    await _no_longer_waiting(uow, so)
    return Outcome.DISPATCHED


async def _taken_after_all(uow: SupplierUnitOfWork, so: SupplierOrder, ref: str | None) -> bool:
    """Keep an order we heard nothing usable back about (a timed-out call the supplier
    served after all) when every line of it still waits for a supplier: it is what they
    wait for, and calling it off would only buy them again. True if it was kept."""
    if not so.can(Action.RECOVER):
        return False
    # locked: a cancellation either committed first (and is seen) or waits for this
    request = await uow.routing_requests.get(so.order_id, for_update=True)
    if request is None or request.cancelled_at is not None or await uow.holds.held(so.order_id):
        return False
    waiting = await uow.waiting.of_order(so.order_id)
    lines = {a.line_id for a in so.lines}
    if not lines <= set(waiting) or lines & await live_lines(uow, so.order_id):
        return False
    try:
        await uow.offers.move_stock(take=[(so.supplier_id, a.sku, a.quantity) for a in so.lines])
    except StockConflict:
        return False
    so.taken_after_all(ref)
    return True


async def _no_longer_waiting(uow: SupplierUnitOfWork, so: SupplierOrder) -> None:
    """Its lines are taken: they wait for a supplier no more (if any of the order did)."""
    if uow.supplier_orders.lines_may_wait(so):
        await uow.waiting.clear(so.order_id, [a.line_id for a in so.lines])


async def _sla_hours(uow: SupplierUnitOfWork, so: SupplierOrder) -> float:
    entry = await uow.suppliers.entry(so.supplier_id)
    return entry.ship_sla_hours if entry is not None else DEFAULT_SLA_HOURS


_STATUS_STEPS: dict[str, list[CallbackType]] = {
    "accepted": ["accepted"],
    "rejected": ["rejected"],
    "cancelled": ["rejected"],  # we never asked: as good as a rejection
    "backordered": ["backordered"],
    "dispatched": ["dispatched"],
    "delivered": ["dispatched"],
}


async def record_status(
    uow: SupplierUnitOfWork, supplier_id: str, so_id: str, status: SupplierStatus
) -> Outcome:
    """What the supplier says of an order (undecided, or whose next step was not reported),
    applied like its callbacks; `delivered` delivers it, as the carrier's update would.

    The lifecycle's guards make this safe to race with a late callback: whichever
    commits first decides, the other changes nothing.
    """
    outcome = Outcome.UNDECIDED
    async with uow:
        for kind in _STATUS_STEPS.get(status.status, []):
            callback = SupplierCallback(
                kind,
                so_id,
                status.supplier_order_ref,
                status.reason,
                status.carrier,
                status.tracking_number,
            )
            outcome = await apply_callback(uow, supplier_id, callback)
        if status.status == "delivered":  # the carrier's updates may all have been lost too
            so = await uow.supplier_orders.get(so_id, for_update=True)
            if so is not None and so.supplier_id == supplier_id and so.can(Action.DELIVER):
                so.deliver(datetime.now(UTC))
                await uow.supplier_orders.save(so)
                outcome = Outcome.DELIVERED
        await uow.commit()
    STATUS_CHECKS.labels(outcome.value).inc()
    return outcome


async def tracking_update(
    uow: SupplierUnitOfWork, delivery_id: str, update: TrackingUpdate
) -> Outcome:
    """A carrier's tracking update, once per delivery id."""
    async with uow:
        if update.status == "in_transit":  # PostgreSQL: the delivery id and the movement
            await uow.single_statement()
        outcome = await _tracking_once(uow, delivery_id, update)
        if outcome is not Outcome.DUPLICATE:
            await uow.commit()
    return outcome


async def _tracking_once(
    uow: SupplierUnitOfWork, delivery_id: str, update: TrackingUpdate
) -> Outcome:
    if update.status == "in_transit":  # the parcel moved, nothing else
        first, known = await uow.clocks.moved_once(
            delivery_id, update.tracking_number, _when(update)
        )
        if not first:
            return Outcome.DUPLICATE
        return Outcome.RECORDED if known else Outcome.UNKNOWN_TRACKING_NUMBER
    # the id recorded and the order loaded in one round trip on PostgreSQL
    first, so = await uow.supplier_orders.by_tracking_once(
        update.tracking_number, TRACKING, delivery_id
    )
    if not first:
        return Outcome.DUPLICATE
    return await _track_order(uow, so, update)


def _when(update: TrackingUpdate) -> datetime:
    when = update.occurred_at or datetime.now(UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def _track_order(
    uow: SupplierUnitOfWork, so: SupplierOrder | None, update: TrackingUpdate
) -> Outcome:
    """An exception or delivery for the order shipping under its number (None: none)."""
    if so is None:
        return Outcome.UNKNOWN_TRACKING_NUMBER
    when = _when(update)
    try:
        if update.status == "exception":
            await uow.clocks.moved(update.tracking_number, when)  # the parcel moved: not lost
            so.report_exception()
            outcome = Outcome.EXCEPTION
        else:  # delivered (TrackingIn admits only the three)
            so.deliver(when)
            outcome = Outcome.DELIVERED
    except IllegalTransition:
        return Outcome.RECORDED  # not (or no longer) on its way: noted, nothing changes
    await uow.supplier_orders.save(so)
    return outcome
