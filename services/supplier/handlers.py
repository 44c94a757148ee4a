"""Supplier service handlers: routing, failover, supplier callbacks, tracking, the SLA clock.

Every handler runs inside one unit of work and never calls a supplier: it records
supplier orders as `to_send` (or `cancel_pending`), and the dispatcher
(`services.supplier.dispatcher`) makes the calls outside any transaction, with the
supplier order id as the idempotency key, then records the outcome here.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.supplier.adapter import Outcome, OutOfStock, Received, Rejected
from services.supplier.domain import Line, Weights, plan
from services.supplier.store import SupplierUnitOfWork, aware
from shared.events import (
    ConfirmedLine,
    DelayReason,
    Envelope,
    EventData,
    OrderCancelled,
    OrderPlaced,
    OrderRoutingFailed,
    RoutingFailureReason,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)
from shared.uow import UnitOfWork

WEIGHTS = Weights()
SCANS = 0
"""SLA scans run by this process (observability and tests)."""


def _now() -> datetime:
    return datetime.now(UTC)


async def on_order_placed(envelope: Envelope, data: EventData, uow: UnitOfWork) -> None:
    assert isinstance(data, OrderPlaced) and isinstance(uow, SupplierUnitOfWork)
    fresh = await uow.add_request(
        {
            "order_id": data.order_id,
            "currency": data.currency,
            "lines": [
                {
                    "line_id": ln.line_id,
                    "sku": ln.sku,
                    "quantity": ln.quantity,
                    "unit_price": str(ln.unit_price),
                }
                for ln in data.lines
            ],
            "ship_country": data.shipping_country,
            "ship_postal_code": data.shipping_postal_code,
            "placed_at": data.placed_at,
            "received_at": _now(),
        }
    )
    if fresh and not await uow.was_cancelled(data.order_id):
        request = await uow.request(data.order_id)
        await route(uow, data.order_id, data.currency, uow.lines_of(request), {})


async def route(
    uow: SupplierUnitOfWork,
    order_id: str,
    currency: str,
    lines: list[Line],
    excluded: dict[str, frozenset[str]],
) -> list[str]:
    """Plan lines onto suppliers, reserve stock, queue supplier orders; returns unroutable lines."""
    if not lines:
        return []
    offers = await uow.offers_for({ln.sku for ln in lines}, currency)
    suppliers = await uow.supplier_infos({o.supplier_id for o in offers})
    result = plan(lines, offers, suppliers, currency, WEIGHTS, excluded)
    now = _now()
    for supplier_id, picks in result.by_supplier.items():
        so_id = f"so_{uuid.uuid4().hex}"
        await uow.add_supplier_order(
            {
                "id": so_id,
                "order_id": order_id,
                "supplier_id": supplier_id,
                "state": "to_send",
                "created_at": now,
            },
            [
                {
                    "supplier_order_id": so_id,
                    "order_id": order_id,
                    "line_id": p.line.line_id,
                    "sku": p.line.sku,
                    "supplier_sku": p.offer.supplier_sku,
                    "quantity": p.line.quantity,
                    "unit_cost": p.offer.unit_cost,
                    "unit_price": p.line.unit_price,
                    "currency": currency,
                }
                for p in picks
            ],
        )
        for p in sorted(picks, key=lambda p: p.line.sku):  # stable lock order: no deadlocks
            await uow.adjust_stock(supplier_id, p.line.sku, -p.line.quantity)
    by_reason: dict[RoutingFailureReason, list[str]] = defaultdict(list)
    for line_id, reason in result.failed.items():
        by_reason[reason].append(line_id)
    for reason, line_ids in by_reason.items():
        uow.emit(OrderRoutingFailed(order_id=order_id, line_ids=line_ids, reason=reason))
    return list(result.failed)


async def fail_over(uow: SupplierUnitOfWork, so: Any, *, restock: bool = True) -> list[str]:
    """Give the lines of a failed supplier order to the next-ranked suppliers."""
    request = await uow.request(so.order_id)
    if request is None or request.cancelled_at is not None:
        return []
    allocs = await uow.allocations_of(so.id)
    if restock:
        for a in allocs:
            await uow.adjust_stock(so.supplier_id, a.sku, a.quantity)
    failed_ids = {a.line_id for a in allocs}
    lines = [ln for ln in uow.lines_of(request) if ln.line_id in failed_ids]
    excluded = await uow.failed_suppliers_by_line(so.order_id)
    return await route(uow, so.order_id, request.currency, lines, excluded)


async def record_send(uow: SupplierUnitOfWork, so_id: str, outcome: Outcome) -> None:
    """The dispatcher's result of placing a supplier order."""
    async with uow:
        so = await uow.supplier_order(so_id, for_update=True)
        if so is None or so.state != "sending":
            return  # a callback or a cancel got there first
        if isinstance(outcome, Received):
            await uow.set_state(
                so_id,
                state="received",
                supplier_order_ref=outcome.supplier_order_ref,
                sent_at=_now(),
                lease_until=None,
            )
        else:
            state = {OutOfStock: "out_of_stock", Rejected: "rejected"}.get(
                type(outcome), "unavailable"
            )
            await uow.set_state(so_id, state=state, failure=_describe(outcome), lease_until=None)
            if isinstance(outcome, OutOfStock):
                skus = [
                    a.sku for a in await uow.allocations_of(so_id) if a.supplier_sku in outcome.skus
                ]
                await uow.set_stock(so.supplier_id, skus, 0)  # learn: the supplier has none
            if isinstance(outcome, Rejected):
                await uow.count(so.supplier_id, decided=1)
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


