"""Consumed events: a placed order is routed onto suppliers, a cancelled one is called off."""

from __future__ import annotations

from datetime import UTC, datetime

from services.supplier.domain import Action, Line, RoutingRequest
from services.supplier.routing import route
from services.supplier.store import SupplierUnitOfWork
from shared.events import Envelope, OrderCancelled, OrderPlaced


async def on_order_placed(envelope: Envelope, data: OrderPlaced, uow: SupplierUnitOfWork) -> None:
    request = RoutingRequest(
        order_id=data.order_id,
        currency=data.currency,
        lines=[Line(ln.line_id, ln.sku, ln.quantity, ln.unit_price) for ln in data.lines],
        ship_country=data.shipping_country,
        ship_postal_code=data.shipping_postal_code,
        placed_at=data.placed_at,
        received_at=datetime.now(UTC),
    )
    if await uow.routing_requests.add(request) and not await uow.routing_requests.was_cancelled(
        data.order_id
    ):
        await route(uow, request, request.lines, {})


async def on_order_cancelled(
    envelope: Envelope, data: OrderCancelled, uow: SupplierUnitOfWork
) -> None:
    """Every live supplier order of the order is called off and its stock given back."""
    # topics are per event type: the cancellation may be consumed before the order itself,
    # so it is remembered and an order-placed arriving later is never routed
    await uow.routing_requests.remember_cancellation(data.order_id, data.reason)
    await uow.waiting.clear(data.order_id)
    if await uow.routing_requests.get(data.order_id, for_update=True) is None:
        return
    release: list[tuple[str, str, int]] = []
    for so in await uow.supplier_orders.of_order(data.order_id):
        if not so.can(Action.CALL_OFF):
            continue  # shipped, failed or already called off: nothing to take back
        so.call_off()
        await uow.supplier_orders.save(so)
        release += [(so.supplier_id, a.sku, a.quantity) for a in so.lines]
    await uow.offers.move_stock(give=release)
