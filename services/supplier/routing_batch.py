"""Routing many placed orders at once: one read of their candidates, plans in turn, one write.

The same decisions as `routing.route` taking the orders one by one in the same order
(each sees the stock the ones before it took), with the statements of one order: the
supplier orders and allocations of the whole batch are inserted together and the stock
they take is moved summed per (supplier, sku), in that order (`OfferRepository.move_stock`),
so two replicas routing batches cannot lock offer rows crosswise.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping

from services.supplier.domain import Line, Plan, RoutingRequest, plan_in_turn
from services.supplier.routing import REPLANS, WEIGHTS, map_lines, record
from services.supplier.store import StockConflict, SupplierUnitOfWork
from shared.consumer import event_span
from shared.events import Envelope, OrderRoutingFailed, RoutingFailureReason

log = logging.getLogger(__name__)


async def route_placed(
    uow: SupplierUnitOfWork,
    orders: list[RoutingRequest],
    envelopes: Mapping[str, Envelope],
) -> list[Plan]:
    """Route every line of new orders (`route(uow, order, order.lines, {})` for each, in
    turn); unroutable lines are reported with `order-routing-failed`, as one by one, each
    in the trace of the event that placed its order (`envelopes` by order id)."""
    if not orders:
        return []
    todo = await _mapped(uow, orders)
    skus = {ln.sku for lines in todo for ln in lines}
    currencies = {o.currency for o in orders}
    for attempt in range(REPLANS + 1):
        offers = await uow.offers.in_currencies(skus, currencies) if skus else []
        suppliers = await uow.suppliers.infos({o.supplier_id for o in offers})
        wanted = [(lines, o.currency) for lines, o in zip(todo, orders, strict=True)]
        plans = plan_in_turn(wanted, offers, suppliers, WEIGHTS)
        take = [
            (supplier_id, p.line.sku, p.line.quantity)
            for result in plans
            for supplier_id, picks in result.by_supplier.items()
            for p in picks
        ]
        created = await record(uow, list(zip(orders, plans, strict=True)))
        try:  # offer rows are the hottest: locked last, in one order, just before the commit
            await uow.offers.move_stock(take=take)
            break
        except StockConflict:
            await uow.supplier_orders.remove(created)
            uow.withdraw(created)
            if attempt == REPLANS:
                raise
            log.info(
                "stock taken meanwhile, planning the batch again", extra={"orders": len(orders)}
            )
    failed: dict[str, list[str]] = {}
    for order, result in zip(orders, plans, strict=True):
        by_reason: dict[RoutingFailureReason, list[str]] = defaultdict(list)
        for line_id, reason in result.failed.items():
            by_reason[reason].append(line_id)
        with event_span(envelopes[order.order_id]):
            for reason, line_ids in by_reason.items():
                uow.emit(
                    OrderRoutingFailed(order_id=order.order_id, line_ids=line_ids, reason=reason)
                )
                failed.setdefault(order.order_id, []).extend(line_ids)
    await uow.waiting.clear_lines(failed)
    return plans


async def _mapped(uow: SupplierUnitOfWork, orders: list[RoutingRequest]) -> list[list[Line]]:
    """Each order's lines as `routing.mapped` gives them: one look-up per currency."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for o in orders:
        wanted[o.currency].update(e for ln in o.lines for e in ln.external_ids or ())
    skus = {c: await uow.offers.mapped_skus(ids, c) for c, ids in wanted.items() if ids}
    return [map_lines(o.lines, skus.get(o.currency, {})) for o in orders]
