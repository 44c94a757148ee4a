"""Supplier service handlers: routing, failover, supplier callbacks, tracking, the SLA clock.

Every handler runs inside one unit of work and never calls a supplier: it records new
supplier orders as `sending` under this process's lease (handed to its dispatcher once
committed) and cancellations as `cancel_pending`; the dispatcher
(`services.supplier.dispatcher`) makes the calls outside any transaction, with the
supplier order id as the idempotency key, then records the outcome here. Supplier
orders the supplier took but never called back about are checked on by the reconciler
(`services.supplier.reconciler`), whose findings go through the same callback handler.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import Counter

from services.supplier.adapter import Outcome, OutOfStock, Received, Rejected, SupplierStatus
from services.supplier.domain import Line
from services.supplier.routing import RouteOrder, fail_over, route
from services.supplier.store import SupplierUnitOfWork
from shared.db import aware
from shared.events import (
    ConfirmedLine,
    DelayReason,
    Envelope,
    OrderCancelled,
    OrderPlaced,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)

log = logging.getLogger(__name__)
SLA_SCANS = Counter("dropship_supplier_sla_scans", "SLA clock scans run by this process.")
STATUS_CHECKS = Counter(
    "dropship_supplier_status_checks",
    "Undecided supplier orders whose status was fetched from the supplier, by what it said.",
    ["outcome"],
)


def _now() -> datetime:
    return datetime.now(UTC)


async def on_order_placed(envelope: Envelope, data: OrderPlaced, uow: SupplierUnitOfWork) -> None:
    lines = [
        {
            "line_id": ln.line_id,
            "sku": ln.sku,
            "quantity": ln.quantity,
            "unit_price": str(ln.unit_price),
        }
        for ln in data.lines
    ]
    request = {
        "order_id": data.order_id,
        "currency": data.currency,
        "lines": lines,
        "ship_country": data.shipping_country,
        "ship_postal_code": data.shipping_postal_code,
        "placed_at": data.placed_at,
        "received_at": _now(),
    }
    if await uow.add_request(request) and not await uow.was_cancelled(data.order_id):
        order = RouteOrder(
            data.order_id, data.currency, data.shipping_country, data.shipping_postal_code
        )
        await route(
            uow,
            order,
            [Line(ln.line_id, ln.sku, ln.quantity, ln.unit_price) for ln in data.lines],
            {},
        )


async def record_sent(uow: SupplierUnitOfWork, sent: list[tuple[str, str]]) -> None:
    """Supplier orders the suppliers took (id, their ref), recorded in one statement."""
    async with uow:
        await uow.mark_received(sent)
        await uow.commit()


async def record_send(uow: SupplierUnitOfWork, so_id: str, outcome: Outcome) -> None:
    """The dispatcher's result of placing a supplier order."""
    if isinstance(outcome, Received):
        await record_sent(uow, [(so_id, outcome.supplier_order_ref)])
        return
    async with uow:
        so = await uow.supplier_order(so_id, for_update=True)
        if so is None or so.state != "sending":
            return  # a callback or a cancel got there first
        state = {OutOfStock: "out_of_stock", Rejected: "rejected"}.get(type(outcome), "unavailable")
        await uow.set_state(so_id, state=state, failure=_describe(outcome), lease_until=None)
        if isinstance(outcome, OutOfStock):
            # learn: the supplier has none of these (its stock is set to 0, not given back)
            skus = [
                a.sku for a in await uow.allocations_of(so_id) if a.supplier_sku in outcome.skus
            ]
            await uow.move_stock(empty=[(so.supplier_id, sku) for sku in skus])
        if isinstance(outcome, Rejected):
            uow.count(so.supplier_id, decided=1)
        await fail_over(uow, so, restock=not isinstance(outcome, OutOfStock))
        await uow.commit()


def _describe(outcome: Outcome) -> str:
    return (
        type(outcome).__name__
        + ": "
        + str(getattr(outcome, "reason", getattr(outcome, "skus", "")))[:180]
    )


CANCEL_ATTEMPTS = 12


async def record_cancel(uow: SupplierUnitOfWork, so_id: str, cancelled: bool) -> None:
    """Cancelling is retried with growing pauses (up to ~1 h in all), then left for a human."""
    async with uow:
        so = await uow.supplier_order(so_id, for_update=True)
        if so is None:
            return
        if cancelled:
            await uow.set_state(so_id, state="cancelled", lease_until=None)
        elif so.attempts >= CANCEL_ATTEMPTS:
            await uow.set_state(so_id, state="cancel_failed", lease_until=None)
        else:
            pause = timedelta(seconds=min(2**so.attempts, 600))
            await uow.set_state(so_id, state="cancel_pending", lease_until=_now() + pause)
        await uow.commit()