async def on_order_cancelled(envelope: Envelope, data: EventData, uow: UnitOfWork) -> None:
    assert isinstance(data, OrderCancelled) and isinstance(uow, SupplierUnitOfWork)
    # topics are per event type: the cancellation may be consumed before the order itself,
    # so it is remembered and an order-placed arriving later is never routed
    await uow.remember_cancellation(data.order_id, data.reason)
    request = await uow.request(data.order_id, for_update=True)
    if request is None:
        return
    for so in await uow.orders_of(data.order_id):
        if so.state in ("to_send",):
            await uow.set_state(so.id, state="cancelled")
        elif so.state in ("sending", "received", "accepted", "backordered"):
            await uow.set_state(so.id, state="cancel_pending")
        else:
            continue
        for a in await uow.allocations_of(so.id):
            await uow.adjust_stock(so.supplier_id, a.sku, a.quantity)


async def on_callback(uow: SupplierUnitOfWork, supplier_id: str, body: dict[str, Any]) -> str:
    """A supplier's signed callback (accepted, rejected, backordered, dispatched)."""
    so = await uow.supplier_order(str(body.get("reference", "")), for_update=True)
    if so is None or so.supplier_id != supplier_id:
        return "unknown_order"
    kind, now = body["type"], _now()
    active = so.state in ("sending", "received", "accepted", "backordered")
    if kind in ("accepted", "dispatched") and so.state in ("unavailable", "cancelled"):
        # we gave up on this supplier (timeouts) or the customer cancelled, yet it took the
        # order after all: call it off, so the goods are never bought twice
        await uow.set_state(
            so.id,
            state="cancel_pending",
            supplier_order_ref=body.get("supplier_order_ref") or so.supplier_order_ref,
        )
        return "cancelling_late_acceptance"
    if kind == "accepted" and so.state in ("sending", "received", "backordered"):
        row = await uow.supplier_row(supplier_id)
        ship_by = now + timedelta(hours=float(row.ship_sla_hours))
        await uow.set_state(
            so.id,
            state="accepted",
            supplier_order_ref=body.get("supplier_order_ref") or so.supplier_order_ref,
            confirmed_at=now,
            ship_by=ship_by,
            sla_hours=float(row.ship_sla_hours),
            lease_until=None,
        )
        if so.state != "backordered":  # a backorder was already counted as a decision
            await uow.count(supplier_id, decided=1, accepted=1)
        allocs = await uow.allocations_of(so.id)
        uow.emit(
            SupplierConfirmed(
                order_id=so.order_id,
                supplier_id=supplier_id,
                supplier_order_ref=body.get("supplier_order_ref") or so.supplier_order_ref or so.id,
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
        return "accepted"
    if kind == "rejected" and active and so.state != "accepted":
        await uow.set_state(
            so.id, state="rejected", failure=str(body.get("reason", ""))[:200], lease_until=None
        )
        await uow.count(supplier_id, decided=1)
        await fail_over(uow, so)
        return "rejected"
    if kind == "backordered" and so.state in ("sending", "received"):
        await uow.count(supplier_id, decided=1)
        request = await uow.request(so.order_id)
        allocs = await uow.allocations_of(so.id)
        lines = [ln for ln in uow.lines_of(request) if ln.line_id in {a.line_id for a in allocs}]
        excluded = await uow.failed_suppliers_by_line(so.order_id)
        excluded = {
            ln.line_id: excluded.get(ln.line_id, frozenset()) | {supplier_id} for ln in lines
        }
        offers = await uow.offers_for({ln.sku for ln in lines}, request.currency)
        alternatives = plan(
            lines,
            offers,
            await uow.supplier_infos({o.supplier_id for o in offers}),
            request.currency,
            WEIGHTS,
            excluded,
        )
        if not alternatives.failed:  # someone else can take every line: move them
            await uow.set_state(so.id, state="cancel_pending", failure="backordered")
            await fail_over(uow, so)
            return "failed_over"
        await uow.set_state(
            so.id,
            state="backordered",
            supplier_order_ref=body.get("supplier_order_ref"),
            lease_until=None,
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
        tracking, carrier = (
            str(body.get("tracking_number") or ""),
            str(body.get("carrier") or "unknown"),
        )
        if not tracking:
            raise ValueError("dispatched callback without tracking_number")
        deadline = aware(so.ship_by)
        on_time = 1 if deadline is None or now <= deadline else 0
        await uow.set_state(
            so.id, state="dispatched", carrier=carrier, tracking_number=tracking, dispatched_at=now
        )
        await uow.count(supplier_id, shipped=1, shipped_on_time=on_time)
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


async def on_tracking(uow: SupplierUnitOfWork, body: dict[str, Any]) -> str:
    so = await uow.by_tracking(str(body["tracking_number"]))
    if so is None:
        return "unknown_tracking_number"
    status = body["status"]
    if status == "exception" and so.state == "dispatched":
        await uow.count(so.supplier_id, exceptions=1)
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
    global SCANS
    now = now or _now()
    fired = 0
    SCANS += 1
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
