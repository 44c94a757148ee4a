"""Routing: plan order lines onto suppliers, reserve stock, record supplier orders to send.

The ranking policy itself is pure (`services.supplier.domain.routing_policy`); this module
applies a plan inside a unit of work, planning again if a concurrent order took the stock
first. It never commits: the calling handler's unit of work does.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime

from services.supplier.domain import (
    PASSED_OVER,
    Action,
    AllocatedLine,
    Line,
    Offer,
    Pick,
    Plan,
    RoutingRequest,
    State,
    SupplierInfo,
    SupplierOrder,
    Weights,
    could_wait,
    plan,
)
from services.supplier.store import NewSupplierOrder, StockConflict, SupplierUnitOfWork
from shared.events import (
    OrderLinesWaiting,
    OrderRoutingFailed,
    RoutingFailureReason,
    WaitingReason,
)

log = logging.getLogger(__name__)
WEIGHTS = Weights()
REPLANS = 3
"""Routing plans again at most this often when a concurrent order took the stock it planned on."""
PERMANENT = PASSED_OVER - {State.UNAVAILABLE}
"""A supplier that failed a line in one of these will not take it by waiting."""


async def route(
    uow: SupplierUnitOfWork,
    order: RoutingRequest,
    lines: list[Line],
    excluded: dict[str, frozenset[str]],
    *,
    release: list[tuple[str, str, int]] | None = None,
    all_or_nothing: bool = False,
    permanent: dict[str, frozenset[str]] | None = None,
    waiting: WaitingReason = WaitingReason.SERVER_ERROR,
    place_again: bool = False,
) -> Plan | None:
    """Plan lines onto suppliers, reserve stock, record supplier orders to send.

    `release` is stock to give back in the same pass (a failed supplier's allocation).
    With `all_or_nothing`, nothing happens (None) unless every line finds a supplier;
    otherwise an unroutable line waits (`order-lines-waiting`, reason `waiting`) when a
    supplier outside `permanent` (those that failed it for good) could take it once
    reachable again, and is reported with `order-routing-failed` when none could.
    A line planned onto a supplier that never answered it goes out again under that
    supplier order's id (the idempotency key) when routed again after waiting or a
    failover (`permanent` given) or by a human (`place_again`).
    """
    if not lines:
        return Plan()
    lines = await mapped(uow, lines, order.currency)
    # lines routed again (waiting, failed over) may go back to a supplier that never
    # answered them: that supplier order is placed again under its own key
    again_ok = permanent is not None or place_again
    unanswered = await _unanswered(uow, order.order_id) if again_ok else []
    for attempt in range(REPLANS + 1):
        offers = await uow.offers.for_skus({ln.sku for ln in lines}, order.currency)
        suppliers = await uow.suppliers.infos({o.supplier_id for o in offers})
        result = plan(lines, offers, suppliers, order.currency, WEIGHTS, excluded)
        if all_or_nothing and result.failed:
            return None
        take = [
            (supplier_id, p.line.sku, p.line.quantity)
            for supplier_id, picks in result.by_supplier.items()
            for p in picks
        ]
        fresh, again = _split(result, unanswered)
        created = await _record(uow, order, fresh)
        try:  # offer rows are the hottest: locked last, just before the commit
            await uow.offers.move_stock(take=take, give=release or ())
            await _resend(uow, order, again)
            break
        except StockConflict:
            await uow.supplier_orders.remove(created)
            uow.withdraw(created)
            if attempt == REPLANS:
                raise
            log.info("stock taken meanwhile, planning again", extra={"order_id": order.order_id})
    by_reason: dict[RoutingFailureReason, list[str]] = defaultdict(list)
    parked: list[str] = []
    released: dict[tuple[str, str], int] = defaultdict(int)
    for supplier_id, sku, quantity in release or ():
        released[(supplier_id, sku)] += quantity
    for line_id, reason in result.failed.items():
        line = next(ln for ln in lines if ln.line_id == line_id)  # as mapped
        if permanent is not None and _can_wait(order, line, offers, suppliers, permanent, released):
            parked.append(line_id)
        else:
            by_reason[reason].append(line_id)
    for reason, line_ids in by_reason.items():
        uow.emit(OrderRoutingFailed(order_id=order.order_id, line_ids=line_ids, reason=reason))
        await uow.waiting.clear(order.order_id, line_ids)
    if parked:
        await park(uow, order.order_id, parked, waiting)
    return result


async def mapped(uow: SupplierUnitOfWork, lines: list[Line], currency: str) -> list[Line]:
    """SKU-less marketplace lines under the SKU an offer maps their platform ids to (the most
    specific id first); the others unchanged (unmapped ones fail `unmapped_sku`)."""
    wanted = {e for ln in lines for e in ln.external_ids or ()}
    return map_lines(lines, await uow.offers.mapped_skus(wanted, currency))


def map_lines(lines: list[Line], skus: dict[str, str]) -> list[Line]:
    """`mapped`, given which SKU each platform id maps to."""
    out = []
    for line in lines:
        sku = next((skus[e] for e in line.external_ids or () if e in skus), None)
        out.append(line if sku is None else replace(line, sku=sku, external_ids=None))
    return out


def _can_wait(
    order: RoutingRequest,
    line: Line,
    offers: list[Offer],
    suppliers: dict[str, SupplierInfo],
    permanent: dict[str, frozenset[str]],
    released: dict[tuple[str, str], int],
) -> bool:
    excluded = permanent.get(line.line_id, frozenset())
    return could_wait(line, offers, suppliers, order.currency, excluded, released)


async def park(
    uow: SupplierUnitOfWork, order_id: str, line_ids: list[str], reason: WaitingReason
) -> None:
    """Lines every candidate of which is temporarily unavailable wait (`waiting_supplier`)
    and are routed again by themselves; `order-lines-waiting` once when they start."""
    now = datetime.now(UTC)
    fresh, since = await uow.waiting.wait(
        order_id,
        line_ids,
        reason.value,
        now,
        retry_after_s=uow.retry_waiting_s,
        max_retry_s=uow.retry_waiting_max_s,
    )
    log.info("lines waiting for a supplier (%s)", reason.value, extra={"order_id": order_id})
    if fresh:
        uow.emit(OrderLinesWaiting(order_id=order_id, line_ids=fresh, reason=reason, since=since))


async def route_to(
    uow: SupplierUnitOfWork, order: RoutingRequest, line: Line, offer: Offer
) -> None:
    """Give one line to a chosen offer (a human's choice: margin and ranking aside);
    `StockConflict` when the supplier has too little stock left. A supplier order of
    that supplier that never answered this very line goes out again under its own id."""
    result = Plan(by_supplier={offer.supplier_id: [Pick(line, offer)]})
    fresh, again = _split(result, await _unanswered(uow, order.order_id))
    await _record(uow, order, fresh)
    await uow.offers.move_stock(take=[(offer.supplier_id, line.sku, line.quantity)])
    await _resend(uow, order, again)


async def _record(uow: SupplierUnitOfWork, order: RoutingRequest, result: Plan) -> list[str]:
    return await record(uow, [(order, result)])


async def record(uow: SupplierUnitOfWork, plans: list[tuple[RoutingRequest, Plan]]) -> list[str]:
    """A supplier order per supplier of each plan (written together), sent by this process
    once committed."""
    now = datetime.now(UTC)
    orders = [
        SupplierOrder.place(
            f"so_{uuid.uuid4().hex}",
            order.order_id,
            supplier_id,
            [
                AllocatedLine(
                    p.line.line_id,
                    p.line.sku,
                    p.offer.supplier_sku,
                    p.line.quantity,
                    p.offer.unit_cost,
                    p.line.unit_price,
                    order.currency,
                )
                for p in picks
            ],
            now=now,
            lease_until=now + uow.lease,
        )
        for order, result in plans
        for supplier_id, picks in result.by_supplier.items()
    ]
    await uow.supplier_orders.add_all(orders)
    requests = {order.order_id: order for order, _ in plans}
    uow.dispatch_after_commit([to_send(so, requests[so.order_id]) for so in orders])
    return [so.id for so in orders]


async def _unanswered(uow: SupplierUnitOfWork, order_id: str) -> list[SupplierOrder]:
    """The order's supplier orders no supplier answered usably (timeouts, 5xx, open
    breaker), newest first."""
    found = await uow.supplier_orders.of_order(order_id)
    return [so for so in reversed(found) if so.state is State.UNAVAILABLE]


def _split(result: Plan, unanswered: list[SupplierOrder]) -> tuple[Plan, list[SupplierOrder]]:
    """The plan's picks that need a new supplier order, and the unanswered supplier
    orders that place exactly the same lines (SKU, quantity) at the same supplier."""
    if not unanswered:
        return result, []
    fresh: dict[str, list[Pick]] = {}
    again: list[SupplierOrder] = []
    for supplier_id, picks in result.by_supplier.items():
        left = {p.line.line_id: p for p in picks}
        for so in unanswered:
            if so.supplier_id == supplier_id and all(
                (p := left.get(a.line_id)) is not None
                and (p.offer.supplier_sku, p.line.quantity) == (a.supplier_sku, a.quantity)
                for a in so.lines
            ):
                again.append(so)
                for a in so.lines:
                    del left[a.line_id]
        if left:
            fresh[supplier_id] = list(left.values())
    return Plan(by_supplier=fresh, failed=result.failed), again


async def _resend(
    uow: SupplierUnitOfWork, order: RoutingRequest, again: list[SupplierOrder]
) -> None:
    """Place unanswered supplier orders again under their own ids (the idempotency key):
    a supplier that took one when our call timed out answers with that order."""
    lease_until = datetime.now(UTC) + uow.lease
    send: list[NewSupplierOrder] = []
    taken: list[tuple[str, str, int]] = []
    for seen in again:
        so = await uow.supplier_orders.get(seen.id, for_update=True)
        if so is None or not so.can(Action.RESEND):  # the supplier's answer came meanwhile
            taken.extend((seen.supplier_id, a.sku, a.quantity) for a in seen.lines)
            continue
        so.resend(lease_until)
        await uow.supplier_orders.save(so)
        send.append(to_send(so, order))
    if taken:  # its lines are with that order: the stock planned for them goes back
        await uow.offers.move_stock(give=taken)
    uow.dispatch_after_commit(send)


def to_send(so: SupplierOrder, order: RoutingRequest) -> NewSupplierOrder:
    """What the dispatcher needs to place `so` at its supplier."""
    return NewSupplierOrder(
        so.id,
        so.order_id,
        so.supplier_id,
        tuple((a.supplier_sku, a.quantity) for a in so.lines),
        order.ship_country,
        order.ship_postal_code,
    )


async def fail_over(
    uow: SupplierUnitOfWork,
    so: SupplierOrder,
    *,
    restock: bool = True,
    all_or_nothing: bool = False,
    waiting: WaitingReason = WaitingReason.SERVER_ERROR,
) -> bool:
    """Give the lines of a failed supplier order to the next-ranked suppliers; lines none
    can take now but a temporarily unavailable one could later wait (reason `waiting`).

    False when nothing moved: the order was cancelled, or (`all_or_nothing`) some line
    has no other supplier.
    """
    # locked: a cancellation consumed meanwhile either committed first (and is seen here) or
    # waits for this failover to commit (and then calls off what it routed)
    request = await uow.routing_requests.get(so.order_id, for_update=True)
    if request is None or request.cancelled_at is not None:
        return False
    lines = request.lines_named({a.line_id for a in so.lines})
    if await uow.holds.held(so.order_id):
        if all_or_nothing:
            return False
        # held: nothing more is routed; the lines go out again when it is released
        if restock:
            await uow.offers.move_stock(
                give=[(so.supplier_id, a.sku, a.quantity) for a in so.lines]
            )
        await uow.holds.park(so.order_id, [ln.line_id for ln in lines])
        return True
    history = await uow.supplier_orders.passed_over(so.order_id)
    excluded = {ln.line_id: history.get(ln.line_id, frozenset()) | {so.supplier_id} for ln in lines}
    permanent = await uow.supplier_orders.passed_over(so.order_id, PERMANENT, for_good=True)
    if so.state in PERMANENT:
        permanent = {
            ln.line_id: permanent.get(ln.line_id, frozenset()) | {so.supplier_id} for ln in lines
        }
    release = [(so.supplier_id, a.sku, a.quantity) for a in so.lines] if restock else []
    moved = await route(
        uow,
        request,
        lines,
        excluded,
        release=release,
        all_or_nothing=all_or_nothing,
        permanent=permanent,
        waiting=waiting,
    )
    return moved is not None
