"""Routing: plan order lines onto suppliers, reserve stock, record supplier orders to send.

The ranking policy itself is pure (`services.supplier.domain`); this module applies a
plan inside a unit of work, planning again if a concurrent order took the stock first.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.supplier.domain import Line, Plan, Weights, plan
from services.supplier.store import NewSupplierOrder, StockConflict, SupplierUnitOfWork
from shared.events import OrderRoutingFailed, RoutingFailureReason

log = logging.getLogger(__name__)
WEIGHTS = Weights()
REPLANS = 3
"""Routing plans again at most this often when a concurrent order took the stock it planned on."""


@dataclass(frozen=True, slots=True)
class RouteOrder:
    """What routing needs of an order besides its lines."""

    id: str
    currency: str
    ship_country: str
    ship_postal_code: str

    @classmethod
    def of(cls, request: Any) -> RouteOrder:
        return cls(
            request.order_id, request.currency, request.ship_country, request.ship_postal_code
        )


async def route(
    uow: SupplierUnitOfWork,
    order: RouteOrder,
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
        offers = await uow.offers_for({ln.sku for ln in lines}, order.currency)
        suppliers = await uow.supplier_infos({o.supplier_id for o in offers})
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
            await uow.move_stock(take=take, give=release or ())
            break
        except StockConflict:
            await uow.drop_supplier_orders(created)
            if attempt == REPLANS:
                raise
            log.info("stock taken meanwhile, planning again", extra={"order_id": order.id})
    by_reason: dict[RoutingFailureReason, list[str]] = defaultdict(list)
    for line_id, reason in result.failed.items():
        by_reason[reason].append(line_id)
    for reason, line_ids in by_reason.items():
        uow.emit(OrderRoutingFailed(order_id=order.id, line_ids=line_ids, reason=reason))
    return result


async def _record(uow: SupplierUnitOfWork, order: RouteOrder, result: Plan) -> list[str]:
    now = datetime.now(UTC)
    orders: list[dict[str, Any]] = []
    allocations: list[dict[str, Any]] = []
    sends: list[NewSupplierOrder] = []
    for supplier_id, picks in result.by_supplier.items():
        so_id = f"so_{uuid.uuid4().hex}"
        orders.append(
            {"id": so_id, "order_id": order.id, "supplier_id": supplier_id, "created_at": now}
        )
        allocations += [
            {
                "supplier_order_id": so_id,
                "order_id": order.id,
                "line_id": p.line.line_id,
                "sku": p.line.sku,
                "supplier_sku": p.offer.supplier_sku,
                "quantity": p.line.quantity,
                "unit_cost": p.offer.unit_cost,
                "unit_price": p.line.unit_price,
                "currency": order.currency,
            }
            for p in picks
        ]
        sends.append(
            NewSupplierOrder(
                so_id,
                order.id,
                supplier_id,
                tuple((p.offer.supplier_sku, p.line.quantity) for p in picks),
                order.ship_country,
                order.ship_postal_code,
            )
        )
    await uow.add_supplier_orders(orders, allocations, sends)
    return [str(o["id"]) for o in orders]


async def fail_over(
    uow: SupplierUnitOfWork, so: Any, *, restock: bool = True, all_or_nothing: bool = False
) -> bool:
    """Give the lines of a failed supplier order to the next-ranked suppliers.

    False when nothing moved: the order was cancelled, or (`all_or_nothing`) some line
    has no other supplier.
    """
    request = await uow.request(so.order_id)
    if request is None or request.cancelled_at is not None:
        return False
    allocs = await uow.allocations_of(so.id)
    failed_ids = {a.line_id for a in allocs}
    lines = [ln for ln in uow.lines_of(request) if ln.line_id in failed_ids]
    history = await uow.failed_suppliers_by_line(so.order_id)
    excluded = {ln.line_id: history.get(ln.line_id, frozenset()) | {so.supplier_id} for ln in lines}
    release = [(so.supplier_id, a.sku, a.quantity) for a in allocs] if restock else []
    moved = await route(
        uow, RouteOrder.of(request), lines, excluded, release=release, all_or_nothing=all_or_nothing
    )
    return moved is not None
