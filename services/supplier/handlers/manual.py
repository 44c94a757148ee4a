"""A human routes a `needs_attention` or `waiting_supplier` line again, to anyone or to one."""

from __future__ import annotations

from dataclasses import dataclass

from services.supplier.domain import (
    LIVE,
    Line,
    LineBusy,
    NoOfferForLine,
    NotRoutable,
    OrderNotFound,
    RoutingRequest,
    State,
    SupplierNotFound,
    SupplierOrder,
)
from services.supplier.routing import mapped, route, route_to
from services.supplier.store import StockConflict, SupplierUnitOfWork
from shared.events import RoutingFailureReason


@dataclass(frozen=True)
class Routed:
    order_id: str
    line_id: str
    supplier_id: str
    supplier_order_id: str
    state: str


async def route_line(
    uow: SupplierUnitOfWork,
    order_id: str,
    line_id: str,
    supplier_id: str | None = None,
    *,
    accept_negative_margin: bool = False,
) -> Routed:
    """Route the line again: to `supplier_id`, or by the ranking policy. Nothing changes
    unless a supplier order is created (it is then sent like any other)."""
    async with uow:
        request = await uow.routing_requests.get(order_id, for_update=True)
        if request is None:
            raise OrderNotFound(order_id)
        lines = request.lines_named({line_id})
        if not lines:
            raise OrderNotFound(order_id, line_id)
        [line] = await mapped(uow, lines, request.currency)  # a SKU-less line, if now mapped
        if request.cancelled_at is not None:
            raise NotRoutable(line_id, "order_cancelled")
        if await uow.holds.held(order_id):
            raise NotRoutable(line_id, "order_on_hold", " (release the hold first)")
        for so in await uow.supplier_orders.of_order(order_id):
            if so.state in LIVE and any(a.line_id == line_id for a in so.lines):
                raise LineBusy(line_id, so.state.value)
        if supplier_id is None:
            so_id, chosen = await _automatic(uow, request, line, accept_negative_margin)
        else:
            so_id, chosen = await _chosen(uow, request, line, supplier_id, accept_negative_margin)
        await uow.waiting.clear(order_id, [line_id])
        await uow.commit()
    return Routed(order_id, line_id, chosen, so_id, "sending")


async def _automatic(
    uow: SupplierUnitOfWork, request: RoutingRequest, line: Line, accept_negative_margin: bool
) -> tuple[str, str]:
    """By the ranking policy, every supplier eligible again (a human asked)."""
    result = await route(uow, request, [line], {}, place_again=True)
    assert result is not None
    reason = result.failed.get(line.line_id)
    if reason is RoutingFailureReason.NEGATIVE_MARGIN and accept_negative_margin:
        offers = await uow.offers.for_skus({line.sku}, request.currency)
        stocked = sorted(
            (o for o in offers if o.stock >= line.quantity),
            key=lambda o: (o.unit_cost, o.supplier_id),
        )
        if stocked:
            await route_to(uow, request, line, stocked[0])
            return _sending(await uow.supplier_orders.of_order(request.order_id), line.line_id)
        reason = RoutingFailureReason.OUT_OF_STOCK
    if reason is not None:
        raise NotRoutable(line.line_id, reason.value)  # the unit of work rolls everything back
    return _sending(await uow.supplier_orders.of_order(request.order_id), line.line_id)


def _sending(orders: list[SupplierOrder], line_id: str) -> tuple[str, str]:
    """The supplier order now sending `line_id`; `LineBusy` when the supplier it was placed
    with before took it meanwhile (so nothing was placed again)."""
    mine = [so for so in orders if any(a.line_id == line_id for a in so.lines)]
    sending = [so for so in mine if so.state is State.SENDING]
    if sending:
        return sending[0].id, sending[0].supplier_id
    busy = next(so for so in mine if so.state in LIVE)
    raise LineBusy(line_id, busy.state.value)


async def _chosen(
    uow: SupplierUnitOfWork,
    request: RoutingRequest,
    line: Line,
    supplier_id: str,
    accept_negative_margin: bool,
) -> tuple[str, str]:
    """To the chosen supplier's offer, its ranking aside."""
    if await uow.suppliers.get(supplier_id) is None:
        raise SupplierNotFound(supplier_id)
    offers = await uow.offers.for_skus({line.sku}, request.currency)
    offer = next((o for o in offers if o.supplier_id == supplier_id), None)
    if offer is None:
        raise NoOfferForLine(supplier_id, line.sku)
    if offer.unit_cost > line.unit_price and not accept_negative_margin:
        raise NotRoutable(
            line.line_id,
            RoutingFailureReason.NEGATIVE_MARGIN.value,
            f" (costs {offer.unit_cost}, sells at {line.unit_price};"
            " send accept_negative_margin: true to route it anyway)",
        )
    if offer.stock < line.quantity:
        raise NotRoutable(line.line_id, RoutingFailureReason.OUT_OF_STOCK.value)
    try:
        await route_to(uow, request, line, offer)
    except StockConflict:
        raise NotRoutable(line.line_id, RoutingFailureReason.OUT_OF_STOCK.value) from None
    return _sending(await uow.supplier_orders.of_order(request.order_id), line.line_id)
