"""Order service handlers: one unit of work each; they decide, the API and consumers translate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from services.order.domain import (
    Contact,
    Order,
    OrderError,
    OrderNotFound,
    PlaceOrder,
)
from services.order.repository import OrderFilter, TimelineEntry, rotate_pii_batch
from services.order.store import OrderUnitOfWork
from shared.consumer import PermanentError
from shared.events import Envelope, OrderEvent

Render = Callable[[Order], dict[str, Any]]


class IdempotencyConflict(OrderError):
    """The Idempotency-Key was already used with a different request body."""


class DuplicateExternalOrder(OrderError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"an order with this channel and external_id exists: {order_id}")
        self.order_id = order_id


@dataclass(frozen=True)
class Idempotency:
    scope: str
    key: str
    request_hash: str


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


async def place_order(
    cmd: PlaceOrder,
    uow: OrderUnitOfWork,
    render: Render,
    *,
    idempotency: Idempotency | None = None,
    existing_external: str = "conflict",
) -> Outcome:
    """Create an order once.

    - Same Idempotency-Key and body: the first response, nothing new created.
    - Same key, other body: `IdempotencyConflict`.
    - An order with the same channel + external_id: `DuplicateExternalOrder`, or for
      marketplace webhooks (`existing_external="return"`) that order with 200.
    """
    try:
        return await _place(cmd, uow, render, idempotency, existing_external)
    except IntegrityError:
        # A concurrent request created the same external order first: answer as if
        # this one had arrived second (the unique constraint decided the race).
        if cmd.external_id is None:
            raise
        return await _place(cmd, uow, render, idempotency, existing_external)


async def _place(
    cmd: PlaceOrder,
    uow: OrderUnitOfWork,
    render: Render,
    idempotency: Idempotency | None,
    existing_external: str,
) -> Outcome:
    order = Order.place(cmd)  # in memory: its response is known before anything is written
    outcome = Outcome(201, render(order))
    async with uow:
        if idempotency is not None:
            # one statement reserves the key and stores the response; a concurrent twin
            # waits on the key's unique index and then finds this one
            earlier = await uow.idempotency.claim(
                idempotency.scope, idempotency.key, idempotency.request_hash, outcome
            )
            if earlier is not None:
                if earlier.request_hash != idempotency.request_hash:
                    raise IdempotencyConflict(
                        "Idempotency-Key was used with a different request body"
                    )
                return Outcome(earlier.status_code or 201, earlier.body, replayed=True)
        if cmd.external_id is not None:
            existing = await uow.orders.get_by_external(cmd.channel, cmd.external_id)
            if existing is not None:
                if existing_external != "return":
                    raise DuplicateExternalOrder(existing.id)
                return Outcome(200, render(existing))
        await uow.orders.add(order)
        await _emit_all(order, uow)
        await uow.commit()
    return outcome


async def _emit_all(order: Order, uow: OrderUnitOfWork) -> None:
    for event in order.events:
        envelope = uow.emit(
            event, time=order.created_at if event.event_type == "order-placed" else None
        )
        await uow.timeline.add(envelope)
    order.events.clear()


async def get_order(order_id: str, uow: OrderUnitOfWork) -> Order:
    async with uow:
        order = await uow.orders.get(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    return order


async def list_orders(
    flt: OrderFilter, limit: int, cursor: str | None, uow: OrderUnitOfWork
) -> tuple[list[Order], str | None]:
    async with uow:
        return await uow.orders.list(flt, limit, cursor)


async def timeline(order_id: str, uow: OrderUnitOfWork) -> list[TimelineEntry]:
    async with uow:
        if await uow.orders.get(order_id) is None:
            raise OrderNotFound(order_id)
        return await uow.timeline.of(order_id)


async def cancel_order(order_id: str, reason: str, uow: OrderUnitOfWork) -> Order:
    """Cancel while nothing has shipped (`CannotCancel` after); repeating it changes nothing."""
    async with uow:
        order = await uow.orders.get(order_id, for_update=True)
        if order is None:
            raise OrderNotFound(order_id)
        if order.cancel(reason):
            await uow.orders.save(order)
            await _emit_all(order, uow)
            await uow.commit()
    return order


async def cancel_external(
    channel: str, external_id: str, reason: str, uow: OrderUnitOfWork
) -> Order | None:
    async with uow:
        order = await uow.orders.get_by_external(channel, external_id, for_update=True)
        if order is None:
            return None
    return await cancel_order(order.id, reason, uow)


async def contact(order_id: str, uow: OrderUnitOfWork) -> tuple[Contact, bool]:
    order = await get_order(order_id, uow)
    return order.customer, order.redacted


async def redact_customer(email: str, uow: OrderUnitOfWork) -> int:
    async with uow:
        count = await uow.orders.redact(email)
        await uow.commit()
    return count


async def first_delivery(source: str, delivery_id: str, topic: str, uow: OrderUnitOfWork) -> bool:
    """Record a webhook delivery id in its own transaction; False if it was seen before.

    Recorded only after the delivery's effect committed (see the webhook routes), so a
    delivery that failed half-way is processed again when the marketplace retries.
    """
    async with uow:
        fresh = await uow.webhooks.first_time(source, delivery_id, topic)
        await uow.commit()
    return fresh


async def delivery_seen(source: str, delivery_id: str, uow: OrderUnitOfWork) -> bool:
    async with uow:
        return await uow.webhooks.seen(source, delivery_id)


async def apply_supply_event(envelope: Envelope, data: OrderEvent, uow: OrderUnitOfWork) -> None:
    """Consumer handler for the supplier service's events (the runner owns the transaction)."""
    order = await uow.orders.get(data.order_id, for_update=True)
    if order is None:
        raise PermanentError(f"{envelope.type} for unknown order {data.order_id}")
    note = order.apply(data, envelope.time)
    await uow.orders.save(order)
    await uow.timeline.add(envelope, note)


async def purge_expired(uow: OrderUnitOfWork) -> int:
    async with uow:
        purged = await uow.idempotency.purge()
        await uow.commit()
    return purged


async def rotate_pii(uow: OrderUnitOfWork, batch: int = 500) -> int:
    """Re-encrypt every order's PII under the active key; returns how many orders changed."""
    total = 0
    while True:
        async with uow:
            done = await rotate_pii_batch(uow.session, uow.cipher, batch)
            await uow.commit()
        total += done
        if done < batch:
            return total
