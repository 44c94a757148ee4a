"""Routing: plan order lines onto suppliers, reserve stock, record supplier orders to send.

The ranking policy itself is pure (`services.supplier.domain.routing_policy`); this module
applies a plan inside a unit of work, planning again if a concurrent order took the stock
first. It never commits: the calling handler's unit of work does.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from services.supplier.domain import (
    AllocatedLine,
    Line,
    Plan,
    RoutingRequest,
    SupplierOrder,
    Weights,
    plan,
)
from services.supplier.store import NewSupplierOrder, StockConflict, SupplierUnitOfWork
from shared.events import OrderRoutingFailed, RoutingFailureReason

log = logging.getLogger(__name__)
WEIGHTS = Weights()
REPLANS = 3
"""Routing plans again at most this often when a concurrent order took the stock it planned on."""


async def route(
    uow: SupplierUnitOfWork,
    order: RoutingRequest,
    lines: list[Line],
    excluded: dict[str, frozenset[str]],
    *,
    release: list[tuple[str, str, int]] | None = None,
    all_or_nothing: bool = False,
) -> Plan | None:
    """Plan lines onto suppliers, reserve stock, record supplier orders to send.

    `release` is stock to give back in the same pass (a failed supplier's allocation).
    With `all_or_nothing`, nothing happens (None) unless every line finds a supplier;
    otherwise unroutable lines are reported with `order-routing-failed`.
    """
    if not lines:
        return Plan()
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
        created = await _record(uow, order, result)
        try:  # offer rows are the hottest: locked last, just before the commit
            await uow.offers.move_stock(take=take, give=release or ())
            break
        except StockConflict:
            await uow.supplier_orders.remove(created)
            uow.withdraw(created)
            if attempt == REPLANS:
                raise
            log.info("stock taken meanwhile, planning again", extra={"order_id": order.order_id})
    by_reason: dict[RoutingFailureReason, list[str]] = defaultdict(list)
    for line_id, reason in result.failed.items():
        by_reason[reason].append(line_id)
    for reason, line_ids in by_reason.items():
        uow.emit(OrderRoutingFailed(order_id=order.order_id, line_ids=line_ids, reason=reason))
    return result


async def _record(uow: SupplierUnitOfWork, order: RoutingRequest, result: Plan) -> list[str]:
    """A supplier order per supplier of the plan, sent by this process once committed."""
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
        for supplier_id, picks in result.by_supplier.items()
    ]
    await uow.supplier_orders.add_all(orders)
    uow.dispatch_after_commit([to_send(so, order) for so in orders])
    return [so.id for so in orders]


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
) -> bool:
    """Give the lines of a failed supplier order to the next-ranked suppliers.

    False when nothing moved: the order was cancelled, or (`all_or_nothing`) some line
    has no other supplier.
    """
    request = await uow.routing_requests.get(so.order_id)
    if request is None or request.cancelled_at is not None:
        return False
    lines = request.lines_named({a.line_id for a in so.lines})
    history = await uow.supplier_orders.passed_over(so.order_id)
    excluded = {ln.line_id: history.get(ln.line_id, frozenset()) | {so.supplier_id} for ln in lines}
    release = [(so.supplier_id, a.sku, a.quantity) for a in so.lines] if restock else []
    moved = await route(
        uow, request, lines, excluded, release=release, all_or_nothing=all_or_nothing
    )
    return moved is not None