async def on_order_cancelled(
    envelope: Envelope, data: OrderCancelled, uow: SupplierUnitOfWork
) -> None:
    # topics are per event type: the cancellation may be consumed before the order itself,
    # so it is remembered and an order-placed arriving later is never routed
    await uow.remember_cancellation(data.order_id, data.reason)
    request = await uow.request(data.order_id, for_update=True)
    if request is None:
        return
    release: list[tuple[str, str, int]] = []
    for so in await uow.orders_of(data.order_id):
        if so.state in ("to_send",):
            await uow.set_state(so.id, state="cancelled")
        elif so.state in ("sending", "received", "accepted", "backordered"):
            await uow.set_state(so.id, state="cancel_pending")
        else:
            continue
        release += [(so.supplier_id, a.sku, a.quantity) for a in await uow.allocations_of(so.id)]
    await uow.move_stock(give=release)


async def on_callback(uow: SupplierUnitOfWork, supplier_id: str, body: dict[str, Any]) -> str:
    """A supplier's signed callback (accepted, rejected, backordered, dispatched)."""
    so = await uow.supplier_order(str(body.get("reference", "")), for_update=True)
    if so is None or so.supplier_id != supplier_id:
        return "unknown_order"
    kind = body["type"]
    ref = body.get("supplier_order_ref") or so.supplier_order_ref
    if kind in ("accepted", "dispatched") and so.state in ("unavailable", "cancelled"):
        # we gave up on this supplier (timeouts) or the customer cancelled, yet it took the
        # order after all: call it off, so the goods are never bought twice
        await uow.set_state(so.id, state="cancel_pending", supplier_order_ref=ref)
        return "cancelling_late_acceptance"
    if kind == "accepted" and so.state in ("sending", "received", "backordered"):
        await _accept(uow, so, ref)
        return "accepted"
    if kind == "rejected" and so.state in ("sending", "received", "backordered"):
        await uow.set_state(
            so.id, state="rejected", failure=str(body.get("reason", ""))[:200], lease_until=None
        )
        uow.count(supplier_id, decided=1)
        await fail_over(uow, so)
        return "rejected"
    if kind == "backordered" and so.state in ("sending", "received"):
        uow.count(supplier_id, decided=1)
        if await fail_over(uow, so, all_or_nothing=True):  # someone else takes every line
            await uow.set_state(so.id, state="cancel_pending", failure="backordered")
            return "failed_over"
        await uow.set_state(
            so.id,
            state="backordered",
            supplier_order_ref=ref,
            lease_until=None,
            next_check_at=_now() + uow.check_after,
        )
        uow.emit(
            ShipmentDelayed(
                order_id=so.order_id,
                supplier_id=supplier_id,
                reason=DelayReason.SUPPLIER_BACKORDER,
                severity=Severity.URGENT,
                expected_by=None,
            )
        )
        return "backordered"
    if kind == "dispatched" and so.state in ("sending", "received", "accepted", "backordered"):
        tracking = str(body.get("tracking_number") or "")
        if not tracking:
            raise ValueError("dispatched callback without tracking_number")
        ship_by = aware(so.ship_by)
        if so.state != "accepted":  # shipping is taking it: confirm first, then dispatch
            ship_by = await _accept(uow, so, ref)
        now = _now()
        carrier = str(body.get("carrier") or "unknown")
        on_time = 1 if ship_by is None or now <= ship_by else 0
        await uow.set_state(
            so.id,
            state="dispatched",
            carrier=carrier,
            tracking_number=tracking,
            dispatched_at=now,
            lease_until=None,
        )
        uow.count(supplier_id, shipped=1, shipped_on_time=on_time)
        allocs = await uow.allocations_of(so.id)
        uow.emit(
            ShipmentDispatched(
                order_id=so.order_id,
                supplier_id=supplier_id,
                carrier=carrier,
                tracking_number=tracking,
                line_ids=[a.line_id for a in allocs],
            )
        )
        return "dispatched"
    return "ignored"


