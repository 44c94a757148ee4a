"""Consumed events: a placed order is routed onto suppliers, a cancelled one is called off,
a held one is parked until released."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from services.supplier.domain import Action, Line, RoutingRequest
from services.supplier.handlers.waiting import live_lines
from services.supplier.routing import PERMANENT, route
from services.supplier.routing_batch import route_placed
from services.supplier.store import SupplierUnitOfWork
from shared.events import Envelope, OrderCancelled, OrderHeld, OrderPlaced, OrderReleased


def _request(data: OrderPlaced, received_at: datetime) -> RoutingRequest:
    return RoutingRequest(
        order_id=data.order_id,
        currency=data.currency,
        lines=[
            Line(
                ln.line_id,
                ln.sku,
                ln.quantity,
                ln.unit_price,
                None if ln.external_ids is None else tuple(ln.external_ids),
            )
            for ln in data.lines
        ],
        ship_country=data.shipping_country,
        ship_postal_code=data.shipping_postal_code,
        placed_at=data.placed_at,
        received_at=received_at,
    )


async def on_orders_placed(
    batch: Sequence[tuple[Envelope, OrderPlaced]], uow: SupplierUnitOfWork
) -> None:
    """`on_order_placed` for each, in this order, with set-based reads and writes: a
    repeated order is routed once (the first), cancelled ones never, held ones parked."""
    now = datetime.now(UTC)
    requests: dict[str, RoutingRequest] = {}
    for _, data in batch:
        requests.setdefault(data.order_id, _request(data, now))
    await uow.routing_requests.lock_orders(list(requests))  # cancellations racing them win
    kept = await uow.routing_requests.add_many(list(requests.values()))
    new = [r for r in requests.values() if r.order_id in kept]
    cancelled = await uow.routing_requests.cancelled_of([r.order_id for r in new])
    new = [r for r in new if r.order_id not in cancelled]
    held = await uow.holds.held_of([r.order_id for r in new])
    for r in new:
        if r.order_id in held:  # the hold was consumed first: park it all
            await uow.holds.park(r.order_id, [ln.line_id for ln in r.lines])
    envelopes = {data.order_id: envelope for envelope, data in reversed(batch)}  # the first
    await route_placed(uow, [r for r in new if r.order_id not in held], envelopes)


async def on_order_placed(envelope: Envelope, data: OrderPlaced, uow: SupplierUnitOfWork) -> None:
    await uow.routing_requests.lock_order(data.order_id)  # a cancellation racing it wins
    request = _request(data, datetime.now(UTC))
    if await uow.routing_requests.add(request) and not await uow.routing_requests.was_cancelled(
        data.order_id
    ):
        if await uow.holds.held(data.order_id):  # the hold was consumed first: park it all
            await uow.holds.park(data.order_id, [ln.line_id for ln in request.lines])
            return
        await route(uow, request, request.lines, {})


async def on_order_held(envelope: Envelope, data: OrderHeld, uow: SupplierUnitOfWork) -> None:
    """Nothing more is routed for the order until it is released (remembered even before
    the order arrives: topics are per event type)."""
    await uow.holds.hold(data.order_id, data.held_at)


async def on_order_released(
    envelope: Envelope, data: OrderReleased, uow: SupplierUnitOfWork
) -> None:
    """Route what was parked while the order was held."""
    parked = await uow.holds.release(data.order_id, data.released_at)
    request = await uow.routing_requests.get(data.order_id, for_update=True)
    if not parked or request is None or request.cancelled_at is not None:
        return
    live = await live_lines(uow, data.order_id)
    lines = [ln for ln in request.lines_named(set(parked)) if ln.line_id not in live]
    permanent = await uow.supplier_orders.passed_over(data.order_id, PERMANENT, for_good=True)
    await route(uow, request, lines, permanent, permanent=permanent)


async def on_order_cancelled(
    envelope: Envelope, data: OrderCancelled, uow: SupplierUnitOfWork
) -> None:
    """Every live supplier order of the order is called off and its stock given back."""
    # topics are per event type: the cancellation may be consumed before the order itself,
    # so it is remembered and an order-placed arriving later is never routed
    await uow.routing_requests.lock_order(data.order_id)
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