async def _accept(uow: SupplierUnitOfWork, so: Any, ref: str | None) -> datetime:
    """Confirm a supplier order: start its SLA clock and emit `supplier-confirmed`."""
    entry = await uow.supplier(so.supplier_id)
    sla_hours = entry.ship_sla_hours if entry is not None else 48.0
    now = _now()
    ship_by = now + timedelta(hours=sla_hours)
    await uow.set_state(
        so.id,
        state="accepted",
        supplier_order_ref=ref,
        confirmed_at=now,
        ship_by=ship_by,
        sla_hours=sla_hours,
        lease_until=None,
        next_check_at=None,
    )
    if so.state != "backordered":  # a backorder was already counted as a decision
        uow.count(so.supplier_id, decided=1, accepted=1)
    allocs = await uow.allocations_of(so.id)
    uow.emit(
        SupplierConfirmed(
            order_id=so.order_id,
            supplier_id=so.supplier_id,
            supplier_order_ref=ref or so.id,
            lines=[
                ConfirmedLine(
                    line_id=a.line_id, quantity=a.quantity, unit_cost=Decimal(a.unit_cost)
                )
                for a in allocs
            ],
            currency=allocs[0].currency,
            ship_by=ship_by,
        )
    )
    return ship_by


async def record_status(
    uow: SupplierUnitOfWork, supplier_id: str, so_id: str, status: SupplierStatus
) -> str:
    """What the supplier says of an order we have no decision for, applied like its callbacks.

    The callbacks' state guards make this safe to race with a late callback: whichever
    commits first decides, the other changes nothing.
    """
    body: dict[str, Any] = {
        "reference": so_id,
        "supplier_order_ref": status.supplier_order_ref,
        "reason": status.reason,
        "carrier": status.carrier,
        "tracking_number": status.tracking_number,
    }
    steps = {
        "accepted": ["accepted"],
        "rejected": ["rejected"],
        "cancelled": ["rejected"],  # we never asked: as good as a rejection
        "backordered": ["backordered"],
        "dispatched": ["dispatched"],
        "delivered": ["dispatched"],
    }.get(status.status, [])
    outcome = "undecided"
    async with uow:
        for kind in steps:
            outcome = await on_callback(uow, supplier_id, {**body, "type": kind})
        await uow.commit()
    STATUS_CHECKS.labels(outcome).inc()
    return outcome


async def on_tracking(uow: SupplierUnitOfWork, body: dict[str, Any]) -> str:
    so = await uow.by_tracking(str(body["tracking_number"]))
    if so is None:
        return "unknown_tracking_number"
    status = body["status"]
    if status == "exception" and so.state == "dispatched":
        uow.count(so.supplier_id, exceptions=1)
        uow.emit(
            ShipmentDelayed(
                order_id=so.order_id,
                supplier_id=so.supplier_id,
                reason=DelayReason.CARRIER_EXCEPTION,
                severity=Severity.URGENT,
                expected_by=None,
            )
        )
        return "exception"
    if status == "delivered" and so.state == "dispatched":
        when = _parse_time(body.get("occurred_at")) or _now()
        await uow.set_state(so.id, state="delivered", delivered_at=when)
        uow.emit(
            ShipmentDelivered(
                order_id=so.order_id, tracking_number=so.tracking_number, delivered_at=when
            )
        )
        return "delivered"
    return "recorded"


def _parse_time(value: object) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def scan_sla(uow: SupplierUnitOfWork, now: datetime | None = None) -> int:
    """Emit at_risk / no_tracking_by_deadline / major for untracked accepted orders, once each."""
    now = now or _now()
    fired = 0
    SLA_SCANS.inc()
    async with uow:
        for so in await uow.sla_due(now):
            confirmed, ship_by = aware(so.confirmed_at), aware(so.ship_by)
            assert confirmed is not None and ship_by is not None
            window = ship_by - confirmed
            steps: list[tuple[str, DelayReason, Severity]] = []
            if not so.at_risk_sent and now >= confirmed + window * 0.75:
                steps.append(("at_risk_sent", DelayReason.AT_RISK, Severity.NORMAL))
            if not so.deadline_sent and now >= ship_by:
                steps.append(
                    ("deadline_sent", DelayReason.NO_TRACKING_BY_DEADLINE, Severity.URGENT)
                )
            if not so.major_sent and now >= confirmed + window * 2:
                steps.append(("major_sent", DelayReason.NO_TRACKING_BY_DEADLINE, Severity.MAJOR))
            for _, reason, severity in steps:
                uow.emit(
                    ShipmentDelayed(
                        order_id=so.order_id,
                        supplier_id=so.supplier_id,
                        reason=reason,
                        severity=severity,
                        expected_by=ship_by if reason is DelayReason.AT_RISK else None,
                    )
                )
                fired += 1
            if steps:
                await uow.set_state(so.id, **{flag: True for flag, _, _ in steps})
        await uow.commit()
    return fired


async def fold_tallies(uow: SupplierUnitOfWork) -> int:
    """Fold supplier counter increments into the suppliers' rows (housekeeping)."""
    async with uow:
        folded = await uow.fold_tallies()
        await uow.commit()
    return folded
